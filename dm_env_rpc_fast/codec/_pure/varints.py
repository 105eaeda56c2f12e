"""Runs of varints, encoded and decoded whole (csrc/varint.h): numpy, and plain Python.

numpy methods make a few passes over the bytes, never one Python step per
element; the plain Python ones regroup the 7-bit groups of one varint with a
few operations on one int.  Which method a run takes is `routes`' choice.
"""

import numpy as np

from dm_env_rpc_fast.codec._pure import wire

MASK64 = wire.MASK64

# ---------------------------------------------------------------------------
# Whole-array varints.
#
# Large arrays: a varint's first 8 bytes, read as one little-endian uint64
# word, hold its low 56 bits 7 to a byte; three mask-and-shift steps move those
# 7-bit groups together (decode) or apart (encode).  Words are read from and
# written to byte offsets through uint64 views with a stride of one byte (or of
# the varint length, when all varints have the same length).  Bytes 8 and 9 of
# 9- and 10-byte varints are handled separately.
#
# Small arrays, where the cost is the number of numpy calls rather than the
# bytes they touch, take methods with fewer calls (`encode_few`,
# `decode_few`): one row of 7-bit groups per value, or one shift per byte.

_U64 = np.uint64
_LOW56 = _U64((1 << 56) - 1)
# Indexed by varint length - 1: the bits of the word that belong to the varint
# (7 per byte), counting at most 5 bytes for 32-bit results and 8 for 64-bit ones.
_KEEP32 = np.array([((1 << (8 * min(k + 1, 5))) - 1) & 0x7F7F7F7F7F7F7F7F for k in range(10)], _U64)
_KEEP64 = np.array([((1 << (8 * min(k + 1, 8))) - 1) & 0x7F7F7F7F7F7F7F7F for k in range(10)], _U64)
# Indexed by varint length (1..10): continuation bits of the first 8 bytes.
_CONTINUE = np.array([0x8080808080808080 & ((1 << (8 * min(n - 1, 8))) - 1) if n else 0
                      for n in range(11)], _U64)
_THRESHOLDS = [_U64(1 << (7 * k)) for k in range(1, 10)]
_WORD = np.dtype("<u8")
# 7 * k for byte k of a varint: where its group goes in the value.
_SHIFT7 = np.arange(10, dtype=_U64) * _U64(7)
_U64_0x80 = _U64(0x80)
for _table in (_KEEP32, _KEEP64, _CONTINUE, _SHIFT7):
  _table.flags.writeable = False  # shared by every thread: read only


def varint_len(value: int) -> int:
  return max(1, (int(value).bit_length() + 6) // 7)


def _byte_words(buffer: np.ndarray, count: int, stride: int) -> np.ndarray:
  """A uint64 view of `count` little-endian words of `buffer` at `stride` bytes apart."""
  return np.ndarray((count,), _WORD, buffer, 0, (stride,))


# Spreading: the high part of each lane moves up, one lane size at a time
# (56 bits -> two 28-bit halves 32 bits apart -> 14-bit quarters 16 apart ->
# 7-bit groups 8 apart).  Adding (multiple - 1) times the high part shifts it
# up without shifting the low part: h << k + (2**j - 1) h << k = h << (k + j).
_SPREAD = [(_U64(0x00FFFFFFF0000000), _U64(15)),
           (_U64(0x0FFFC0000FFFC000), _U64(3)),
           (_U64(0x3F803F803F803F80), None)]


def _spread(words: np.ndarray, scratch: np.ndarray) -> None:
  """In place: a value below 2**56 -> its 7-bit groups one to a byte."""
  for high, times in _SPREAD:
    np.bitwise_and(words, high, out=scratch)
    if times is not None:
      np.multiply(scratch, times, out=scratch)
    np.add(words, scratch, out=words)


_PAIRS = _U64(0x7F007F007F007F00)
_QUADS = _U64(0x3FFF00003FFF0000)
_HALVES = _U64(0x0FFFFFFF00000000)


def _gather(words: np.ndarray, scratch: np.ndarray) -> None:
  """In place: 7-bit groups one to a byte (high bits clear) -> the value they spell."""
  # Pairs: a + (b << 8) - (b << 7) = a + (b << 7), lane by lane without borrows.
  np.bitwise_and(words, _PAIRS, out=scratch)
  np.right_shift(scratch, _U64(1), out=scratch)
  np.subtract(words, scratch, out=words)
  for high, shift in ((_QUADS, _U64(2)), (_HALVES, _U64(4))):
    np.bitwise_and(words, high, out=scratch)
    np.bitwise_xor(words, scratch, out=words)
    np.right_shift(scratch, shift, out=scratch)
    np.bitwise_or(words, scratch, out=words)


def encode_words(values: np.ndarray, longest: int) -> np.ndarray:
  """Packed varint bytes of a 1-D uint64 array whose longest varint is `longest`
  (2 or more) bytes, as a fresh 1-D uint8 array: one word per value."""
  count = values.size
  uniform = varint_len(int(values.min())) == longest
  words = values & _LOW56
  scratch = np.empty_like(words)
  _spread(words, scratch)
  if uniform:
    total = count * longest
    words |= _CONTINUE[longest]
  else:
    small = np.ones(count, np.uint8)  # adding bools to uint8 is the cheap way
    for k in range(longest - 1):
      small += values >= _THRESHOLDS[k]
    lengths = small.astype(np.intp)
    starts = np.cumsum(lengths)  # the ends, for now
    total = int(starts[-1])
    starts -= lengths
    np.take(_CONTINUE, lengths, out=scratch)
    words |= scratch
  # Room for the stray writes described below.
  out = np.empty(total + 10, np.uint8)
  if longest >= 9:
    # Bytes 8 and 9 as one little-endian uint16: the 10th byte exists exactly
    # when bit 63 is set.  For a 9-byte varint the second byte spills into the
    # next varint, whose bytes, written later, overwrite it.
    if uniform or np.count_nonzero(small >= 9) * 2 > count:
      top = np.right_shift(values, _U64(63))
      top *= _U64(0x180)
      np.right_shift(values, _U64(56), out=scratch)
      scratch &= _U64(0x7F)
      top |= scratch
      if uniform:
        np.ndarray((count,), "<u2", out, 8, (longest,))[...] = top
      else:
        # Every varint writes its pair, shorter ones two zero bytes at their
        # offsets 8 and 9, inside varints that follow it: their own pairs
        # (written after, in index order) or words (written after all pairs)
        # cover those bytes again.
        starts += 8
        np.ndarray((total + 9,), "<u2", out, 0, (1,))[starts] = top
        starts -= 8
    else:
      long = np.flatnonzero(small >= 9)
      big = values[long]
      top = (big >> _U64(63)) * _U64(0x180)
      top |= (big >> _U64(56)) & _U64(0x7F)
      np.ndarray((total + 9,), "<u2", out, 0, (1,))[starts[long] + 8] = top
  # Each word also writes up to 7 bytes past its varint; the next varint's word,
  # written after it (numpy assigns in index order), overwrites them, and the
  # last one's spill lands in the spare bytes.
  if uniform:
    _byte_words(out, count, longest)[...] = words
  else:
    _byte_words(out, total + 1, 1)[starts] = words
  return out[:total]


def encode_few(values: np.ndarray, longest: int) -> np.ndarray:
  """encode_words for a few values: fewer numpy calls, more bytes touched."""
  # Row i holds values[i] >> 7k in column k: byte k of its varint is that
  # group's low 7 bits, with the continuation bit set when a later group is
  # nonzero, that is when the column's value is 0x80 or more.  So the byte is
  # (column | min(column, 0x80)) mod 256, and it exists when k is 0 or the
  # column is nonzero.
  columns = np.right_shift(values[:, None], _SHIFT7[:longest])
  out = np.empty(columns.shape, np.uint8)
  np.bitwise_or(columns, np.minimum(columns, _U64_0x80), out=out, casting="unsafe")
  present = columns != 0
  present[:, 0] = True
  return out[present]


# A packed run of varints, decoded into a fresh uint32 or uint64 array: `bits`
# is 32 (only the low 32 bits of each value are kept) or 64.  The run ends on a
# complete varint (the caller checked); a varint longer than 10 bytes raises.
# Bits beyond 64 in a 10th byte are dropped, as protobuf does.

def decode_few(raw: np.ndarray, last: np.ndarray, bits: int, what: str) -> np.ndarray:
  """A short run (`last`: raw < 0x80): a few numpy calls, a shift per byte."""
  ends = last.nonzero()[0]
  starts = np.empty_like(ends)
  starts[0] = 0
  np.add(ends[:-1], 1, out=starts[1:])
  lengths = np.subtract(ends, starts, out=ends)
  lengths += 1
  if lengths.max() > 10:
    raise ValueError(f"{what}: a varint in a packed run is longer than 10 bytes")
  # Byte j of a varint holds bits 7j.. of its value (a 10th byte's bits beyond
  # 64 fall off the shift); OR-ing each varint's shifted bytes gives the value.
  places = np.arange(raw.size, dtype=np.intp)
  places -= np.repeat(starts, lengths)
  places = _SHIFT7.take(places)
  values = np.bitwise_or.reduceat(np.left_shift(raw & 0x7F, places), starts)
  return values.astype(np.uint32) if bits == 32 else values


def decode_uniform(raw: np.ndarray, count: int, width: int, bits: int) -> np.ndarray:
  """`count` varints of `width` (at most 10) bytes each: one word per varint."""
  size = raw.size
  padded = np.zeros(size + 16, np.uint8)
  padded[:size] = raw
  keep = _KEEP32 if bits == 32 else _KEEP64
  words = _byte_words(padded, count, width) & keep[width - 1]
  _gather(words, np.empty_like(words))
  if bits == 32:
    return words.astype(np.uint32)
  if width >= 9:
    high = (padded[8:size:width] & 0x7F).astype(_U64)
    high <<= _U64(56)
    if width == 10:
      tenth = (padded[9:size:width] & 1).astype(_U64)
      tenth <<= _U64(63)
      high |= tenth
    words |= high
  return words


def decode_mixed(raw: np.ndarray, ends: np.ndarray, bits: int, what: str,
                 gather_by_take: bool) -> np.ndarray:
  """A long run (more than 16 bytes) of varints of several lengths: one word per varint.

  `ends` holds the index of each varint's last byte (a fresh array, reused
  here).  `gather_by_take`: read the words with take() (see routes).
  """
  size = raw.size
  starts = np.empty_like(ends)
  starts[0] = 0
  np.add(ends[:-1], 1, out=starts[1:])
  lengths = np.subtract(ends, starts, out=ends)  # one less than each varint's length
  longest = int(lengths.max()) + 1
  if longest > 10:
    raise ValueError(f"{what}: a varint in a packed run is longer than 10 bytes")
  # A 32-bit value needs 5 bytes of its varint: 4 in a uint32 word, then 4 bits
  # of the 5th.  A 64-bit one needs 10: 8 in a uint64 word, then 7 bits of the
  # 9th and 1 of the 10th.
  word, word_type, keep = (4, _WORD32, _KEEP32_U4) if bits == 32 else (8, _WORD, _KEEP64)
  # Words are read in place, except for the varints that start in the last
  # word - 1 bytes (a word there would run past the end): those come from a
  # padded copy of the tail, and their starts are moved back so that the
  # in-place read stays in bounds.
  tail = int(np.searchsorted(starts, size - word, "right"))
  base = size - 16
  padded_tail = np.zeros(24, np.uint8)
  padded_tail[:16] = raw[base:]
  tail_words = np.ndarray((16,), word_type, padded_tail, 0, (1,))[starts[tail:] - base]
  starts[tail:] = size - word
  native = word_type.newbyteorder("=")
  at_every_byte = np.ndarray((size - word + 1,), word_type, raw, 0, (1,))
  if gather_by_take:
    # take() first copies the overlapping words into a contiguous array
    # (`word` times the run's size): cheaper than indexing them in place while
    # that copy is small.
    words = at_every_byte.take(starts)
  else:
    words = at_every_byte[starts]
  words = words.astype(native, copy=False)  # (a copy on big-endian hosts only)
  words[tail:] = tail_words
  top = None
  if bits == 32 and longest >= 5 or bits == 64 and longest >= 9:
    # The bits beyond the word: the low 4 bits of byte 4 (32-bit), or the low 7
    # bits of byte 8 and bit 0 of byte 9 (64-bit, both into one top byte).
    # Varints too short to have those bytes read bytes that are not theirs
    # (clipped at the end of the run), and are masked off.
    starts += word
    top = raw.take(starts, mode="clip")
    if bits == 32:
      top *= lengths >= 4  # (its bits above the 4th fall off the 32-bit shift below)
    else:
      top &= 0x7F
      top *= lengths >= 8
      starts += 1
      tenth = raw.take(starts, mode="clip")
      tenth &= lengths == 9
      tenth <<= 7
      top |= tenth
  # `starts` is spent: its memory is the scratch array from here on.
  scratch = starts.view(native)[:words.size]
  np.take(keep, lengths, out=scratch)
  words &= scratch
  if bits == 32:
    _gather32(words, scratch)
    if top is not None:
      # (dtype: numpy 1.x would shift in top's uint8 and lose the bits)
      np.left_shift(top, np.uint32(28), out=scratch, dtype=np.uint32)
      words |= scratch
  else:
    _gather(words, scratch)
    if top is not None:
      np.left_shift(top, _U64(56), out=scratch, dtype=_U64)
      words |= scratch
  return words


_WORD32 = np.dtype("<u4")
# Indexed by varint length - 1: the bits of a uint32 word that belong to the
# varint (7 per byte, at most 4 bytes).
_KEEP32_U4 = np.array([((1 << (8 * min(k + 1, 4))) - 1) & 0x7F7F7F7F for k in range(10)],
                      np.uint32)
_KEEP32_U4.flags.writeable = False
_PAIRS32 = np.uint32(0x7F007F00)
_QUADS32 = np.uint32(0x3FFF0000)


def _gather32(words: np.ndarray, scratch: np.ndarray) -> None:
  """_gather for uint32 words (4 groups, 28 bits)."""
  np.bitwise_and(words, _PAIRS32, out=scratch)
  np.right_shift(scratch, np.uint32(1), out=scratch)
  np.subtract(words, scratch, out=words)
  np.bitwise_and(words, _QUADS32, out=scratch)
  np.bitwise_xor(words, scratch, out=words)
  np.right_shift(scratch, np.uint32(2), out=scratch)
  np.bitwise_or(words, scratch, out=words)


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
    return wire.ONE_BYTE[value]
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


# Indexed by byte count n (1..10): the continuation bits of n bytes, and the
# pattern of a single n-byte varint among them (every byte but the last).
_PY_CONT_MASK = [0] + [_lanes(0x80, 8) & ((1 << (8 * n)) - 1) for n in range(1, 11)]


def py_single_varint(chunk):
  """The value (mod 2**64) of `chunk` (1 to 10 bytes) if it is exactly one varint, else None."""
  n = len(chunk)
  word = int.from_bytes(chunk, "little")
  if word & _PY_CONT_MASK[n] != _PY_CONTINUE[n]:
    return None
  value = word & _PY_LOW7
  for low, high, shift in _PY_STEPS:
    value = (value & low) | ((value >> shift) & high)
  return value & MASK64
