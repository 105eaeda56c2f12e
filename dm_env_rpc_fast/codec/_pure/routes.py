"""Where the pure backend chooses protobuf's C runtime, numpy or plain Python.

Every size cutoff of the backend is in the table below, beside the measurement
that chose it; the functions after it are the only ones that read the table or
`PROTOBUF_C`.  The choices change speed only: every route gives the same bytes,
values and errors (a run protobuf refuses is decoded again by numpy, which says
why in our words).

Protobuf's parser and serialiser are used when they are compiled (upb or cpp,
as on every platform with a protobuf wheel): numpy's varint regrouping costs a
dozen whole-array passes and their fixed per-call cost (~7 us), which a C loop
over a few hundred values beats, and which is what dm-env-rpc's path costs too
at those sizes.
"""

from google.protobuf import message as protobuf_message
from google.protobuf.internal import api_implementation
import numpy as np

from dm_env_rpc_fast._proto import dm_env_rpc_pb2
from dm_env_rpc_fast.codec import _common
from dm_env_rpc_fast.codec._pure import varints
from dm_env_rpc_fast.codec._pure import wire

INT32, INT64, UINT32, UINT64, BOOL = (
    _common.INT32, _common.INT64, _common.UINT32, _common.UINT64, _common.BOOL)

PROTOBUF_C = api_implementation.Type() in ("upb", "cpp")

# ---------------------------------------------------------------------------
# The cutoffs.  Measured on 2 cores with protobuf 7 (upb); each is the size at
# which the next route starts to win.
#
# | cutoff                      | value                 | below or at it       | above it             |
# |-----------------------------|-----------------------|----------------------|----------------------|
# | PB_ENCODE_MAX_VALUES        | int32 320, uint32 192,| protobuf serialises  | numpy                |
# |                             | int64/uint64 224      | the Tensor           |                      |
# | PYTHON_ENCODE_MAX_ELEMENTS  | 8 elements            | plain Python         | numpy                |
# | BOOL_TRANSLATE_MAX          | 4096 bools            | bytes.translate      | numpy comparison     |
# | NUMPY_FEW_VALUES            | 2048 values           | numpy, row per value | numpy, word per value|
# | PB_TENSOR_MAX_BYTES         | 2048 bytes            | protobuf parses the  | our walk             |
# |                             |                       | whole Tensor         |                      |
# | PB_DECODE_MAX_BYTES         | 64 KiB                | protobuf parses the  | numpy                |
# |                             |                       | varint run           |                      |
# | FROMITER_BELOW              | 44 values             | np.fromiter (below)  | np.array (__array__) |
# | PYTHON_DECODE_MAX_BYTES     | 64 bytes              | plain Python         | numpy                |
# | NUMPY_FEW_BYTES             | 3072 bytes            | numpy, shift per byte| numpy, word per varint|
# | NUMPY_TAKE_MAX_BYTES        | 32-bit 2 MiB,         | take() the words     | index the words      |
# |                             | 64-bit 256 KiB        |                      |                      |
#
# - PB_ENCODE_MAX_VALUES: protobuf costs 35 ns a value after tolist (as
#   dm-env-rpc's path); numpy's fixed cost wins beyond, soonest where its
#   varints are shortest.  Values that are all one-byte varints skip both:
#   their payload is bytes(values).
# - PYTHON_ENCODE_MAX_ELEMENTS: a few numpy calls cost more than building at
#   most 80 payload bytes in Python (every length is then one byte).
# - BOOL_TRANSLATE_MAX: bytes.translate of the array's bytes versus numpy's
#   `!= 0`, which wins beyond it.
# - PB_TENSOR_MAX_BYTES: protobuf's parse of a small Tensor with a varint
#   payload, then one conversion, costs less than walking its fields in Python.
# - PB_DECODE_MAX_BYTES: protobuf parses a run at a few ns a byte, and its
#   repeated container turns into an array with one memcpy (`__array__`);
#   np.fromiter is cheaper below FROMITER_BELOW values.  Runs of one-byte
#   varints (bytes.isascii, a C scan) are one astype.
# - PYTHON_DECODE_MAX_BYTES: without protobuf's C runtime, a run this short
#   (or requested UIDs this short) is cheaper in Python than in numpy calls.
# - NUMPY_FEW_VALUES, NUMPY_FEW_BYTES: up to these sizes numpy's methods with
#   fewer calls (varints.encode_few, decode_few) are faster.
# - NUMPY_TAKE_MAX_BYTES: take() first copies the overlapping words into a
#   contiguous array (word size times the run); beyond these that copy costs
#   more than indexing in place.
PB_ENCODE_MAX_VALUES = {INT32: 320, UINT32: 192, INT64: 224, UINT64: 224}
PYTHON_ENCODE_MAX_ELEMENTS = 8
BOOL_TRANSLATE_MAX = 4096
NUMPY_FEW_VALUES = 2048
PB_TENSOR_MAX_BYTES = 2048
PB_DECODE_MAX_BYTES = 64 << 10
FROMITER_BELOW = 44
PYTHON_DECODE_MAX_BYTES = 64
NUMPY_FEW_BYTES = 3072
NUMPY_TAKE_MAX_BYTES = {32: 2 << 20, 64: 256 << 10}

# The routes a numeric Tensor's encoding can take (see `encode_route`).
PROTOBUF, PYTHON, NUMPY = "protobuf", "python", "numpy"

_DTYPES = _common.KIND_DTYPES
_WHAT = {kind: "Tensor." + name for kind, name in _common.KIND_NAMES.items()}
_Tensor = dm_env_rpc_pb2.Tensor
PB_FIELDS = {kind: _common.KIND_NAMES[kind] for kind in (INT32, INT64, UINT32, UINT64, BOOL)}
_KIND_OF_FIELD = {name: kind for kind, name in PB_FIELDS.items()}
# The first bytes of Tensors that may take protobuf_tensor_parts (varint payloads).
VARINT_PAYLOAD_TAGS = frozenset(kind << 3 | 2 for kind in PB_FIELDS)
_PB_ARRAYS = {
    INT32: dm_env_rpc_pb2.Tensor.Int32Array,
    INT64: dm_env_rpc_pb2.Tensor.Int64Array,
    UINT32: dm_env_rpc_pb2.Tensor.Uint32Array,
    UINT64: dm_env_rpc_pb2.Tensor.Uint64Array,
    BOOL: dm_env_rpc_pb2.Tensor.BoolArray,
}


# ---------------------------------------------------------------------------
# Encoding.

def encode_route(kind: int, size: int) -> str:
  """The route of a numeric Tensor of `size` elements of `kind`: PROTOBUF,
  PYTHON or NUMPY (`protobuf_tensor` may still hand a PROTOBUF one back)."""
  if 0 < size <= PB_ENCODE_MAX_VALUES.get(kind, 0) and PROTOBUF_C:
    return PROTOBUF
  if size <= PYTHON_ENCODE_MAX_ELEMENTS:
    return PYTHON
  return NUMPY


def protobuf_tensor(kind: int, values: list, shape):
  """(Tensor bytes, None) serialised by protobuf, or (None, payload bytes) when
  every value is a one-byte varint (0..127): then the payload is bytes(values)."""
  if 0 <= values[0] < 0x80:  # (a cheap guess before trying)
    try:
      data = bytes(values)  # (ValueError for a negative value or one above 255)
    except ValueError:
      data = None
    if data is not None and data.isascii():
      return None, data
  message = _Tensor()
  getattr(message, PB_FIELDS[kind]).array.extend(values)
  message.shape.extend(shape)
  return message.SerializeToString(), None


_BOOL_BYTES = bytes([0] + [1] * 255)


def varint_payload(kind: int, flat: np.ndarray):
  """Packed varint bytes, as a uint8 (or bool) array, for a 1-D array of a varint kind."""
  if kind == BOOL:
    if flat.size <= BOOL_TRANSLATE_MAX:
      # (bytes other than 0 and 1 can only come from a reinterpreting view)
      return np.frombuffer(flat.tobytes().translate(_BOOL_BYTES), np.uint8)
    return flat.view(np.uint8) != 0
  if kind == INT32:
    values = flat.astype(np.int64).view(np.uint64)
  elif kind == INT64:
    values = flat.view(np.uint64)
  else:
    values = flat.astype(np.uint64, copy=False)
  return encode_varints(values)


def encode_varints(values: np.ndarray) -> np.ndarray:
  """Packed varint bytes of a 1-D uint64 array, as a fresh 1-D uint8 array (numpy)."""
  if values.size == 0:
    return np.empty(0, np.uint8)
  high = int(values.max())
  if high < 0x80:
    return values.astype(np.uint8)
  longest = varints.varint_len(high)
  if values.size <= NUMPY_FEW_VALUES:
    return varints.encode_few(values, longest)
  return varints.encode_words(values, longest)


# ---------------------------------------------------------------------------
# Decoding.

def protobuf_tensor_parts(data):
  """(flat, shape) of a whole Tensor parsed by protobuf, or None when it takes our
  walk: too big, not a varint payload first, all one-byte (the walk is cheaper),
  no compiled protobuf, or protobuf refuses the bytes (the walk then says why)."""
  if not (0 < len(data) <= PB_TENSOR_MAX_BYTES and data[0] in VARINT_PAYLOAD_TAGS and PROTOBUF_C) or (
      type(data) is bytes and data.isascii()):
    return None
  try:
    message = _Tensor.FromString(data)
  except protobuf_message.DecodeError:
    return None
  kind = _KIND_OF_FIELD.get(message.WhichOneof("payload"))
  if kind is None:
    return None
  return _repeated_array(getattr(message, PB_FIELDS[kind]).array, kind), list(message.shape)


def varint_array(data, runs, packed: bool, kind: int) -> np.ndarray:
  """The elements of a varint payload (its non-empty byte `runs` of `data`, each
  ending on a complete varint; `packed`: none came unpacked) as a fresh array."""
  try:
    return _varint_array(data, runs, packed, kind)
  except ValueError:
    _raise_run_error(data, runs, kind)
    raise


def _raise_run_error(data, runs, kind: int) -> None:
  """Raises the error of the first bad varint in `runs`, by the wire reader (as
  the native backend gives it), for an error path whose route found one."""
  for start, end in runs:
    wire.check_varint_run(data, start, end, _WHAT[kind])


def _varint_array(data, runs, packed: bool, kind: int) -> np.ndarray:
  if len(runs) == 1:
    start, end = runs[0]
    if PROTOBUF_C and end - start <= PB_DECODE_MAX_BYTES:
      flat = _protobuf_varints(data[start:end], kind)
      if flat is not None:
        return flat
      # (protobuf refused the run: numpy's pass says why)
      return _numpy_varints(np.frombuffer(data, np.uint8, end - start, start), kind)
    if end - start <= PYTHON_DECODE_MAX_BYTES:
      return _python_varints(data, runs, kind)
  elif not packed:
    return _python_varints(data, runs, kind)
  return _joined_varint_array(data, runs, kind)


def joined_varint_array(data, runs, kind: int) -> np.ndarray:
  """varint_array of the runs joined (a view for a single run), with no Python route."""
  try:
    return _joined_varint_array(data, runs, kind)
  except ValueError:
    _raise_run_error(data, runs, kind)
    raise


def _joined_varint_array(data, runs, kind: int) -> np.ndarray:
  if len(runs) == 1:
    start, end = runs[0]
    raw = np.frombuffer(data, np.uint8, end - start, start)
  else:
    raw = np.frombuffer(b"".join([data[start:end] for start, end in runs]), np.uint8)
  if PROTOBUF_C and raw.size <= PB_DECODE_MAX_BYTES:
    values = _protobuf_varints(raw.tobytes(), kind)
    if values is not None:
      return values
  return _numpy_varints(raw, kind)


def read_uids(data, pos: int, end: int, out: list) -> None:
  """Appends the UIDs of a packed run of requested observations to `out`."""
  what = "EnvironmentRequest.step.requested_observations"
  if end - pos <= PYTHON_DECODE_MAX_BYTES:
    read = wire.read_varint
    while pos < end:
      uid, pos = read(data, pos, end, what)
      out.append(uid)
  else:
    raw = np.frombuffer(data, np.uint8, end - pos, pos)
    try:
      out.extend(decode_varints(raw, 64, what).tolist())
    except ValueError:
      wire.check_varint_run(data, pos, end, what)
      raise


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
  if size <= NUMPY_FEW_BYTES:
    return varints.decode_few(raw, last, bits, what)
  count = int(np.count_nonzero(last))
  width = size // count
  if width * count == size and last[width - 1::width].all():
    # Every varint is `width` bytes long: the words sit at a fixed stride.
    if width > 10:
      raise ValueError(f"{what}: a varint in a packed run is longer than 10 bytes")
    return varints.decode_uniform(raw, count, width, bits)
  ends = last.nonzero()[0]
  del last  # (large: let its memory go before the next arrays)
  return varints.decode_mixed(raw, ends, bits, what, size <= NUMPY_TAKE_MAX_BYTES[bits])


def _numpy_varints(raw: np.ndarray, kind: int) -> np.ndarray:
  """The numpy route: raises our error for a malformed run."""
  what = _WHAT[kind]
  if kind == BOOL:
    if raw.size and raw.max() < 0x80:
      return raw != 0
    return decode_varints(raw, 64, what) != 0
  if kind == INT32 or kind == UINT32:
    values = decode_varints(raw, 32, what)
    return values.view(np.int32) if kind == INT32 else values
  values = decode_varints(raw, 64, what)
  return values.view(np.int64) if kind == INT64 else values


def _protobuf_varints(chunk, kind: int):
  """The protobuf route for a run of complete varints (a byte string or memoryview),
  or None if protobuf refuses the run."""
  if type(chunk) is not bytes:
    chunk = bytes(chunk)
  if chunk.isascii():  # one-byte varints: the bytes are the values
    # (uint8 to bool casts any nonzero byte to True, as a bool varint reads)
    return np.frombuffer(chunk, np.uint8).astype(_DTYPES[kind])
  try:
    values = _PB_ARRAYS[kind].FromString(b"\n" + wire.varint_bytes(len(chunk)) + chunk).array
  except protobuf_message.DecodeError:
    return None
  return _repeated_array(values, kind)


def _repeated_array(values, kind: int) -> np.ndarray:
  """A fresh array of a protobuf repeated scalar container's values."""
  if len(values) < FROMITER_BELOW:
    return np.fromiter(values, _DTYPES[kind], len(values))
  return np.array(values, _DTYPES[kind])  # (one copy: the container has __array__)


def _python_varints(data, runs, kind) -> np.ndarray:
  """The plain Python route for a few varints (each run ends on a complete varint)."""
  values = []
  for pos, end in runs:
    values += varints.py_varints(data[pos:end], _WHAT[kind], pos)
  if kind == BOOL:
    return np.array([v != 0 for v in values], bool)
  if kind == INT32 or kind == UINT32:
    flat = np.array([v & 0xFFFFFFFF for v in values], np.uint32)
    return flat.view(np.int32) if kind == INT32 else flat
  flat = np.array(values, np.uint64)
  return flat.view(np.int64) if kind == INT64 else flat
