// libFuzzer target: arbitrary bytes as an EnvironmentRequest carrying a step.
#include <cstddef>
#include <cstdint>
#include <unordered_set>

#include "fuzz_common.h"
#include "step_codec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dmrf::StepParse p;
  try {
    dmrf::parse_step_envelope(data, size, /*response=*/false, p);
  } catch (const dmrf::DecodeError&) {
    return 0;
  }
  std::unordered_set<uint64_t> keys;
  for (const dmrf::StepEntry& e : p.entries) {
    FUZZ_CHECK(keys.insert(e.key).second);  // one entry per key
    for (const dmrf::Span& s : e.spans) FUZZ_CHECK(s.off <= size && s.len <= size - s.off);
    dmrf_fuzz::materialise(data, size, e.tensor);
  }
  FUZZ_CHECK(p.requested.size() <= size);
  return 0;
}
