#include "step_codec.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

namespace dmrf {
namespace {


size_t entry_len(const StepItem& item) {
  const size_t t = item.tensor_len();
  return 1 + varint_size(item.key) + 1 + varint_size(t) + t;
}

bool is_payload_field(uint32_t field, bool response) {
  return (field >= 1 && field <= 7) || field == 15 || (response && field == kErrorPayload);
}

// Paths for error messages.
struct Names {
  const char* envelope;
  const char* step;
  const char* requested;
  const char* entry;
};
constexpr Names kRequestNames = {"EnvironmentRequest", "EnvironmentRequest.step",
                                 "EnvironmentRequest.step.requested_observations",
                                 "EnvironmentRequest.step.actions"};
constexpr Names kResponseNames = {"EnvironmentResponse", "EnvironmentResponse.step",
                                  "EnvironmentResponse.step",
                                  "EnvironmentResponse.step.observations"};

class StepParser {
 public:
  StepParser(const uint8_t* base, size_t total, bool response, StepParse& out)
      : base_(base), total_(total), response_(response), out_(out),
        names_(response ? kResponseNames : kRequestNames) {}

  void parse_envelope() {
    Reader r(base_, total_, Span{0, total_}, names_.envelope);
    while (!r.done()) {
      const uint32_t tag = r.read_tag();
      const uint32_t field = tag >> 3;
      if ((tag & 7) == kLengthDelimited && is_payload_field(field, response_)) {
        const size_t at = r.offset();
        const Span s = r.read_length_delimited();
        const int depth = r.enter(kMaxDepth, at);
        if (static_cast<int>(field) != out_.payload) {  // oneof: another case clears
          if (out_.payload == kStepPayload) clear_step();
          out_.payload = static_cast<int>(field);
        }
        if (field == kStepPayload) {
          parse_step(s, depth);
        } else {
          out_.unchecked = true;
        }
      } else {
        r.skip_field(tag, kMaxDepth);
      }
    }
  }

 private:
  void clear_step() {
    for (const StepEntry& e : out_.entries) out_.unchecked |= e.tensor.has_object;
    out_.state = 0;
    out_.entries.clear();
    out_.requested.clear();
    index_.clear();
  }

  void parse_step(Span span, int depth) {
    Reader r(base_, total_, span, names_.step);
    const uint32_t map_field = response_ ? 2 : 1;
    while (!r.done()) {
      const uint32_t tag = r.read_tag();
      const uint32_t field = tag >> 3;
      const uint32_t wt = tag & 7;
      if (field == map_field && wt == kLengthDelimited) {
        const size_t at = r.offset();
        const Span s = r.read_length_delimited();
        parse_entry(s, r.enter(depth, at));
      } else if (response_ && field == 1 && wt == kVarint) {
        out_.state = static_cast<int32_t>(static_cast<uint32_t>(r.read_varint()));
      } else if (!response_ && field == 2 && wt == kLengthDelimited) {
        const Span s = r.read_length_delimited();
        Reader packed(base_, total_, s, names_.requested);
        while (!packed.done()) out_.requested.push_back(packed.read_varint());
      } else if (!response_ && field == 2 && wt == kVarint) {
        out_.requested.push_back(r.read_varint());
      } else {
        r.skip_field(tag, depth);
      }
    }
  }

  void parse_entry(Span span, int depth) {
    const size_t number = entries_seen_++;
    Reader r(base_, total_, span, names_.entry);
    StepEntry e;
    bool unknown = false;
    while (!r.done()) {
      const uint32_t tag = r.read_tag();
      if (tag == ((1u << 3) | kVarint)) {
        e.key = r.read_varint();  // repeated key: the last wins
      } else if (tag == ((2u << 3) | kLengthDelimited)) {
        const size_t at = r.offset();
        const Span s = r.read_length_delimited();
        const int inner = r.enter(depth, at);
        try {
          parse_tensor(base_, total_, s, inner, e.tensor);  // repeated value: merges
        } catch (const DecodeError& err) {
          throw DecodeError(std::string(names_.entry) + "[entry " + std::to_string(number) +
                            "].value: " + err.what());
        }
        e.spans.push_back(s);
      } else {
        r.skip_field(tag, depth);
        unknown = true;
      }
    }
    if (unknown) {  // upb keeps such an entry as unknown data, out of the map
      out_.unchecked |= e.tensor.has_object;
      return;
    }
    // The same key in a later entry replaces the earlier one.
    auto found = index_.find(e.key);
    if (found != index_.end()) {
      out_.unchecked |= out_.entries[found->second].tensor.has_object;
      out_.entries[found->second] = std::move(e);
    } else {
      index_.emplace(e.key, out_.entries.size());
      out_.entries.push_back(std::move(e));
    }
  }

  const uint8_t* base_;
  size_t total_;
  bool response_;
  StepParse& out_;
  Names names_;
  std::unordered_map<uint64_t, size_t> index_;
  size_t entries_seen_ = 0;
};

}  // namespace

void sort_items(std::vector<StepItem>& items) {
  // Descending: upb's deterministic mode sorts map keys, but its encoder
  // writes back to front, so the bytes come out in descending key order.
  std::stable_sort(items.begin(), items.end(),
                   [](const StepItem& a, const StepItem& b) { return a.key > b.key; });
  // Keep the last of each run of equal keys.
  size_t out = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i + 1 < items.size() && items[i + 1].key == items[i].key) continue;
    items[out++] = items[i];
  }
  items.resize(out);
}

size_t size_step(StepMessage& m) {
  size_t step = 0;
  if (m.response && m.state != 0) {
    step += 1 + varint_size(static_cast<uint64_t>(static_cast<int64_t>(m.state)));
  }
  for (StepItem& item : m.items) {
    if (!item.is_raw) item.sizes = tensor_size(item.tensor);
    const size_t e = entry_len(item);
    step += 1 + varint_size(e) + e;
  }
  m.requested_len = 0;
  for (uint64_t uid : m.requested) m.requested_len += varint_size(uid);
  if (!m.requested.empty()) step += 1 + varint_size(m.requested_len) + m.requested_len;
  m.step_len = step;
  m.total = 1 + varint_size(step) + step;
  if (m.total >= kMaxMessageBytes) {
    throw std::invalid_argument("Step message of " + std::to_string(m.total) +
                                " bytes exceeds protobuf's 2 GiB message limit");
  }
  return m.total;
}

void write_step(const StepMessage& m, uint8_t* out) {
  *out++ = (kStepPayload << 3) | kLengthDelimited;
  out = write_varint(out, m.step_len);
  if (m.response && m.state != 0) {
    *out++ = (1 << 3) | kVarint;
    out = write_varint(out, static_cast<uint64_t>(static_cast<int64_t>(m.state)));
  }
  const uint8_t entry_tag = static_cast<uint8_t>(((m.response ? 2 : 1) << 3) | kLengthDelimited);
  for (const StepItem& item : m.items) {
    *out++ = entry_tag;
    out = write_varint(out, entry_len(item));
    *out++ = (1 << 3) | kVarint;
    out = write_varint(out, item.key);
    *out++ = (2 << 3) | kLengthDelimited;
    out = write_varint(out, item.tensor_len());
    out = item.is_raw ? write_bytes(out, item.raw, item.raw_len)
                      : write_tensor(item.tensor, item.sizes, out);
  }
  if (!m.requested.empty()) {
    *out++ = (2 << 3) | kLengthDelimited;
    out = write_varint(out, m.requested_len);
    for (uint64_t uid : m.requested) out = write_varint(out, uid);
  }
}

size_t write_step_into(const StepMessage& m, uint8_t* out, size_t cap) {
  if (m.total <= cap) write_step(m, out);
  return m.total;
}

void parse_step_envelope(const uint8_t* base, size_t total, bool response, StepParse& out) {
  StepParser(base, total, response, out).parse_envelope();
}

}  // namespace dmrf
