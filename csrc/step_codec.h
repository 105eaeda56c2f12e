// EnvironmentRequest{step} and EnvironmentResponse{step | error} messages.
//
// Only the step payload is parsed here; the tensors inside are left as
// TensorParse records for the caller to materialise.  Any other payload is
// noted, not descended into: the caller hands such (rare) envelopes to
// protobuf, which validates them exactly.
//
// Map entries follow upb: a repeated key or value is fine (last key wins,
// values merge), but an entry holding any unknown field (including a known
// number with the wrong wire type) is not added to the map at all.
#ifndef DM_ENV_RPC_FAST_STEP_CODEC_H_
#define DM_ENV_RPC_FAST_STEP_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "tensor_codec.h"
#include "wire.h"

namespace dmrf {

constexpr int kStepPayload = 3;
constexpr int kErrorPayload = 16;  // EnvironmentResponse only

// ---------------------------------------------------------------------------
// Encoding.

struct StepItem {
  uint64_t key = 0;
  // Either a tensor to encode, or the bytes of an already encoded Tensor.
  TensorInput tensor;
  const uint8_t* raw = nullptr;
  size_t raw_len = 0;
  bool is_raw = false;
  TensorSizes sizes;  // filled by size_step
  size_t tensor_len() const { return is_raw ? raw_len : sizes.total; }
};

struct StepMessage {
  bool response = false;           // EnvironmentResponse (observations) vs Request (actions)
  int32_t state = 0;               // response only; omitted when 0
  std::vector<StepItem> items;     // any order, unique keys (see sort_items)
  std::vector<uint64_t> requested;  // request only, in the caller's order
  // Filled by size_step.
  size_t requested_len = 0;
  size_t step_len = 0;
  size_t total = 0;
};

// Sorts items as protobuf's deterministic serialisation orders map entries
// (descending key: see step_codec.cc); for a repeated key the last item wins,
// as with successive assignments to a protobuf map.
void sort_items(std::vector<StepItem>& items);
// Sizes every tensor and the message; returns the total.  Throws
// std::invalid_argument for a bad shape or a message of 2 GiB or more.
size_t size_step(StepMessage& m);
// Writes m (m.total bytes) into out.
void write_step(const StepMessage& m, uint8_t* out);
// The caller's-buffer form (encode_step_response_into): writes the sized m into
// out[0:m.total] if m.total <= cap, else writes nothing; returns m.total.
size_t write_step_into(const StepMessage& m, uint8_t* out, size_t cap);

// ---------------------------------------------------------------------------
// Decoding.

struct StepEntry {
  uint64_t key = 0;
  TensorParse tensor;
  std::vector<Span> spans;  // the value's occurrences, which merge in order
};

struct StepParse {
  int payload = 0;  // the envelope's payload case (0: none)
  // Parts left for protobuf to validate: a non-step payload appeared, or a
  // string/proto tensor was dropped (its UTF-8 is unchecked here).
  bool unchecked = false;
  int32_t state = 0;           // StepResponse.state
  std::vector<StepEntry> entries;  // one per key, in first-seen order
  std::vector<uint64_t> requested;  // StepRequest.requested_observations
};

// Parses an EnvironmentRequest (response = false) or EnvironmentResponse.
// Throws DecodeError for malformed bytes.
void parse_step_envelope(const uint8_t* base, size_t total, bool response, StepParse& out);

}  // namespace dmrf

#endif  // DM_ENV_RPC_FAST_STEP_CODEC_H_
