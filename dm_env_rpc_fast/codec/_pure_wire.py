"""Protobuf wire primitives for the pure backend: tags, lengths, skipping, whole-array varints.

Scalar reads (one tag, one length) are plain Python over a `bytes` object or a
byte memoryview.  Whole payloads of varints are encoded and decoded with numpy,
a few passes over the bytes, never one Python step per element.

The acceptance rules are those of protobuf's upb parser (see the codec spec):
tags and length prefixes of at most 5 bytes, other varints of at most 10,
field 0 and wire types 6/7 rejected, lengths below 2**31, groups skipped within
a nesting budget.
"""

import numpy as np

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = range(6)


def where(data, pos: int) -> str:
  return f"at offset {pos} (buffer of {len(data)} bytes)"


def read_varint(data, pos: int, end: int, what: str):
  """Reads a varint of at most 10 bytes; returns (value mod 2**64, next position)."""
  start = pos
  result = 0
  shift = 0
  while pos < end:
    b = data[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if b < 0x80:
      return result & MASK64, pos
    shift += 7
    if shift == 70:
      raise ValueError(f"{what}: varint {where(data, start)} is longer than 10 bytes")
  raise ValueError(f"{what}: varint {where(data, start)} runs past the end of its message")


def read_tag(data, pos: int, end: int, what: str, in_group: bool = False):
  """Reads a field tag (at most 5 bytes, below 2**32, valid field and wire type).

  Inside an unknown group protobuf (upb) skips fields numbered 0 instead of
  rejecting them: `in_group` allows them.
  """
  start = pos
  result = 0
  shift = 0
  while True:
    if pos >= end:
      raise ValueError(f"{what}: tag {where(data, start)} runs past the end of its message")
    b = data[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if b < 0x80:
      break
    shift += 7
    if shift == 35:
      raise ValueError(f"{what}: tag {where(data, start)} is longer than 5 bytes")
  if result > MASK32:
    raise ValueError(f"{what}: tag {where(data, start)} does not fit 32 bits")
  if result & 7 > 5 or (result < 8 and not in_group):
    check_tag(data, result, start, what)
  return result, pos


def check_tag(data, tag: int, pos: int, what: str) -> None:
  """Raises unless the tag's wire type is valid and (outside groups) its field is not 0."""
  if tag & 7 > 5:
    raise ValueError(f"{what}: invalid wire type {tag & 7} in tag {where(data, pos)}")
  if tag < 8:
    raise ValueError(f"{what}: field number 0 in tag {where(data, pos)}")


def read_length(data, pos: int, end: int, what: str):
  """Reads a length prefix (at most 5 bytes, below 2**31) and checks it fits `end`.

  Returns (start of the contents, end of the contents).
  """
  start = pos
  length = 0
  shift = 0
  while True:
    if pos >= end:
      raise ValueError(
          f"{what}: length prefix {where(data, start)} runs past the end of its message")
    b = data[pos]
    pos += 1
    length |= (b & 0x7F) << shift
    if b < 0x80:
      break
    shift += 7
    if shift == 35:
      raise ValueError(f"{what}: length prefix {where(data, start)} is longer than 5 bytes")
  if length >= 1 << 31:
    raise ValueError(f"{what}: length {length} {where(data, start)} is 2 GiB or more")
  if pos + length > end:
    raise ValueError(
        f"{what}: length {length} {where(data, start)} runs past the end of its "
        f"message (which ends at offset {end})")
  return pos, pos + length


def skip_field(data, pos: int, end: int, tag: int, depth: int, what: str) -> int:
  """Skips the value of a field whose tag was just read; returns the next position.

  `depth` is the nesting budget left at the enclosing message: a group costs 1.
  """
  wire_type = tag & 7
  if wire_type == VARINT:
    return read_varint(data, pos, end, what)[1]
  if wire_type == LEN:
    return read_length(data, pos, end, what)[1]
  if wire_type == FIXED32 or wire_type == FIXED64:
    size = 4 if wire_type == FIXED32 else 8
    if pos + size > end:
      raise ValueError(
          f"{what}: fixed{size * 8} value {where(data, pos)} runs past the end of its message")
    return pos + size
  if wire_type == START_GROUP:
    return _skip_group(data, pos, end, tag >> 3, depth - 1, what)
  # END_GROUP here has no START_GROUP to close.
  raise ValueError(f"{what}: end-group tag {where(data, pos)} without a matching start")


def _skip_group(data, pos: int, end: int, field: int, depth: int, what: str) -> int:
  start = pos
  if depth < 0:
    raise ValueError(f"{what}: group {where(data, start)} nests too deeply")
  while pos < end:
    tag_pos = pos
    tag, pos = read_tag(data, pos, end, what, True)
    if tag & 7 == END_GROUP:
      if tag >> 3 != field:
        raise ValueError(
            f"{what}: end-group tag for field {tag >> 3} {where(data, tag_pos)} closes "
            f"a group of field {field}")
      return pos
    pos = skip_field(data, pos, end, tag, depth, what)
  raise ValueError(f"{what}: group of field {field} {where(data, start)} is not terminated")


def skip_message(data, pos: int, end: int, depth: int, what: str, children=None) -> None:
  """Checks the wire structure of a message we do not decode (budget `depth` inside it).

  `children` maps field numbers of nested message fields to their own `children`
  maps, so their contents are checked (and charged to the budget) as protobuf does.
  """
  if depth < 0:
    raise ValueError(f"{what}: message {where(data, pos)} nests too deeply")
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      check_tag(data, tag, pos, what)
      pos += 1
    else:
      tag, pos = read_tag(data, pos, end, what)
    if children and tag & 7 == LEN and (tag >> 3) in children:
      sub, sub_end = read_length(data, pos, end, what)
      skip_message(data, sub, sub_end, depth - 1, what, children[tag >> 3])
      pos = sub_end
    else:
      pos = skip_field(data, pos, end, tag, depth, what)


# ---------------------------------------------------------------------------
# Scalar varint encoding (tags, lengths, keys, shapes).

def varint_bytes(value: int) -> bytes:
  """The varint encoding of a value already reduced to 0 <= value < 2**64."""
  if value < 0x80:
    return _SMALL[value]
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


_SMALL = [bytes((i,)) for i in range(0x80)]


# ---------------------------------------------------------------------------
# Whole-array varints.
#
# A varint's first 8 bytes, read as one little-endian uint64 word, hold its low
# 56 bits 7 to a byte; three mask-and-shift steps move those 7-bit groups
# together (decode) or apart (encode).  Words are read from and written to byte
# offsets through uint64 views with a stride of one byte (or of the varint
# length, when all varints have the same length).  Bytes 8 and 9 of the rare
# 9- and 10-byte varints are handled separately.

_U64 = np.uint64
_LOW7 = _U64(0x7F7F7F7F7F7F7F7F)
_GATHER = [(_U64(0x007F007F007F007F), _U64(0x3F803F803F803F80), _U64(1)),
           (_U64(0x00003FFF00003FFF), _U64(0x0FFFC0000FFFC000), _U64(2)),
           (_U64(0x000000000FFFFFFF), _U64(0x00FFFFFFF0000000), _U64(4))]
_SPREAD = [(m_low, m_high, shift) for m_low, m_high, shift in reversed(
    [(_U64(0x007F007F007F007F), _U64(0x7F007F007F007F00), _U64(1)),
     (_U64(0x00003FFF00003FFF), _U64(0x3FFF00003FFF0000), _U64(2)),
     (_U64(0x000000000FFFFFFF), _U64(0x0FFFFFFF00000000), _U64(4))])]
_LOW56 = _U64((1 << 56) - 1)
# Indexed by varint length - 1: the bits of the word that belong to the varint
# (7 per byte), counting at most 5 bytes for 32-bit results and 8 for 64-bit ones.
_KEEP32 = np.array([((1 << (8 * min(k + 1, 5))) - 1) & 0x7F7F7F7F7F7F7F7F for k in range(10)], _U64)
_KEEP64 = np.array([((1 << (8 * min(k + 1, 8))) - 1) & 0x7F7F7F7F7F7F7F7F for k in range(10)], _U64)
# Indexed by varint length - 1: continuation bits of the first 8 bytes.
_CONTINUE = np.array([0x8080808080808080 & ((1 << (8 * min(k, 8))) - 1) for k in range(10)], _U64)
_THRESHOLDS = [_U64(1 << (7 * k)) for k in range(1, 10)]
_WORD = np.dtype("<u8")


def _varint_len(value: int) -> int:
  return max(1, (int(value).bit_length() + 6) // 7)


def _byte_words(buffer: np.ndarray, count: int, stride: int) -> np.ndarray:
  """A uint64 view of `count` little-endian words of `buffer` at `stride` bytes apart."""
  return np.ndarray((count,), _WORD, buffer, 0, (stride,))


def _regroup(words: np.ndarray, steps, shift_op) -> None:
  # In place, with one scratch array: chains of temporaries cost more than the math.
  moved = np.empty_like(words)
  for m_low, m_high, shift in steps:
    shift_op(words, shift, out=moved)
    moved &= m_high
    words &= m_low
    words |= moved


def encode_varints(values: np.ndarray) -> np.ndarray:
  """Packed varint bytes of a 1-D uint64 array, as a fresh 1-D uint8 array."""
  count = values.size
  if count == 0:
    return np.empty(0, np.uint8)
  high = int(values.max())
  if high < 0x80:
    return values.astype(np.uint8)
  longest = _varint_len(high)
  uniform = _varint_len(int(values.min())) == longest
  if uniform:
    total = count * longest
  else:
    small = np.ones(count, np.uint8)  # adding bools to uint8 is the cheap way
    for k in range(longest - 1):
      small += values >= _THRESHOLDS[k]
    lengths = small.astype(np.intp)
    ends = np.cumsum(lengths)
    total = int(ends[-1])
  words = values & _LOW56
  _regroup(words, _SPREAD, np.left_shift)
  words |= _CONTINUE[longest - 1] if uniform else _CONTINUE.take(lengths - 1)
  out = np.empty(total + 8, np.uint8)
  if uniform:
    long = slice(None) if longest >= 9 else None
  else:
    starts = ends - lengths
    long = np.flatnonzero(small >= 9) if longest >= 9 else None
  if long is not None:
    # Bytes 8 and 9 as one little-endian uint16: the 10th byte exists exactly
    # when bit 63 is set.  For a 9-byte varint the second byte spills into the
    # next varint, whose word, written below, overwrites it.
    big = values[long]
    top = (big >> _U64(63)) * _U64(0x180)
    top |= (big >> _U64(56)) & _U64(0x7F)
    at = np.arange(8, total, longest) if uniform else starts[long] + 8
    np.ndarray((total + 7,), "<u2", out, 0, (1,))[at] = top
  # Each word also writes up to 7 bytes past its varint; the next varint's word,
  # written after it (numpy assigns in index order), overwrites them, and the
  # last one's spill lands in the 8 spare bytes.
  if uniform:
    _byte_words(out, count, longest)[...] = words
  else:
    _byte_words(out, total + 1, 1)[starts] = words
  return out[:total]


def decode_varints(raw: np.ndarray, bits: int, what: str) -> np.ndarray:
  """Decodes a packed run of varints (uint8 array) into a fresh uint32 or uint64 array.

  `bits` is 32 (only the low 32 bits of each value are kept) or 64.  The run must
  end on a complete varint and hold no varint longer than 10 bytes; bits beyond
  64 in a 10th byte are dropped, as protobuf does.
  """
  out_type = np.uint32 if bits == 32 else np.uint64
  size = raw.size
  if size == 0:
    return np.empty(0, out_type)
  if raw.max() < 0x80:
    return raw.astype(out_type)
  last = raw < 0x80
  if not last[-1]:
    raise ValueError(f"{what}: packed varints end in the middle of a varint")
  count = int(np.count_nonzero(last))
  padded = np.zeros(size + 16, np.uint8)
  padded[:size] = raw
  width = size // count
  keep = _KEEP32 if bits == 32 else _KEEP64
  if width * count == size and last[width - 1::width].all():
    # Every varint is `width` bytes long: the words sit at a fixed stride.
    if width > 10:
      raise ValueError(f"{what}: a varint in a packed run is longer than 10 bytes")
    lengths = None
    words = _byte_words(padded, count, width) & keep[width - 1]
  else:
    ends = np.flatnonzero(last)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts  # one less than each varint's length
    if int(lengths.max()) > 9:
      raise ValueError(f"{what}: a varint in a packed run is longer than 10 bytes")
    width = 10  # some varints may be long
    words = _byte_words(padded, size, 1).take(starts) & keep.take(lengths)
  _regroup(words, _GATHER, np.right_shift)
  if bits == 32:
    return words.astype(np.uint32)
  if width >= 9:
    if lengths is None:
      at = np.arange(8, size, width)
      long = slice(None)
      tenth = width == 10
    else:
      long = np.flatnonzero(lengths >= 8)
      if not long.size:
        return words
      at = starts[long] + 8
      tenth = (lengths[long] == 9).view(np.uint8)
    high = (padded[at] & 0x7F).astype(_U64) << _U64(56)
    high |= (padded[at + 1] & tenth & 1).astype(_U64) << _U64(63)
    words[long] |= high
  return words


# ---------------------------------------------------------------------------
# A few varints in plain Python (cheaper than numpy calls for a handful): the
# same regrouping as above, on one Python int of up to 10 bytes.

def _lanes(pattern: int, width: int) -> int:
  return sum(pattern << (width * k) for k in range(128 // width))


_PY_LOW7 = _lanes(0x7F, 8)
_PY_STEPS = [(_lanes(0x007F, 16), _lanes(0x3F80, 16), 1),
             (_lanes(0x00003FFF, 32), _lanes(0x0FFFC000, 32), 2),
             (_lanes(0x000000000FFFFFFF, 64), _lanes(0x00FFFFFFF0000000, 64), 4),
             ((1 << 56) - 1, ((1 << 56) - 1) << 56, 8)]
_PY_SPREAD = [(low, high << shift, shift) for low, high, shift in reversed(_PY_STEPS)]
_PY_CONTINUE = [0] + [_lanes(0x80, 8) & ((1 << (8 * (n - 1))) - 1) for n in range(1, 11)]
# Translates each byte to "." if it ends a varint, else "c".
_ENDS = bytes(0x2E if i < 0x80 else 0x63 for i in range(256))


def py_varint_bytes(value: int) -> bytes:
  """The varint of 0 <= value < 2**64, without a per-byte loop."""
  if value < 0x80:
    return _SMALL[value]
  size = (value.bit_length() + 6) // 7
  for low, high, shift in _PY_SPREAD:
    value = (value & low) | ((value << shift) & high)
  return (value | _PY_CONTINUE[size]).to_bytes(size, "little")


def py_varints(chunk, what: str, pos: int) -> list:
  """The values (mod 2**64) of a byte string of complete varints."""
  if max(chunk) < 0x80:
    return list(chunk)
  values = []
  start = 0
  for piece in bytes(chunk).translate(_ENDS).split(b".")[:-1]:
    end = start + len(piece) + 1
    if end - start > 10:
      raise ValueError(f"{what}: varint at offset {pos + start} is longer than 10 bytes")
    value = int.from_bytes(chunk[start:end], "little") & _PY_LOW7
    for low, high, shift in _PY_STEPS:
      value = (value & low) | ((value >> shift) & high)
    values.append(value & MASK64)
    start = end
  return values
