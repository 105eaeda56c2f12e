// Shared by the libFuzzer targets: materialise a parsed Tensor the way the
// bindings do (plan_shape, then fill_elements into a buffer of exactly the
// planned size) and check the invariants the bindings rely on.
#ifndef DM_ENV_RPC_FAST_FUZZ_COMMON_H_
#define DM_ENV_RPC_FAST_FUZZ_COMMON_H_

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tensor_codec.h"
#include "wire.h"

// A failed invariant is a finding: abort, which libFuzzer reports as a crash.
#define FUZZ_CHECK(cond)                                                         \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                              \
    }                                                                            \
  } while (0)

namespace dmrf_fuzz {

// Small enough that a broadcast never allocates much under the fuzzer.
constexpr uint64_t kFuzzMaxBroadcast = uint64_t{1} << 20;

// Decodes the numeric payload of t (parsed from data) as the bindings would.
inline void materialise(const uint8_t* data, size_t size, const dmrf::TensorParse& t) {
  if (t.has_object || t.kind == dmrf::kNone) return;  // protobuf's job in the bindings
  const size_t w = dmrf::element_size(t.kind);
  FUZZ_CHECK(w == 1 || w == 4 || w == 8);
  // Every element takes at least one byte of the message, and runs lie inside it.
  FUZZ_CHECK(t.count <= size);
  FUZZ_CHECK(t.run_bytes <= size);
  uint64_t run_sum = 0;
  for (const dmrf::Span& s : t.runs) {
    FUZZ_CHECK(s.off <= size && s.len <= size - s.off);
    run_sum += s.len;
  }
  FUZZ_CHECK(run_sum == t.run_bytes);
  dmrf::ShapePlan plan;
  try {
    plan = dmrf::plan_shape(t.count, t.shape, w, kFuzzMaxBroadcast);
  } catch (const dmrf::DecodeError&) {
    return;
  }
  if (plan.mode != dmrf::ShapePlan::kReshape) {
    FUZZ_CHECK(t.count == 1);
    uint8_t elem[8] = {};
    dmrf::fill_elements(data, t, elem, 1);
    if (plan.mode == dmrf::ShapePlan::kFill) {
      uint64_t n = w;
      for (int64_t d : plan.dims) {
        FUZZ_CHECK(d >= 1);
        n *= static_cast<uint64_t>(d);
        FUZZ_CHECK(n <= kFuzzMaxBroadcast);
      }
    }
    return;
  }
  // A reshape: the planned dims hold exactly the payload.
  uint64_t n = 1;
  for (int64_t d : plan.dims) {
    FUZZ_CHECK(d >= 0);
    n *= static_cast<uint64_t>(d);
  }
  FUZZ_CHECK(plan.dims.size() == t.shape.size());
  FUZZ_CHECK(n == t.count);
  std::vector<uint8_t> out(static_cast<size_t>(t.count) * w + 1, 0xA5);
  dmrf::fill_elements(data, t, out.data(), t.count);
  FUZZ_CHECK(out.back() == 0xA5);  // nothing written past the planned size
  if (t.kind == dmrf::kBool) {
    for (size_t i = 0; i < t.count; ++i) FUZZ_CHECK(out[i] <= 1);
  }
}

}  // namespace dmrf_fuzz

#endif  // DM_ENV_RPC_FAST_FUZZ_COMMON_H_
