// libFuzzer target: encoders against decoders.  The input picks a payload
// kind, a shape and element bytes (and, for step messages, keys and a state);
// the encoded message must parse back to exactly those elements and shape, and
// the caller's-buffer step writer must give the fresh writer's bytes.
//
// Layout: [mode] [kind] [ndim] ndim x 4-byte dims [key bytes...] elements...
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "fuzz_common.h"
#include "step_codec.h"

namespace {

struct Cursor {
  const uint8_t* p;
  size_t n;
  uint8_t byte() {
    if (!n) return 0;
    --n;
    return *p++;
  }
  uint32_t u32() {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(byte()) << (8 * i);
    return v;
  }
};

// The element as the decoder must give it back.
void expected_elements(const dmrf::TensorInput& in, std::vector<uint8_t>& out) {
  const size_t w = dmrf::element_size(in.kind);
  const auto* src = static_cast<const uint8_t*>(in.data);
  out.assign(src, src + in.count * w);
  if (in.kind == dmrf::kBool) {
    for (auto& b : out) b = b != 0;
  }
}

void check_tensor_matches(const uint8_t* msg, const dmrf::TensorParse& t,
                          const dmrf::TensorInput& in) {
  FUZZ_CHECK(!t.has_object);
  FUZZ_CHECK(t.kind == in.kind);
  FUZZ_CHECK(t.count == in.count);
  FUZZ_CHECK(t.shape.size() == in.ndim);
  for (size_t i = 0; i < in.ndim; ++i) FUZZ_CHECK(t.shape[i] == in.shape[i]);
  std::vector<uint8_t> want;
  expected_elements(in, want);
  std::vector<uint8_t> got(want.size() + 1, 0xA5);
  dmrf::fill_elements(msg, t, got.data(), t.count);
  FUZZ_CHECK(got.back() == 0xA5);
  FUZZ_CHECK(want.empty() || std::memcmp(got.data(), want.data(), want.size()) == 0);
}

void roundtrip_tensor(const dmrf::TensorInput& in) {
  dmrf::TensorSizes sizes;
  try {
    sizes = dmrf::tensor_size(in);
  } catch (const std::invalid_argument&) {
    return;
  }
  std::vector<uint8_t> msg(sizes.total);
  FUZZ_CHECK(dmrf::write_tensor(in, sizes, msg.data()) == msg.data() + msg.size());
  dmrf::TensorParse t;
  dmrf::parse_tensor(msg.data(), msg.size(), dmrf::Span{0, msg.size()}, dmrf::kMaxDepth, t);  // must not throw
  check_tensor_matches(msg.data(), t, in);
}

void roundtrip_step(const dmrf::TensorInput& in, Cursor& c, bool response) {
  dmrf::StepMessage m;
  m.response = response;
  m.state = response ? static_cast<int32_t>(c.u32()) : 0;
  const int items = 1 + c.byte() % 3;
  for (int i = 0; i < items; ++i) {
    dmrf::StepItem item;
    item.key = c.byte() % 4 == 0 ? ~uint64_t{0} - c.byte() : c.byte();
    item.tensor = in;
    m.items.push_back(item);
  }
  if (!response) {
    const int k = c.byte() % 4;
    for (int i = 0; i < k; ++i) m.requested.push_back(uint64_t{c.u32()} << (c.byte() % 33));
  }
  dmrf::sort_items(m.items);
  try {
    dmrf::size_step(m);
  } catch (const std::invalid_argument&) {
    return;
  }
  std::vector<uint8_t> msg(m.total);
  dmrf::write_step(m, msg.data());
  // The caller's-buffer writer (encode_step_response_into): the same bytes
  // when they fit, and not one byte touched (before or past) when they do not.
  const size_t slack = c.byte() % 3;
  const size_t cap = slack == 0 ? m.total - (m.total ? c.byte() % (m.total + 1) : 0)
                                : m.total + slack - 1;
  std::vector<uint8_t> into(cap + 16, 0xA5);
  FUZZ_CHECK(dmrf::write_step_into(m, into.data(), cap) == m.total);
  const size_t written = m.total <= cap ? m.total : 0;
  FUZZ_CHECK(written == 0 || std::memcmp(into.data(), msg.data(), written) == 0);
  for (size_t i = written; i < into.size(); ++i) FUZZ_CHECK(into[i] == 0xA5);
  dmrf::StepParse p;
  dmrf::parse_step_envelope(msg.data(), msg.size(), response, p);  // must not throw
  FUZZ_CHECK(p.payload == dmrf::kStepPayload);
  FUZZ_CHECK(!p.unchecked);
  FUZZ_CHECK(p.state == m.state);
  FUZZ_CHECK(p.requested == m.requested);
  FUZZ_CHECK(p.entries.size() == m.items.size());
  for (size_t i = 0; i < p.entries.size(); ++i) {
    FUZZ_CHECK(p.entries[i].key == m.items[i].key);
    check_tensor_matches(msg.data(), p.entries[i].tensor, in);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Cursor c{data, size};
  const int mode = c.byte() % 3;  // 0: tensor, 1: step request, 2: step response
  dmrf::TensorInput in;
  in.kind = 1 + c.byte() % 9;
  std::vector<int64_t> dims(c.byte() % 5);
  for (int64_t& d : dims) {
    // Mostly int32 dimensions; sometimes beyond, which the encoder must refuse.
    const uint32_t lo = c.u32();
    d = (lo & 0xf0000000u) == 0x70000000u ? int64_t{lo} << 4 : static_cast<int32_t>(lo);
  }
  in.shape = dims.data();
  in.ndim = dims.size();
  const uint8_t key_bytes = mode ? 16 : 0;
  Cursor keys{c.p, c.n < key_bytes ? c.n : key_bytes};
  c.p += keys.n;
  c.n -= keys.n;
  // Copied so the elements are at an arbitrary (owned) address.
  std::vector<uint8_t> elems(c.p, c.p + c.n);
  in.data = elems.data();
  in.count = elems.size() / dmrf::element_size(in.kind);
  if (mode == 0) {
    roundtrip_tensor(in);
  } else {
    roundtrip_step(in, keys, mode == 2);
  }
  return 0;
}
