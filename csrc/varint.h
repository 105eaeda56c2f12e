// Bulk varint kernels for packed repeated fields: count/validate, decode, encode.
//
// Word-at-a-time: one unaligned 8-byte load covers a varint of up to 8 bytes,
// and the 7-bit groups are gathered (or spread) with three mask-and-shift
// steps instead of a byte loop.  Every load stays inside the run.
#ifndef DM_ENV_RPC_FAST_VARINT_H_
#define DM_ENV_RPC_FAST_VARINT_H_

#include <cstddef>
#include <cstdint>

#include "copy.h"  // DMRF_HAVE_SSE2
#include "wire.h"

namespace dmrf {

constexpr uint64_t kHighBits = 0x8080808080808080ull;

// Software prefetch for the bulk loops.  They read their input in order but
// do several instructions of work per byte, and once it is not in cache (the
// 8 MB int32 case reads 15 MB of wire twice and writes 8 MB: more than the
// last-level cache holds for us on our 2-core VMs) such a reader waits on
// memory at every cache line, as the hardware prefetcher does not run far
// enough ahead of it.  A loop doing a multiply per 8 bytes reads 7 GB/s from
// cache, 3.5 GB/s from memory, and 6 GB/s from memory with this prefetch.
// (A prefetch never faults, but the address still stays inside [p, end).)
constexpr size_t kPrefetchAhead = 2048;
inline void prefetch_ahead(const uint8_t* p, const uint8_t* end) {
  if (static_cast<size_t>(end - p) > kPrefetchAhead) __builtin_prefetch(p + kPrefetchAhead);
}

// Gathers the low 7 bits of each byte of x into a 56-bit value.
inline uint64_t gather7(uint64_t x) {
  x &= 0x7f7f7f7f7f7f7f7full;
  x = ((x & 0x7f007f007f007f00ull) >> 1) | (x & 0x007f007f007f007full);
  x = ((x & 0x3fff00003fff0000ull) >> 2) | (x & 0x00003fff00003fffull);
  x = ((x & 0x0fffffff00000000ull) >> 4) | (x & 0x000000000fffffffull);
  return x;
}

// Inverse of gather7 for v < 2^56: 7 bits into each byte, high bits clear.
inline uint64_t spread7(uint64_t v) {
  v = ((v & 0x00fffffff0000000ull) << 4) | (v & 0x000000000fffffffull);
  v = ((v & 0x0fffc0000fffc000ull) << 2) | (v & 0x00003fff00003fffull);
  v = ((v & 0x3f803f803f803f80ull) << 1) | (v & 0x007f007f007f007full);
  return v;
}

// Decodes one varint at p (already validated: at most 10 bytes, ends before
// end).  Needs 16 readable bytes at p.  Apart from the one-byte case, which
// is predictable in practice, there are no data-dependent branches: random
// mixes of lengths (e.g. int32 with negatives, 5 and 10 bytes) would
// mispredict at every element.
inline const uint8_t* decode_varint_fast(const uint8_t* p, uint64_t* out) {
  const uint64_t w1 = load_u64(p);
  if (!(w1 & 0x80)) {
    *out = w1 & 0x7f;
    return p + 1;
  }
  const uint64_t w2 = load_u64(p + 8);
  const uint64_t s1 = ~w1 & kHighBits;
  const uint64_t s2 = ~w2 & kHighBits;
  // s ^ (s - 1): ones up to the first stop bit, i.e. this varint's bytes
  // (all ones when s is 0: no stop in the word).
  const uint64_t m1 = s1 ^ (s1 - 1);
  const uint64_t m2 = (s2 ^ (s2 - 1)) & (uint64_t{0} - (s1 == 0));  // bytes 8 and 9, if any
  const uint64_t hi = w2 & m2;
  // Byte 9 gives only bit 63: bits past 64 are dropped, as upb does.
  *out = gather7(w1 & m1) | ((hi & 0x7f) << 56) | (((hi >> 8) & 1) << 63);
  const unsigned len = ((64 - __builtin_clzll(m1)) >> 3) + ((64 - __builtin_clzll(m2 | 1)) >> 3);
  return p + len;
}

// The same, one byte at a time (for the last bytes of a run).
inline const uint8_t* decode_varint_slow(const uint8_t* p, const uint8_t* end, uint64_t* out) {
  uint64_t v = 0;
  for (int shift = 0; p < end && shift < 70; shift += 7) {
    const uint8_t b = *p++;
    if (shift < 64) v |= static_cast<uint64_t>(b & 0x7f) << shift;
    if (b < 0x80) break;
  }
  *out = v;
  return p;
}

// Bit i set: byte p[i] ends a varint (high bit clear), for 64 bytes at p.
inline uint64_t stop_mask64(const uint8_t* p) {
#ifdef DMRF_HAVE_SSE2
  uint64_t cont = 0;
  for (int i = 0; i < 4; ++i) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i));
    cont |= static_cast<uint64_t>(static_cast<uint32_t>(_mm_movemask_epi8(x))) << (16 * i);
  }
  return ~cont;
#else
  uint64_t stops = 0;
  for (int i = 0; i < 64; ++i) stops |= static_cast<uint64_t>(p[i] < 0x80) << i;
  return stops;
#endif
}

// Byte masks by varint length (clamped to 16): the bytes in the first word,
// and in the second (bytes 8 and 9; more only if the run changed under us).
struct VarintMasks {
  uint64_t first[17];
  uint64_t second[17];
  constexpr VarintMasks() : first(), second() {
    for (int len = 0; len <= 16; ++len) {
      const int l1 = len < 8 ? len : 8;
      const int l2 = len - l1 < 2 ? len - l1 : 2;
      first[len] = l1 == 8 ? ~uint64_t{0} : (uint64_t{1} << (8 * l1)) - 1;
      second[len] = (uint64_t{1} << (8 * l2)) - 1;
    }
  }
};
inline constexpr VarintMasks kVarintMasks{};

// Decodes the varint of len bytes at p (16 readable bytes).  Narrow (32-bit)
// kinds need only the first word: their bits all sit in bytes 0..4.
template <bool kWide>
inline uint64_t decode_varint_len(const uint8_t* p, unsigned len) {
  len = len < 16 ? len : 16;
  const uint64_t lo = gather7(load_u64(p) & kVarintMasks.first[len]);
  if (!kWide) return lo;
  const uint64_t w2 = load_u64(p + 8) & kVarintMasks.second[len];
  // Byte 9 gives only bit 63: bits past 64 are dropped, as upb does.
  return lo | ((w2 & 0x7f) << 56) | (((w2 >> 8) & 1) << 63);
}

// Decodes the varints of a validated run, at most cap of them, passing each
// to sink(value); returns how many.  (The cap matters only if the bytes change
// underfoot, e.g. a bytearray written by another thread while the GIL is out.)
//
// The main loop finds the ends of all varints in a 64-byte window at once
// and walks them with ctz: the only serial dependency is clearing a mask bit,
// where a one-varint-at-a-time decoder waits on each length.
template <bool kWide, class Sink>
inline size_t decode_varints(const uint8_t* p, const uint8_t* end, size_t cap, Sink sink) {
  size_t n = 0;
  while (cap - n >= 64 && end - p >= 80) {
    prefetch_ahead(p, end);  // p moves on at most 64 bytes a step: no line is missed
    uint64_t stops = stop_mask64(p);
    if (stops == ~uint64_t{0}) {  // 64 one-byte varints (small values, bools)
      for (int i = 0; i < 64; ++i) sink(uint64_t{p[i]});
      p += 64;
      n += 64;
      continue;
    }
    unsigned start = 0;
    while (stops) {
      const unsigned e = static_cast<unsigned>(__builtin_ctzll(stops));
      stops &= stops - 1;
      sink(decode_varint_len<kWide>(p + start, e - start + 1));
      start = e + 1;
      ++n;
    }
    if (start == 0) break;  // no varint ends here: not a validated run
    p += start;
  }
  uint64_t v;
  for (; n < cap && end - p >= 16; ++n) {
    p = decode_varint_fast(p, &v);
    sink(v);
  }
  for (; n < cap && p < end; ++n) {
    p = decode_varint_slow(p, end, &v);
    sink(v);
  }
  return n;
}

// Continuation bits of the first 8 bytes, and of byte 8, for a varint of n bytes.
constexpr uint64_t kContinueLow[11] = {
    0, 0, 0x80, 0x8080, 0x808080, 0x80808080, 0x8080808080, 0x808080808080,
    0x80808080808080, kHighBits, kHighBits};

// Writes v as a varint; needs 10 writable bytes at out (it stores 8 + 2 at
// once).  Branch-free past the one-byte case, for the same reason as decoding.
inline uint8_t* encode_varint_fast(uint8_t* out, uint64_t v) {
  if (v < 0x80) {
    *out = static_cast<uint8_t>(v);
    return out + 1;
  }
  const size_t n = varint_size(v);
  const uint64_t lo = spread7(v & ((uint64_t{1} << 56) - 1)) | kContinueLow[n];
  const uint64_t top = v >> 56;  // bits 56..63: byte 8 (7 bits) and byte 9 (1 bit)
  const uint16_t hi = static_cast<uint16_t>((top & 0x7f) | (n == 10 ? 0x80 : 0) | ((top >> 7) << 8));
  std::memcpy(out, &lo, 8);
  std::memcpy(out + 8, &hi, 2);
  return out + n;
}

}  // namespace dmrf

#endif  // DM_ENV_RPC_FAST_VARINT_H_
