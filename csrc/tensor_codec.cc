#include "tensor_codec.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "copy.h"
#include "varint.h"

namespace dmrf {
namespace {

constexpr uint32_t kShapeField = 15;

// Elements in a packed varint run; throws if one is longer than 10 bytes or
// the run ends inside one.  `path` names the field for errors.
uint64_t count_varints(const uint8_t* base, size_t total, Span run, const char* path);

const char* const kPaths[] = {"Tensor", "Tensor.floats", "Tensor.doubles", "Tensor.int8s",
                              "Tensor.int32s", "Tensor.int64s", "Tensor.uint8s",
                              "Tensor.uint32s", "Tensor.uint64s", "Tensor.bools",
                              "Tensor.strings", "Tensor.protos"};

bool is_varint_kind(int kind) {
  return kind == kInt32 || kind == kInt64 || kind == kUint32 || kind == kUint64 || kind == kBool;
}

// The wire value of an element: int32 is sign-extended to 64 bits.
template <class T>
uint64_t wire_value(T x) {
  if constexpr (std::is_signed_v<T>) {
    return static_cast<uint64_t>(static_cast<int64_t>(x));
  } else {
    return static_cast<uint64_t>(x);
  }
}

template <class T>
T load_elem(const uint8_t* p) {
  T x;
  std::memcpy(&x, p, sizeof(T));
  return x;
}

[[noreturn]] void throw_changed() {
  throw std::runtime_error("the array changed while it was being encoded");
}

// The element loops issue their prefetches (see prefetch_ahead) a block of
// input at a time, so that the inner loop stays as tight as a plain one.  The
// block sizes are measured: one cache line for the size pass, whose inner loop
// then unrolls whole; 1 KB for the write pass, whose speed on small values
// swung by half with code placement when its blocks were one line.
constexpr size_t kLineBytes = 64;
constexpr size_t kWriteBlockBytes = 1024;

// Whether every element is a one-byte varint (below 0x80): an OR over the
// array, which runs at memory speed where the size pass does not, stopping at
// the first block that holds a larger value (usually the first).
template <class T>
bool all_one_byte(const uint8_t* data, size_t count) {
  constexpr size_t kBlock = 256;
  uint64_t high = 0;
  for (size_t i = 0; i < count && high < 0x80; i += kBlock) {
    const size_t stop = count - i < kBlock ? count : i + kBlock;
    for (size_t j = i; j < stop; ++j) high |= wire_value(load_elem<T>(data + j * sizeof(T)));
  }
  return high < 0x80;
}

template <class T>
size_t varints_size(const uint8_t* data, size_t count) {
  if (all_one_byte<T>(data, count)) return count;
  constexpr size_t kBlock = kLineBytes / sizeof(T);
  const uint8_t* end = data + count * sizeof(T);
  size_t n = 0;
  size_t i = 0;
  for (; count - i >= kBlock; i += kBlock) {
    prefetch_ahead(data + i * sizeof(T), end);
    for (size_t j = i; j < i + kBlock; ++j) n += varint_size(wire_value(load_elem<T>(data + j * sizeof(T))));
  }
  for (; i < count; ++i) n += varint_size(wire_value(load_elem<T>(data + i * sizeof(T))));
  return n;
}

template <class T>
uint8_t* write_varints(const uint8_t* data, size_t count, uint8_t* out, uint8_t* end) {
  if (static_cast<size_t>(end - out) == count) {
    // Sized at one byte an element: every value is below 0x80, so the bytes
    // are the values, narrowed in one plain loop.  Only an array changed
    // meanwhile can hold a larger one, caught by `high`.
    uint64_t high = 0;
    for (size_t i = 0; i < count; ++i) {
      const uint64_t v = wire_value(load_elem<T>(data + i * sizeof(T)));
      high |= v;
      out[i] = static_cast<uint8_t>(v);
    }
    if (high >= 0x80) throw_changed();
    return end;
  }
  constexpr size_t kBlock = kWriteBlockBytes / sizeof(T);
  const uint8_t* data_end = data + count * sizeof(T);
  size_t i = 0;
  // A block at a time while there is room for all of it at 10 bytes an element.
  for (; count - i >= kBlock && static_cast<size_t>(end - out) >= 10 * kBlock; i += kBlock) {
    const uint8_t* block = data + i * sizeof(T);
    for (size_t line = 0; line < kWriteBlockBytes; line += kLineBytes) {
      prefetch_ahead(block + line, data_end);
    }
    for (size_t j = i; j < i + kBlock; ++j) {
      out = encode_varint_fast(out, wire_value(load_elem<T>(data + j * sizeof(T))));
    }
  }
  for (; i < count && end - out >= 10; ++i) {
    out = encode_varint_fast(out, wire_value(load_elem<T>(data + i * sizeof(T))));
  }
  for (; i < count; ++i) {
    const uint64_t v = wire_value(load_elem<T>(data + i * sizeof(T)));
    // Sized by the first pass; only an array changed meanwhile (by another
    // thread while the GIL was released) can get here without room.
    if (varint_size(v) > static_cast<size_t>(end - out)) throw_changed();
    out = write_varint(out, v);
  }
  if (out != end) throw_changed();
  return out;
}

// A bool array viewed from uint8 may hold 2..255: the wire wants 0 or 1.
void write_bools(const uint8_t* data, size_t count, uint8_t* out) {
  size_t i = 0;
#ifdef DMRF_HAVE_SSE2
  const __m128i zero = _mm_setzero_si128();
  const __m128i one = _mm_set1_epi8(1);
  for (; i + 16 <= count; i += 16) {
    const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(data + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_andnot_si128(_mm_cmpeq_epi8(x, zero), one));
  }
#endif
  for (; i < count; ++i) out[i] = data[i] != 0;
}

size_t body_size(const TensorInput& in) {
  const auto* data = static_cast<const uint8_t*>(in.data);
  switch (in.kind) {
    case kInt32: return varints_size<int32_t>(data, in.count);
    case kInt64: return varints_size<int64_t>(data, in.count);
    case kUint32: return varints_size<uint32_t>(data, in.count);
    case kUint64: return varints_size<uint64_t>(data, in.count);
    default: return in.count * element_size(in.kind);
  }
}

uint8_t* write_body(const TensorInput& in, size_t body, uint8_t* out) {
  const auto* data = static_cast<const uint8_t*>(in.data);
  uint8_t* end = out + body;
  switch (in.kind) {
    case kInt32: return write_varints<int32_t>(data, in.count, out, end);
    case kInt64: return write_varints<int64_t>(data, in.count, out, end);
    case kUint32: return write_varints<uint32_t>(data, in.count, out, end);
    case kUint64: return write_varints<uint64_t>(data, in.count, out, end);
    case kBool:
      write_bools(data, in.count, out);
      return end;
    default:
      bulk_copy(out, data, body);
      return end;
  }
}

void add_run(TensorParse& t, Span s, uint64_t count) {
  t.runs.push_back(s);
  t.count += count;
  t.run_bytes += s.len;
}

// The fields of FloatArray ... BoolArray: `array` = 1, anything else unknown.
void parse_array(const uint8_t* base, size_t total, Span span, int depth, TensorParse& t) {
  const int kind = t.kind;
  Reader r(base, total, span, kPaths[kind]);
  while (!r.done()) {
    const uint32_t tag = r.read_tag();
    const uint32_t wt = tag & 7;
    if ((tag >> 3) != 1) {
      r.skip_field(tag, depth);
      continue;
    }
    if (wt == kLengthDelimited) {
      const size_t at = r.offset();
      const Span s = r.read_length_delimited();
      switch (kind) {
        case kFloat:
        case kDouble: {
          const size_t w = element_size(kind);
          if (s.len % w) {
            r.fail(at, "packed run of " + std::to_string(s.len) + " bytes is not a multiple of " +
                           std::to_string(w));
          }
          if (s.len) add_run(t, s, s.len / w);
          break;
        }
        case kInt8:
        case kUint8:
          // `bytes array`: a singular field, the last occurrence wins.
          t.clear_payload();
          add_run(t, s, s.len);
          break;
        default:
          if (s.len) add_run(t, s, count_varints(base, total, s, kPaths[kind]));
      }
    } else if (wt == kFixed32 && kind == kFloat) {
      add_run(t, r.read_fixed(4), 1);
    } else if (wt == kFixed64 && kind == kDouble) {
      add_run(t, r.read_fixed(8), 1);
    } else if (wt == kVarint && is_varint_kind(kind)) {
      const size_t at = r.offset();
      r.read_varint();
      add_run(t, Span{at, r.offset() - at}, 1);
    } else {
      r.skip_field(tag, depth);  // a known field with the wrong wire type is unknown
    }
  }
}

// google.protobuf.Any: nothing to record, but groups in it spend depth.
void scan_any(const uint8_t* base, size_t total, Span span, int depth) {
  Reader r(base, total, span, "Tensor.protos.array");
  while (!r.done()) r.skip_field(r.read_tag(), depth);
}

// StringArray / ProtoArray: checked for structure and depth only; protobuf
// decodes them (and validates UTF-8) afterwards.
void scan_object_array(const uint8_t* base, size_t total, Span span, int depth, int kind) {
  Reader r(base, total, span, kPaths[kind]);
  while (!r.done()) {
    const uint32_t tag = r.read_tag();
    if (kind == kProto && tag == ((1u << 3) | kLengthDelimited)) {
      const size_t at = r.offset();
      const Span s = r.read_length_delimited();
      scan_any(base, total, s, r.enter(depth, at));
    } else {
      r.skip_field(tag, depth);
    }
  }
}

void parse_shape_run(const uint8_t* base, size_t total, Span span, TensorParse& t) {
  Reader r(base, total, span, "Tensor.shape");
  while (!r.done()) t.shape.push_back(static_cast<int32_t>(static_cast<uint32_t>(r.read_varint())));
}

std::string shape_text(const std::vector<int32_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

// Word for word _common.broadcast_error's message.
std::string broadcast_error(const std::vector<int32_t>& shape, uint64_t limit) {
  return "Tensor shape " + shape_text(shape) +
         " would broadcast a one-element payload to more than " + std::to_string(limit) +
         " bytes (the codec's MAX_BROADCAST_BYTES limit)";
}

// (Stores go through memcpy: `out` may be a caller's array at any alignment.)
template <class T, class Convert>
uint64_t fill_varints(const uint8_t* base, const TensorParse& t, void* out, uint64_t cap,
                      Convert convert) {
  auto* dst = static_cast<uint8_t*>(out);
  const uint64_t start = cap;
  for (const Span& s : t.runs) {
    cap -= decode_varints<(sizeof(T) > 4)>(base + s.off, base + s.off + s.len, cap,
                                           [&](uint64_t v) {
                                             const T x = convert(v);
                                             std::memcpy(dst, &x, sizeof(T));
                                             dst += sizeof(T);
                                           });
  }
  return start - cap;
}

uint64_t fill_bools(const uint8_t* base, const TensorParse& t, void* out, uint64_t cap) {
  auto* dst = static_cast<uint8_t*>(out);
  const uint64_t start = cap;
  for (const Span& s : t.runs) {
    const uint8_t* p = base + s.off;
    uint8_t any_high = 0;
    for (size_t i = 0; i < s.len; ++i) any_high |= p[i];
    if (!(any_high & 0x80)) {
      // Every varint is one byte: one element per byte.
      const size_t n = s.len < cap ? s.len : static_cast<size_t>(cap);
      for (size_t i = 0; i < n; ++i) dst[i] = p[i] != 0;
      dst += n;
      cap -= n;
    } else {
      cap -= decode_varints<true>(p, p + s.len, cap, [&](uint64_t v) { *dst++ = v != 0; });
    }
  }
  return start - cap;
}

}  // namespace

size_t element_size(int kind) {
  switch (kind) {
    case kFloat: case kInt32: case kUint32: return 4;
    case kDouble: case kInt64: case kUint64: return 8;
    case kInt8: case kUint8: case kBool: return 1;
    default: return 0;
  }
}

// ---------------------------------------------------------------------------
// Encoding.

TensorSizes tensor_size(const TensorInput& in) {
  TensorSizes s;
  for (size_t i = 0; i < in.ndim; ++i) {
    const int64_t d = in.shape[i];
    if (d < std::numeric_limits<int32_t>::min() || d > std::numeric_limits<int32_t>::max()) {
      throw std::invalid_argument("Tensor shape dimension " + std::to_string(d) +
                                  " does not fit int32");
    }
    s.shape += varint_size(static_cast<uint64_t>(d));
  }
  s.body = body_size(in);
  s.inner = in.count ? 1 + varint_size(s.body) + s.body : 0;
  s.total = 1 + varint_size(s.inner) + s.inner;
  if (in.ndim) s.total += 1 + varint_size(s.shape) + s.shape;
  if (s.total >= kMaxMessageBytes) {
    throw std::invalid_argument("Tensor of " + std::to_string(s.total) +
                                " bytes exceeds protobuf's 2 GiB message limit");
  }
  return s;
}

uint8_t* write_tensor(const TensorInput& in, const TensorSizes& sizes, uint8_t* out) {
  *out++ = static_cast<uint8_t>((in.kind << 3) | kLengthDelimited);
  out = write_varint(out, sizes.inner);
  if (in.count) {
    *out++ = (1 << 3) | kLengthDelimited;
    out = write_varint(out, sizes.body);
    out = write_body(in, sizes.body, out);
  }
  if (in.ndim) {
    *out++ = (kShapeField << 3) | kLengthDelimited;
    out = write_varint(out, sizes.shape);
    for (size_t i = 0; i < in.ndim; ++i) out = write_varint(out, static_cast<uint64_t>(in.shape[i]));
  }
  return out;
}

// ---------------------------------------------------------------------------
// Decoding.

namespace {
uint64_t count_varints(const uint8_t* base, size_t total, Span run, const char* path) {
  const uint8_t* p = base + run.off;
  const uint8_t* end = p + run.len;
  uint64_t count = 0;
  unsigned streak = 0;  // continuation bytes since the last stop byte
  bool too_long = false;
#ifdef DMRF_HAVE_SSE2
  // 16 bytes a step: stop bytes are counted in byte lanes (flushed before they
  // can wrap), and a varint over 10 bytes shows as a run of 10 continuation
  // bits in the 32-bit window of this block's and the previous block's masks.
  uint32_t prev = 0;
  // Prefetch only in long runs (512 KB and up): a short one has usually just
  // arrived and is still in cache, where the prefetches cost ~5% of this loop.
  const bool far = run.len >= (size_t{512} << 10);
  while (end - p >= 16) {
    const uint8_t* block_end = p + 16 * std::min<size_t>(255, static_cast<size_t>(end - p) / 16);
    __m128i lanes = _mm_setzero_si128();
    for (; p < block_end; p += 16) {
      if (far) prefetch_ahead(p, end);
      const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      lanes = _mm_sub_epi8(lanes, _mm_cmpgt_epi8(x, _mm_set1_epi8(-1)));  // +1 per stop byte
      const uint32_t cont = static_cast<uint32_t>(_mm_movemask_epi8(x));
      const uint32_t w = prev | (cont << 16);
      if (w) {
        const uint32_t r2 = w & (w >> 1);
        const uint32_t r4 = r2 & (r2 >> 2);
        const uint32_t r8 = r4 & (r4 >> 4);
        too_long |= (r8 & (r2 >> 8)) != 0;  // 10 ones in a row
      }
      prev = cont;
    }
    const __m128i sums = _mm_sad_epu8(lanes, _mm_setzero_si128());
    count += static_cast<uint64_t>(_mm_cvtsi128_si32(sums)) +
             static_cast<uint64_t>(_mm_cvtsi128_si32(_mm_srli_si128(sums, 8)));
  }
  // Continuation bytes at the end of the last block carry into the tail.
  const uint32_t stops = ~prev & 0xffff;
  streak = stops ? 15 - (31 - __builtin_clz(stops)) : 16;
  if (p == base + run.off) streak = 0;
#else
  for (; end - p >= 8; p += 8) {
    const uint64_t stops = ~load_u64(p) & kHighBits;
    if (!stops) {
      streak += 8;
      too_long |= streak > 9;
      continue;
    }
    // A varint has at most 9 continuation bytes; inside one word no run of
    // them can exceed 7, so only the streak into the first stop matters.
    too_long |= streak + (__builtin_ctzll(stops) >> 3) > 9;
    streak = __builtin_clzll(stops) >> 3;
    count += ((stops >> 7) * 0x0101010101010101ull) >> 56;
  }
#endif
  for (; p < end; ++p) {
    if (*p & 0x80) {
      too_long |= ++streak > 9;
    } else {
      streak = 0;
      ++count;
    }
  }
  if (too_long || streak) {
    // Rare: walk again byte by byte to say where.
    Reader r(base, total, run, path);
    while (!r.done()) r.read_varint();
  }
  return count;
}
}  // namespace

void parse_tensor(const uint8_t* base, size_t total, Span span, int depth, TensorParse& t) {
  Reader r(base, total, span, "Tensor");
  while (!r.done()) {
    const uint32_t tag = r.read_tag();
    const uint32_t field = tag >> 3;
    const uint32_t wt = tag & 7;
    if (field >= 1 && field <= 11 && wt == kLengthDelimited) {
      const size_t at = r.offset();
      const Span s = r.read_length_delimited();
      const int inner = r.enter(depth, at);
      const int kind = static_cast<int>(field);
      if (kind != t.kind) {  // oneof: another case clears; the same case merges
        t.clear_payload();
        t.kind = kind;
      }
      if (kind >= kString) {
        t.has_object = true;
        scan_object_array(base, total, s, inner, kind);
      } else {
        parse_array(base, total, s, inner, t);
      }
    } else if (field == kShapeField && wt == kLengthDelimited) {
      parse_shape_run(base, total, r.read_length_delimited(), t);
    } else if (field == kShapeField && wt == kVarint) {
      t.shape.push_back(static_cast<int32_t>(static_cast<uint32_t>(r.read_varint())));
    } else {
      r.skip_field(tag, depth);
    }
  }
}

ShapePlan plan_shape(uint64_t count, const std::vector<int32_t>& shape, size_t elem_size,
                     uint64_t max_broadcast_bytes) {
  ShapePlan plan;
  if (shape.empty()) {
    if (count != 1) {
      throw DecodeError("Scalar tensors must have exactly 1 element but had " +
                        std::to_string(count) + " elements.");
    }
    plan.mode = ShapePlan::kScalar;
    return plan;
  }
  if (count == 1) {
    // Broadcast: dimensions below 1 count as 1.  One element on the wire must
    // not make an unbounded allocation: the result is capped in bytes (the
    // product is tracked in bytes and never computed past the cap, so never overflows).
    plan.mode = ShapePlan::kFill;
    uint64_t bytes = elem_size ? elem_size : 1;
    bool over = bytes > max_broadcast_bytes;
    for (int32_t d : shape) {
      const uint64_t dim = d < 1 ? 1 : static_cast<uint64_t>(d);
      plan.dims.push_back(static_cast<int64_t>(dim));
      if (!over && bytes > max_broadcast_bytes / dim) over = true;
      if (!over) bytes *= dim;
    }
    if (over) {
      throw DecodeError(broadcast_error(shape, max_broadcast_bytes));
    }
    return plan;
  }
  plan.mode = ShapePlan::kReshape;
  int unknown = -1;
  bool bad = false;
  bool zero = false;
  bool saturated = false;  // the known dims' product exceeds count
  uint64_t known = 1;      // that product, while it does not
  for (size_t i = 0; i < shape.size(); ++i) {
    const int32_t d = shape[i];
    if (d < 0) {  // numpy (and so upstream) infers any one negative dimension
      bad |= unknown >= 0;
      unknown = static_cast<int>(i);
    } else if (d == 0) {
      zero = true;
    } else if (!saturated) {
      if (known > count / static_cast<uint64_t>(d)) {
        saturated = true;
      } else {
        known *= static_cast<uint64_t>(d);
      }
    }
  }
  if (bad) {
    throw DecodeError("Invalid tensor shape " + shape_text(shape) +
                      ": at most one dimension may be negative (inferred)");
  }
  if (zero) {
    known = 0;
    saturated = false;
  }
  bool fits;
  if (unknown >= 0) {
    // A saturated product exceeds count: it divides only count == 0.
    fits = known != 0 && (saturated ? count == 0 : count % known == 0);
  } else {
    fits = !saturated && known == count;
  }
  if (!fits) {
    throw DecodeError("Cannot reshape a payload of " + std::to_string(count) +
                      " elements into shape " + shape_text(shape));
  }
  for (int32_t d : shape) plan.dims.push_back(d);
  if (unknown >= 0) plan.dims[unknown] = saturated ? 0 : static_cast<int64_t>(count / known);
  return plan;
}

uint64_t fill_elements(const uint8_t* base, const TensorParse& t, void* out, uint64_t cap) {
  switch (t.kind) {
    case kInt32:
      return fill_varints<int32_t>(base, t, out, cap, [](uint64_t v) {
        return static_cast<int32_t>(static_cast<uint32_t>(v));
      });
    case kInt64:
      return fill_varints<int64_t>(base, t, out, cap,
                                   [](uint64_t v) { return static_cast<int64_t>(v); });
    case kUint32:
      return fill_varints<uint32_t>(base, t, out, cap,
                                    [](uint64_t v) { return static_cast<uint32_t>(v); });
    case kUint64:
      return fill_varints<uint64_t>(base, t, out, cap, [](uint64_t v) { return v; });
    case kBool:
      return fill_bools(base, t, out, cap);
    default: {
      // Fixed width: the runs' lengths were fixed by the parse (they live in
      // t, not in the buffer), so this copies exactly min(count, cap) elements.
      const size_t w = element_size(t.kind);
      if (!w) return 0;
      auto* dst = static_cast<uint8_t*>(out);
      const size_t room0 = static_cast<size_t>(cap) * w;
      size_t room = room0;
      for (const Span& s : t.runs) {
        const size_t n = s.len < room ? s.len : room;
        bulk_copy(dst, base + s.off, n);
        dst += n;
        room -= n;
      }
      return (room0 - room) / w;
    }
  }
}

}  // namespace dmrf
