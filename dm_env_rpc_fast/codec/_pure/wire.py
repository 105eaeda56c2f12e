"""The wire reader and writer of the pure backend (csrc/wire.h): tags, lengths, skipping.

One tag, one length or one varint at a time, in plain Python over a `bytes`
object or a byte memoryview.  Whole runs of varints are `varints`' job.

The acceptance rules are those of protobuf's upb parser (see the codec spec):
tags and length prefixes of at most 5 bytes, other varints of at most 10,
field 0 and wire types 6/7 rejected, lengths below 2**31, groups skipped within
a nesting budget.
"""

from dm_env_rpc_fast.codec import _common

MASK64 = (1 << 64) - 1
MASK32 = (1 << 32) - 1

VARINT, FIXED64, LEN, START_GROUP, END_GROUP, FIXED32 = range(6)


def where(data, pos: int) -> str:
  return _common.where(pos, len(data))


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
      raise ValueError(f"{what}: varint longer than 10 bytes {where(data, start)}")
  raise ValueError(f"{what}: truncated varint {where(data, start)}")


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
      raise ValueError(f"{what}: truncated tag {where(data, start)}")
    b = data[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    if b < 0x80:
      break
    shift += 7
    if shift == 35:
      raise ValueError(f"{what}: tag longer than 5 bytes {where(data, start)}")
  if result > MASK32:
    raise ValueError(f"{what}: tag does not fit 32 bits {where(data, start)}")
  if result & 7 > 5 or (result < 8 and not in_group):
    check_tag(data, result, start, what)
  return result, pos


def check_tag(data, tag: int, pos: int, what: str) -> None:
  """Raises unless the tag's wire type is valid and (outside groups) its field is not 0."""
  if tag & 7 > 5:
    raise ValueError(f"{what}: invalid wire type {tag & 7} {where(data, pos)}")
  if tag < 8:
    raise ValueError(f"{what}: field number 0 {where(data, pos)}")


def read_length(data, pos: int, end: int, what: str):
  """Reads a length prefix (at most 5 bytes, below 2**31) and checks it fits `end`.

  Returns (start of the contents, end of the contents).
  """
  # One- to three-byte lengths that fit (all but the rarest) are read inline.
  if pos < end:
    length = data[pos]
    if length < 0x80:
      start = pos + 1
    elif pos + 1 < end and data[pos + 1] < 0x80:
      length = (length & 0x7F) | data[pos + 1] << 7
      start = pos + 2
    elif pos + 2 < end and data[pos + 2] < 0x80:  # (up to 2 MiB)
      length = (length & 0x7F) | (data[pos + 1] & 0x7F) << 7 | data[pos + 2] << 14
      start = pos + 3
    else:
      start = end + 1
    if start + length <= end:
      return start, start + length
  return _read_long_length(data, pos, end, what)


def _read_long_length(data, pos: int, end: int, what: str):
  """read_length for lengths of four or five bytes, and every error."""
  start = pos
  length = 0
  shift = 0
  while True:
    if pos >= end:
      raise ValueError(f"{what}: truncated length prefix {where(data, start)}")
    b = data[pos]
    pos += 1
    length |= (b & 0x7F) << shift
    if b < 0x80:
      break
    shift += 7
    if shift == 35:
      raise ValueError(f"{what}: length prefix longer than 5 bytes {where(data, start)}")
  if length >= 1 << 31:
    raise ValueError(f"{what}: length {length} is 2 GiB or more {where(data, start)}")
  if pos + length > end:
    enclosing = "the buffer" if end == len(data) else f"its enclosing message (offset {end})"
    raise ValueError(
        f"{what}: length {length} runs past the end of {enclosing} {where(data, start)}")
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
      raise ValueError(f"{what}: truncated fixed-width value {where(data, pos)}")
    return pos + size
  if wire_type == START_GROUP:
    return _skip_group(data, pos, end, tag >> 3, depth - 1, what)
  # END_GROUP here has no START_GROUP to close.
  raise ValueError(f"{what}: end-group tag without a matching start-group {where(data, pos)}")


def _skip_group(data, pos: int, end: int, field: int, depth: int, what: str) -> int:
  start = pos
  if depth < 0:
    raise ValueError(f"{what}: {_common.NESTING_ERROR} {where(data, start)}")
  while pos < end:
    tag_pos = pos
    tag, pos = read_tag(data, pos, end, what, True)
    if tag & 7 == END_GROUP:
      if tag >> 3 != field:
        raise ValueError(
            f"{what}: end-group tag does not match its start-group {where(data, tag_pos)}")
      return pos
    pos = skip_field(data, pos, end, tag, depth, what)
  raise ValueError(f"{what}: unterminated group {field} {where(data, start)}")


def skip_message(data, pos: int, end: int, depth: int, what: str, children=None) -> None:
  """Checks the wire structure of a message we do not decode (budget `depth` inside it).

  `children` maps field numbers of nested message fields to (their path, their
  own `children`), so their contents are checked (and charged to the budget) as
  protobuf does.
  """
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      check_tag(data, tag, pos, what)
      pos += 1
    else:
      tag, pos = read_tag(data, pos, end, what)
    if children and tag & 7 == LEN and (tag >> 3) in children:
      at = pos
      sub, sub_end = read_length(data, pos, end, what)
      check_depth(data, at, depth - 1, what)
      path, grandchildren = children[tag >> 3]
      skip_message(data, sub, sub_end, depth - 1, path, grandchildren)
      pos = sub_end
    else:
      pos = skip_field(data, pos, end, tag, depth, what)


def check_depth(data, pos: int, depth: int, what: str) -> None:
  """Raises if entering a nested message (its length prefix at `pos`) leaves budget `depth` < 0."""
  if depth < 0:
    raise ValueError(f"{what}: {_common.NESTING_ERROR} {where(data, pos)}")


def check_varint_run(data, pos: int, end: int, what: str) -> None:
  """Reads a packed run of varints one by one: raises the first error in it, if any.

  For error paths only: the decoders check runs faster, and this gives their
  error the position and text the native backend gives (it reads runs this way).
  """
  while pos < end:
    pos = read_varint(data, pos, end, what)[1]


# ---------------------------------------------------------------------------
# Scalar varint encoding (tags, lengths, keys, shapes).

def varint_bytes(value: int) -> bytes:
  """The varint encoding of a value already reduced to 0 <= value < 2**64."""
  if value < 0x4000:
    return _ONE_OR_TWO_BYTES[value]
  out = bytearray()
  while value >= 0x80:
    out.append((value & 0x7F) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


ONE_BYTE = [bytes((i,)) for i in range(0x80)]
# Every one- and two-byte varint (lengths, shapes, keys of up to 16 KiB): a
# lookup costs a third of building one.
_ONE_OR_TWO_BYTES = ONE_BYTE + [bytes((i & 0x7F | 0x80, i >> 7)) for i in range(0x80, 0x4000)]


def as_bytes(buf):
  """`buf` itself if it is bytes, else a 1-D byte memoryview of any C-contiguous buffer."""
  if type(buf) is bytes:
    return buf
  try:
    view = memoryview(buf)
  except ValueError:  # e.g. a released memoryview
    raise TypeError("decode needs a readable C-contiguous buffer") from None
  except TypeError:  # (the text of the buffer protocol's own error, as the native backend gives)
    raise TypeError(
        f"a bytes-like object is required, not '{type(buf).__name__}'") from None
  if not view.c_contiguous:
    raise TypeError("decode needs a readable C-contiguous buffer")
  if view.format != "B" or view.ndim != 1:
    view = view.cast("B")
  return view
