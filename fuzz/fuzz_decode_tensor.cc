// libFuzzer target: arbitrary bytes as a Tensor message.
#include <cstddef>
#include <cstdint>

#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dmrf::TensorParse t;
  try {
    dmrf::parse_tensor(data, size, dmrf::Span{0, size}, dmrf::kMaxDepth, t);
  } catch (const dmrf::DecodeError&) {
    return 0;
  }
  dmrf_fuzz::materialise(data, size, t);
  return 0;
}
