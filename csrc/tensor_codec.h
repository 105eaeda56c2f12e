// dm_env_rpc Tensor messages <-> flat element buffers.
//
// Encoding: tensor_size() first (it runs the varint size pass once), then
// write_tensor() into a buffer of exactly that size.
// Decoding: parse_tensor() walks the wire bytes (possibly several spans that
// merge, as protobuf does) and records where the payload elements are;
// plan_shape() applies the shape rules; fill_elements() materialises them.
#ifndef DM_ENV_RPC_FAST_TENSOR_CODEC_H_
#define DM_ENV_RPC_FAST_TENSOR_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "wire.h"

namespace dmrf {

// Payload kinds: the Tensor payload field number, also the DataType value.
enum Kind : int {
  kNone = 0, kFloat = 1, kDouble = 2, kInt8 = 3, kInt32 = 4, kInt64 = 5, kUint8 = 6,
  kUint32 = 7, kUint64 = 8, kBool = 9, kString = 10, kProto = 11,
};

// Bytes per element of a numeric kind's array (0 for strings, protos, none).
size_t element_size(int kind);

// ---------------------------------------------------------------------------
// Encoding.

struct TensorInput {
  int kind = kNone;            // a numeric kind (1..9)
  const void* data = nullptr;  // count elements, C order, native byte order
  size_t count = 0;
  const int64_t* shape = nullptr;  // written as the shape field (ndim 0: omitted)
  size_t ndim = 0;
};

// What tensor_size() learnt, reused by write_tensor().
struct TensorSizes {
  size_t body = 0;   // the packed elements (or raw bytes)
  size_t inner = 0;  // the payload submessage
  size_t shape = 0;  // the packed shape varints
  size_t total = 0;  // the whole Tensor message
};

// Sizes the Tensor.  Throws std::invalid_argument if a dimension does not fit
// int32 or the message would reach protobuf's 2 GiB limit.
TensorSizes tensor_size(const TensorInput& in);
// Writes the Tensor into out (sizes.total bytes); returns the end.
uint8_t* write_tensor(const TensorInput& in, const TensorSizes& sizes, uint8_t* out);

// ---------------------------------------------------------------------------
// Decoding.

struct TensorParse {
  int kind = kNone;         // the payload case (the last payload field seen)
  bool has_object = false;  // strings/protos appeared anywhere: protobuf decodes it
  uint64_t count = 0;       // elements of the current payload
  std::vector<Span> runs;   // where they are: packed runs / single elements, in order
  uint64_t run_bytes = 0;   // sum of runs' lengths
  std::vector<int32_t> shape;

  void clear_payload() {
    count = 0;
    run_bytes = 0;
    runs.clear();
  }
};

// Merges one occurrence of a Tensor message (bytes `span` of the buffer at
// base, total bytes long) into `t`.  `depth` is the nesting budget left for
// the Tensor's own fields (kMaxDepth for a top-level message).
void parse_tensor(const uint8_t* base, size_t total, Span span, int depth, TensorParse& t);

struct ShapePlan {
  enum Mode { kScalar, kFill, kReshape } mode = kScalar;
  std::vector<int64_t> dims;  // kFill: the filled shape; kReshape: the concrete shape
};

// The default cap on the bytes a one-element payload may broadcast to (256 MiB;
// _common.MAX_BROADCAST_BYTES, which the Python layer passes down).
constexpr uint64_t kDefaultMaxBroadcastBytes = uint64_t{1} << 28;

// dm_env_rpc's shape rules for `count` payload elements of `elem_size` bytes
// (see _common.shape_payload).  Throws DecodeError for a count that does not
// fit the shape, or a broadcast to more than max_broadcast_bytes.
ShapePlan plan_shape(uint64_t count, const std::vector<int32_t>& shape, size_t elem_size,
                     uint64_t max_broadcast_bytes = kDefaultMaxBroadcastBytes);

// Writes the payload's elements into out (element_size(kind) bytes each, at
// any alignment): t.count of them, never more than cap.  Returns how many it
// wrote: t.count (if t.count <= cap) unless the bytes of `base` changed since
// parse_tensor counted them (shared memory written by another process), when
// it can be fewer; the caller then treats the result as undefined.  Reads stay
// inside t.runs and writes inside cap elements whatever the bytes say.
uint64_t fill_elements(const uint8_t* base, const TensorParse& t, void* out, uint64_t cap);

}  // namespace dmrf

#endif  // DM_ENV_RPC_FAST_TENSOR_CODEC_H_
