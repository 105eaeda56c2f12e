// Bulk copy that sidesteps the 4K-aliasing stall of a forward memcpy.
//
// When dst sits a little after src modulo 4096, every load of a forward copy
// matches the low 12 address bits of a store still in flight, and the CPU
// waits on a false dependency: glibc's memcpy runs ~10x slower there on some
// x86 hosts for 4 KB..400 KB copies.  Copying backwards turns the recent
// stores into higher addresses than the next loads, so they never alias.
#ifndef DM_ENV_RPC_FAST_COPY_H_
#define DM_ENV_RPC_FAST_COPY_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define DMRF_HAVE_SSE2 1
#endif

namespace dmrf {

// Below this the stall costs little and memcpy's small-size paths win.
constexpr size_t kAliasCopyMin = 2048;
// dst - src (mod 4096) in (0, kAliasWindow) is where forward copies stall.
constexpr size_t kAliasWindow = 128;

inline bool forward_copy_aliases(const void* dst, const void* src, size_t n) {
  const size_t delta =
      (reinterpret_cast<uintptr_t>(dst) - reinterpret_cast<uintptr_t>(src)) & 4095;
  return n >= kAliasCopyMin && delta != 0 && delta < kAliasWindow;
}

#ifdef DMRF_HAVE_SSE2
// Copies n >= 64 bytes from the end down.  The unaligned last 16 bytes go
// first; then 64-byte blocks with 16-byte-aligned stores (no split stores)
// from the aligned point at or just below n;
// the ragged head is one memcpy at the end, below every block already stored.
inline void copy_backwards(uint8_t* dst, const uint8_t* src, size_t n) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + n - 16),
                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + n - 16)));
  // Blocks end where dst + i is 16-aligned; [i, n) lies within the store above.
  size_t i = n - ((reinterpret_cast<uintptr_t>(dst) + n) & 15);
  while (i >= 64) {
    i -= 64;
    // All loads of a block before its stores: a store never feeds a later load.
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 48));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 32));
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + 16));
    const __m128i d = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm_store_si128(reinterpret_cast<__m128i*>(dst + i + 48), a);
    _mm_store_si128(reinterpret_cast<__m128i*>(dst + i + 32), b);
    _mm_store_si128(reinterpret_cast<__m128i*>(dst + i + 16), c);
    _mm_store_si128(reinterpret_cast<__m128i*>(dst + i), d);
  }
  if (i) std::memcpy(dst, src, i);
}
#endif

// Copies n bytes between non-overlapping buffers.
inline void bulk_copy(void* dst, const void* src, size_t n) {
  if (n == 0) return;
#ifdef DMRF_HAVE_SSE2
  if (forward_copy_aliases(dst, src, n)) {
    copy_backwards(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), n);
    return;
  }
#endif
  std::memcpy(dst, src, n);
}

}  // namespace dmrf

#endif  // DM_ENV_RPC_FAST_COPY_H_
