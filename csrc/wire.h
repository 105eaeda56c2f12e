// Protobuf wire format: a bounds-checked reader and a raw writer.
//
// The reader accepts exactly what protobuf's upb parser accepts (see the codec
// spec): tags and length prefixes of at most 5 bytes, other varints of at most
// 10, lengths below 2 GiB, unknown groups skipped within a depth budget.
// Malformed input throws DecodeError; nothing is ever read out of bounds.
//
// The buffer may change while it is read (shared memory another process
// writes): every byte is loaded once per pass, and what a later pass does is
// bounded by what the reader recorded (spans, counts), never by re-read bytes.
#ifndef DM_ENV_RPC_FAST_WIRE_H_
#define DM_ENV_RPC_FAST_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace dmrf {

// Malformed wire bytes, or a payload that does not fit its shape.  The message
// names the field path and the byte offset (from the start of the buffer).
class DecodeError : public std::runtime_error {
 public:
  explicit DecodeError(const std::string& what) : std::runtime_error(what) {}
};

enum WireType : uint32_t {
  kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5,
};

// upb's nesting budget for a top-level message: each nested message or group
// spends one level.  _common.MAX_DEPTH and _common.NESTING_ERROR are the pure
// backend's copies; the extension exports these (MAX_DEPTH, NESTING_ERROR) and
// a test holds the two equal.
constexpr int kMaxDepth = 100;
inline std::string nesting_error() {
  return "nesting deeper than " + std::to_string(kMaxDepth) + " levels";
}

// protobuf's limit on a message (and so on any length prefix): 2 GiB.
constexpr uint64_t kMaxMessageBytes = uint64_t{1} << 31;

// Byte range [off, off + len) of the top-level buffer.
struct Span {
  size_t off = 0;
  size_t len = 0;
};

// Unaligned little-endian load (the host is little-endian: the Python
// layer only picks the native backend there).
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

// Number of bytes of the varint encoding of v (1..10).
inline size_t varint_size(uint64_t v) {
  // Highest set bit h (of v|1): the varint needs h/7 + 1 bytes.
  int h = 63 - __builtin_clzll(v | 1);
  return static_cast<size_t>((h * 9 + 73) / 64);
}

// Writes v as a varint; returns the end.  The caller sized the buffer.
inline uint8_t* write_varint(uint8_t* out, uint64_t v) {
  while (v >= 0x80) {
    *out++ = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  *out++ = static_cast<uint8_t>(v);
  return out;
}

inline uint8_t* write_bytes(uint8_t* out, const void* data, size_t n) {
  if (n) std::memcpy(out, data, n);
  return out + n;
}

class Reader {
 public:
  // Reads [begin, end) of the buffer at base (size total), for offsets in errors.
  Reader(const uint8_t* base, size_t total, Span span, const char* path)
      : base_(base), p_(base + span.off), end_(base + span.off + span.len), total_(total),
        path_(path) {}

  bool done() const { return p_ >= end_; }
  size_t offset() const { return static_cast<size_t>(p_ - base_); }

  // The error texts here are the pure backend's too (codec/_pure/wire.py, and
  // _common.where for the position): change them together.
  [[noreturn]] void fail(size_t at, const std::string& what) const {
    throw DecodeError(std::string(path_) + ": " + what + " at offset " + std::to_string(at) +
                      " (" + std::to_string(total_) + "-byte buffer)");
  }

  // A tag: at most 5 bytes, fits uint32, field number >= 1, wire type not 6/7.
  uint32_t read_tag() {
    const size_t at = offset();
    const uint32_t tag = read_any_tag();
    if ((tag >> 3) == 0) fail(at, "field number 0");
    return tag;
  }

  // The same, but field number 0 passes: upb allows it inside unknown groups.
  uint32_t read_any_tag() {
    const size_t at = offset();
    uint32_t b = next_byte(at, "truncated tag");
    if (b < 0x80) return check_tag(at, b);
    uint64_t v = b & 0x7f;
    for (int i = 1; i < 5; ++i) {
      b = next_byte(at, "truncated tag");
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (b < 0x80) {
        if (v > 0xffffffffu) fail(at, "tag does not fit 32 bits");
        return check_tag(at, static_cast<uint32_t>(v));
      }
    }
    fail(at, "tag longer than 5 bytes");
  }

  // A varint of at most 10 bytes; bits beyond 64 are dropped, as upb does.
  uint64_t read_varint() {
    const size_t at = offset();
    if (p_ < end_) {
      const uint8_t first = *p_;  // one load: the byte may change under us (shared memory)
      if (first < 0x80) {
        ++p_;
        return first;
      }
    }
    uint64_t v = 0;
    for (int i = 0; i < 10; ++i) {
      uint32_t b = next_byte(at, "truncated varint");
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);  // i = 9: only bit 63 survives
      if (b < 0x80) return v;
    }
    fail(at, "varint longer than 10 bytes");
  }

  // A length prefix (at most 5 bytes, below 2^31) and the span it covers.
  Span read_length_delimited() {
    const size_t at = offset();
    uint64_t len = 0;
    int i = 0;
    for (;; ++i) {
      if (i == 5) fail(at, "length prefix longer than 5 bytes");
      uint32_t b = next_byte(at, "truncated length prefix");
      len |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (b < 0x80) break;
    }
    if (len >= kMaxMessageBytes) fail(at, "length " + std::to_string(len) + " is 2 GiB or more");
    if (len > static_cast<size_t>(end_ - p_)) {
      fail(at, "length " + std::to_string(len) + " runs past the end of " +
                   (end_ == base_ + total_ ? std::string("the buffer")
                                           : "its enclosing message (offset " +
                                                 std::to_string(end_ - base_) + ")"));
    }
    Span s{offset(), static_cast<size_t>(len)};
    p_ += len;
    return s;
  }

  // The span of one fixed-width value of n bytes (4 or 8).
  Span read_fixed(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) fail(offset(), "truncated fixed-width value");
    Span s{offset(), n};
    p_ += n;
    return s;
  }

  // Enters a nested message whose length prefix is at `at`, inside a message
  // with `depth` levels of budget left: returns the budget inside it.
  int enter(int depth, size_t at) const {
    if (depth < 1) fail(at, nesting_error());
    return depth - 1;
  }

  // Skips the value of an unknown field whose tag was just read.  `depth` is the
  // remaining nesting budget of the enclosing message: a group costs 1.
  void skip_field(uint32_t tag, int depth) {
    switch (tag & 7) {
      case kVarint: read_varint(); return;
      case kFixed64: read_fixed(8); return;
      case kLengthDelimited: read_length_delimited(); return;
      case kFixed32: read_fixed(4); return;
      case kStartGroup: skip_group(tag >> 3, depth); return;
      default: fail(offset(), "end-group tag without a matching start-group");
    }
  }

 private:
  uint32_t next_byte(size_t at, const char* what) {
    if (p_ >= end_) fail(at, what);
    return *p_++;
  }

  uint32_t check_tag(size_t at, uint32_t tag) const {
    if ((tag & 7) > 5) fail(at, "invalid wire type " + std::to_string(tag & 7));
    return tag;
  }

  void skip_group(uint32_t field, int depth) {
    const size_t at = offset();
    if (--depth < 0) fail(at, nesting_error());
    for (;;) {
      if (done()) fail(at, "unterminated group " + std::to_string(field));
      const size_t tag_at = offset();
      const uint32_t tag = read_any_tag();
      if ((tag & 7) == kEndGroup) {
        if ((tag >> 3) != field) fail(tag_at, "end-group tag does not match its start-group");
        return;
      }
      skip_field(tag, depth);
    }
  }

  const uint8_t* base_;
  const uint8_t* p_;
  const uint8_t* end_;
  size_t total_;
  const char* path_;
};

}  // namespace dmrf

#endif  // DM_ENV_RPC_FAST_WIRE_H_
