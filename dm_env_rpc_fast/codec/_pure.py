"""The pure-Python codec backend: numpy only, no native code.

Fixed-width payloads (float, double, int8, uint8) move as whole buffers
(`np.frombuffer` views, one copy at most); varint payloads are encoded and
decoded by vectorised numpy passes (see `_pure_wire`).  Messages are walked
field by field in Python, which costs per field, never per element, except for
the rare unpacked repeated encoding, where each element is its own field.

Behaviour, byte for byte and error for error, is the same as the native backend;
see the codec spec and `dm_env_rpc_fast.codec`.

The decoders assume that the buffer they are given does not change during the
call (its bytes may be read more than once).  Unlike the native backend they
are not hardened against memory another process writes concurrently: a
shared-memory transport copies the bytes out before decoding with this backend.
"""

import math
import struct
import sys
from typing import Dict, List, Mapping, Sequence, Tuple

from google.protobuf import message as protobuf_message
from google.protobuf.internal import api_implementation
import numpy as np

from dm_env_rpc_fast.codec import _common
from dm_env_rpc_fast.codec import _pure_wire as _wire
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

NAME = "pure"

FLOAT, DOUBLE, INT8, INT32 = _common.FLOAT, _common.DOUBLE, _common.INT8, _common.INT32
INT64, UINT8, UINT32, UINT64 = _common.INT64, _common.UINT8, _common.UINT32, _common.UINT64
BOOL, STRING, PROTO = _common.BOOL, _common.STRING, _common.PROTO

_LITTLE = sys.byteorder == "little"
_DTYPES = _common.KIND_DTYPES
_FLOAT_WIRE = {FLOAT: np.dtype("<f4"), DOUBLE: np.dtype("<f8")}
# Wire type of one element of each repeated payload when sent unpacked.
_UNPACKED_WIRE_TYPE = {FLOAT: 5, DOUBLE: 1, INT32: 0, INT64: 0, UINT32: 0, UINT64: 0, BOOL: 0}
_VARINT_KINDS = frozenset((INT32, INT64, UINT32, UINT64, BOOL))
_WHAT = {kind: "Tensor." + name for kind, name in _common.KIND_NAMES.items()}
_PAYLOAD_TAG = {kind: bytes((kind << 3 | 2,)) for kind in _common.KIND_NAMES}
# Nested messages inside string and proto payloads: ProtoArray.array is an Any.
_OBJECT_CHILDREN = {STRING: None, PROTO: {1: None}}
_INT32_MAX = (1 << 31) - 1
# Payloads up to this many bytes are handled by plain Python, cheaper than numpy calls.
_SMALL = 64



# Map entries are written in descending key order, like the native backend: that is
# what upb's deterministic serialisation produces (it sorts the keys, then encodes
# back to front), and byte-identity with protobuf is the contract.
_DESCENDING = True
_EnvironmentRequest = dm_env_rpc_pb2.EnvironmentRequest
_EnvironmentResponse = dm_env_rpc_pb2.EnvironmentResponse

# The kind of every numeric dtype in native byte order, for arrays that need no
# cast: `_common.prepare` would find the same kind (equal dtypes have equal types).
_ARRAY_KINDS = {dtype: kind for kind, dtype in _DTYPES.items() if kind < STRING}

# Short and mid-sized runs of varints go through protobuf's own parser and
# serialiser when they are compiled (upb or cpp): numpy's varint regrouping
# costs a dozen whole-array passes and their fixed per-call cost, which a C
# loop over a few hundred values beats, and which is what dm-env-rpc's path
# costs too at those sizes.  Measured crossovers (2 cores, protobuf 7 upb):
# - encode: protobuf serialises up to _PB_ENCODE_MAX_VALUES values of a kind
#   (35 ns a value after tolist, as dm-env-rpc's path); numpy's fixed cost
#   (~7 us) wins beyond, soonest where its varints are shortest.  Values that
#   are all one-byte varints skip both: their payload is bytes(values).
# - decode: protobuf parses runs up to _PB_DECODE_MAX_BYTES (a few ns a byte),
#   and its repeated container turns into an array with one memcpy
#   (`__array__`); np.fromiter is cheaper for fewer than _FROMITER_BELOW values.
#   Runs of one-byte varints (bytes.isascii, a C scan) are one astype.
# Malformed runs fall back to the numpy path, which raises our errors.
_PROTOBUF_C = api_implementation.Type() in ("upb", "cpp")
_PB_DECODE_MAX_BYTES = 64 << 10  # varint bytes in the run
_PB_ENCODE_MAX_VALUES = {INT32: 320, UINT32: 192, INT64: 224, UINT64: 224}
_FROMITER_BELOW = 44
_PB_ARRAYS = {
    INT32: dm_env_rpc_pb2.Tensor.Int32Array,
    INT64: dm_env_rpc_pb2.Tensor.Int64Array,
    UINT32: dm_env_rpc_pb2.Tensor.Uint32Array,
    UINT64: dm_env_rpc_pb2.Tensor.Uint64Array,
    BOOL: dm_env_rpc_pb2.Tensor.BoolArray,
}


# ---------------------------------------------------------------------------
# Encoding.

def _varint_payload(kind: int, flat: np.ndarray):
  """Packed varint bytes, as a uint8 (or bool) array, for a 1-D array of a varint kind."""
  if kind == BOOL:
    if flat.size <= _BOOL_TRANSLATE_MAX:
      # (bytes other than 0 and 1 can only come from a reinterpreting view)
      return np.frombuffer(flat.tobytes().translate(_BOOL_BYTES), np.uint8)
    return flat.view(np.uint8) != 0
  if kind == INT32:
    values = flat.astype(np.int64).view(np.uint64)
  elif kind == INT64:
    values = flat.view(np.uint64)
  else:
    values = flat.astype(np.uint64, copy=False)
  return _wire.encode_varints(values)


_BOOL_BYTES = bytes([0] + [1] * 255)
_BOOL_TRANSLATE_MAX = 4096  # (beyond it numpy's comparison is faster)


def _one_byte_varints(values: list):
  """bytes(values) when every value is a one-byte varint (0..127), else None."""
  if not 0 <= values[0] < 0x80:  # (a cheap guess before trying)
    return None
  try:
    data = bytes(values)  # (ValueError for a negative value or one above 255)
  except ValueError:
    return None
  return data if data.isascii() else None


def _protobuf_tensor(kind: int, values: list, shape) -> bytes:
  """The Tensor of a few values of an integer kind, serialised by protobuf (see _PROTOBUF_C)."""
  message = _Tensor()
  getattr(message, _PB_FIELDS[kind]).array.extend(values)
  message.shape.extend(shape)
  return message.SerializeToString()


_Tensor = dm_env_rpc_pb2.Tensor
_PB_FIELDS = {kind: _common.KIND_NAMES[kind] for kind in (INT32, INT64, UINT32, UINT64, BOOL)}


def _shape_bytes(shape) -> bytes:
  if max(shape) < 0x80:
    return bytes(shape)
  if len(shape) == 1 and shape[0] <= _INT32_MAX:
    return _wire.varint_bytes(shape[0])
  for dim in shape:
    if dim > _INT32_MAX:
      raise ValueError(f"Tensor shape {list(shape)}: dimension {dim} does not fit int32")
  return b"".join([_wire.varint_bytes(dim) for dim in shape])


def _tensor_parts(kind: int, array: np.ndarray, shape) -> Tuple[List, int]:
  """The wire bytes of a numeric Tensor as a list of buffers, and their total size."""
  flat = array.ravel()  # C-contiguous: copies only a non-contiguous array
  size = flat.size
  if 0 < size <= _PB_ENCODE_MAX_VALUES.get(kind, 0) and _PROTOBUF_C:
    values = flat.tolist()
    data = _one_byte_varints(values)
    if data is None:
      encoded = _protobuf_tensor(kind, values, shape)
      return [encoded], len(encoded)
  elif size <= 8:
    encoded = _small_tensor(kind, flat, shape)
    return [encoded], len(encoded)
  elif kind in _VARINT_KINDS:
    data = _varint_payload(kind, flat)
  elif kind <= DOUBLE and not _LITTLE:
    data = flat.astype(_FLOAT_WIRE[kind])
  else:
    data = flat
  size = len(data) if type(data) is bytes else data.nbytes
  varint = _wire.varint_bytes
  if size:
    length = varint(size)
    head = b"".join((_PAYLOAD_TAG[kind], varint(1 + len(length) + size), b"\n", length))
    parts = [head, data]
    total = len(head) + size
  else:
    # A present but empty payload message: proto3 leaves its empty field out.
    parts = [_PAYLOAD_TAG[kind] + b"\x00"]
    total = 2
  if shape:
    dims = _shape_bytes(shape)
    tail = b"z" + varint(len(dims)) + dims
    parts.append(tail)
    total += len(tail)
  return parts, total


def _small_tensor(kind: int, flat: np.ndarray, shape) -> bytes:
  """encode for at most 8 elements, in plain Python (numpy calls cost more here)."""
  if kind in _VARINT_KINDS:
    values = flat.tolist()
    if kind == BOOL:
      data = bytes([v != 0 for v in values])
    elif values and (min(values) < 0 or max(values) >= 0x80):
      # Masked to 64 bits, a negative int becomes its sign extension.
      varint = _wire.py_varint_bytes
      mask = _wire.MASK64
      data = b"".join([varint(v & mask) for v in values])
    else:
      data = bytes(values)
  else:
    data = flat.tobytes() if _LITTLE or kind > DOUBLE else flat.astype(_FLOAT_WIRE[kind]).tobytes()
  size = len(data)  # at most 80 bytes: every length below is one byte
  head = bytes((kind << 3 | 2, size + 2, 10, size)) if size else bytes((kind << 3 | 2, 0))
  if not shape:
    return head + data
  dims = _shape_bytes(shape)
  return b"".join((head, data, b"z", _wire.varint_bytes(len(dims)), dims))


def encode_tensor(value, dtype=None, try_compress: bool = False) -> bytes:
  """Encodes a value as the wire bytes of a `dm_env_rpc.v1.Tensor`.

  The bytes are identical to those of upstream's `pack_tensor(value, dtype,
  try_compress).SerializeToString()`, except that float32 signalling NaNs keep
  their exact bits.

  Args:
    value: a scalar, nested sequence or numpy array (strings and protobuf
      messages too).
    dtype: None to infer, or a numpy dtype / type / DataType value to cast to
      (unsafely, as upstream does).
    try_compress: send a single element when all elements are equal.

  Returns:
    A new bytes object, owned by the caller; `value` is not kept.

  Raises:
    TypeError: the dtype has no Tensor payload.
    ValueError: the value cannot be packed (jagged, uncastable, a shape
      dimension beyond int32).
  """
  if dtype is None:
    # Fast paths for the values `prepare` would pass through unchanged.
    if type(value) is np.ndarray:
      kind = _ARRAY_KINDS.get(value.dtype)
      if kind is not None and (not try_compress or value.size < 2):
        return b"".join(_tensor_parts(kind, value, value.shape)[0])
    else:
      encode = _SCALAR_ENCODERS.get(type(value))
      if encode is not None:
        encoded = encode(value)
        if encoded is not None:
          return encoded
  kind, array, shape = _common.prepare(value, dtype, try_compress)
  if kind >= STRING:
    return _common.encode_object_tensor(kind, array, shape)
  return b"".join(_tensor_parts(kind, array, shape)[0])


def _scalar_encoders() -> Dict[type, object]:
  """Encoders of the scalar types whose kind `prepare` gets from the type alone.

  Each takes a scalar and returns the Tensor's bytes (what `_small_tensor`
  makes of it), or None to leave it to the general path.
  """
  encoders = {}
  mask = _wire.MASK64

  def varints(kind):
    tag = kind << 3 | 2
    table = [bytes((tag, 3, 10, 1, v)) for v in range(0x80)]

    def encode(value):
      v = int(value)
      if 0 <= v < 0x80:
        return table[v]
      payload = _wire.py_varint_bytes(v & mask)  # negatives: their sign extension
      return bytes((tag, len(payload) + 2, 10, len(payload))) + payload
    return encode

  for kind in (INT32, INT64, UINT32, UINT64, BOOL):
    encoders[_DTYPES[kind].type] = varints(kind)
  for kind in (INT8, UINT8):
    table = [bytes((kind << 3 | 2, 3, 10, 1, v)) for v in range(0x100)]
    encoders[_DTYPES[kind].type] = lambda value, table=table: table[int(value) & 0xFF]
  if _LITTLE:
    for kind in (FLOAT, DOUBLE):
      size = _DTYPES[kind].itemsize
      head = bytes((kind << 3 | 2, size + 2, 10, size))
      encoders[_DTYPES[kind].type] = lambda value, head=head: head + value.tobytes()
    double_head = bytes((DOUBLE << 3 | 2, 10, 10, 8))
    pack_double = struct.Struct("<d").pack
    encoders[float] = lambda value: double_head + pack_double(value)
  # Python scalars, as np.asarray types them.
  encoders[bool] = encoders[np.bool_]
  if np.asarray(0).dtype == np.int64:
    encode_int64 = encoders[np.int64]
    encoders[int] = lambda value: (
        encode_int64(value) if -(1 << 63) <= value < 1 << 63 else None)
  return encoders


_SCALAR_ENCODERS = _scalar_encoders()


def _value_parts(value) -> Tuple[List, int]:
  if type(value) is np.ndarray:
    kind = _ARRAY_KINDS.get(value.dtype)
    if kind is not None:
      return _tensor_parts(kind, value, value.shape)
  else:
    encode = _SCALAR_ENCODERS.get(type(value))
    if encode is not None:
      encoded = encode(value)
      if encoded is not None:
        return [encoded], len(encoded)
  message = _common.tensor_message(value)
  if message is not None:
    encoded = message.SerializeToString()
    return [encoded], len(encoded)
  kind, array, shape = _common.prepare(value)
  if kind >= STRING:
    encoded = _common.encode_object_tensor(kind, array, shape)
    return [encoded], len(encoded)
  return _tensor_parts(kind, array, shape)


def _first(pair):
  return pair[0]


def _map_parts(field_tag: bytes, tensors: Mapping) -> Tuple[List, int]:
  """Map<uint64, Tensor> entries in the installed protobuf's deterministic key order."""
  keyed = sorted(((_common.check_uid(key), value) for key, value in tensors.items()),
                 key=_first, reverse=_DESCENDING)
  varint = _wire.varint_bytes
  parts = []
  total = 0
  for key, value in keyed:
    tensor_parts, tensor_size = _value_parts(value)
    head_tail = b"\x08" + varint(key) + b"\x12" + varint(tensor_size)
    entry_size = len(head_tail) + tensor_size
    head = field_tag + varint(entry_size) + head_tail
    parts.append(head)
    parts.extend(tensor_parts)
    total += len(head) + tensor_size
  return parts, total


def _step_envelope(parts: List, total: int) -> bytes:
  parts.insert(0, b"\x1a" + _wire.varint_bytes(total))
  return b"".join(parts)


def encode_step_request(actions: Mapping[int, object], requested: Sequence[int]) -> bytes:
  """Encodes an `EnvironmentRequest` whose payload is a `StepRequest`.

  Identical to `EnvironmentRequest(step=...).SerializeToString(deterministic=True)`
  with the installed protobuf runtime (map entries sorted by key in its order).

  Args:
    actions: map from action UID to a value `encode_tensor` accepts (encoded with
      dtype=None) or a `dm_env_rpc.v1.Tensor` message (sent as is).
    requested: the observation UIDs to request, in order.

  Returns:
    A new bytes object, owned by the caller.

  Raises:
    TypeError, ValueError: a UID is not a uint64, or a value cannot be packed.
  """
  parts, total = _map_parts(b"\n", actions)
  if len(requested):
    uids = b"".join([_wire.varint_bytes(_common.check_uid(uid)) for uid in requested])
    tail = b"\x12" + _wire.varint_bytes(len(uids)) + uids
    parts.append(tail)
    total += len(tail)
  return _step_envelope(parts, total)


def encode_step_response(state: int, observations: Mapping[int, object]) -> bytes:
  """Encodes an `EnvironmentResponse` whose payload is a `StepResponse`.

  Identical to `EnvironmentResponse(step=...).SerializeToString(deterministic=True)`
  with the installed protobuf runtime (map entries sorted by key in its order).

  Args:
    state: the EnvironmentStateType value (any int32: the enum is open).
    observations: map from observation UID to a value `encode_tensor` accepts or
      a `dm_env_rpc.v1.Tensor` message.

  Returns:
    A new bytes object, owned by the caller.

  Raises:
    TypeError, ValueError: state is not an int32, a UID is not a uint64, or a
      value cannot be packed.
  """
  if isinstance(state, (bool, np.bool_)) or not isinstance(state, (int, np.integer)):
    raise TypeError(f"StepResponse state must be an integer, not {type(state).__name__}")
  state = int(state)
  if not -_INT32_MAX - 1 <= state <= _INT32_MAX:
    raise ValueError(f"StepResponse state {state} does not fit int32")
  parts, total = _map_parts(b"\x12", observations)
  if state:
    head = b"\x08" + _wire.varint_bytes(state & _wire.MASK64)
    parts.insert(0, head)
    total += len(head)
  return _step_envelope(parts, total)


def encode_step_response_into(out, state: int, observations: Mapping[int, object]) -> int:
  """Encodes a step `EnvironmentResponse` into the caller's buffer.

  This backend builds the bytes of `encode_step_response(state, observations)`
  and then copies them into `out` (the native backend writes straight into
  `out`, with no intermediate bytes).

  Args:
    out: a writable C-contiguous buffer (bytearray, mmap.mmap, a memoryview of
      one, a writable ndarray, ...).
    state, observations: as for `encode_step_response`.

  Returns:
    n, the size in bytes of the message.  If n <= len(out) (in bytes), out[0:n]
    now holds exactly the bytes `encode_step_response` returns; otherwise
    nothing was written, and the caller can grow its buffer and call again.

  Raises:
    TypeError: `out` is not a writable C-contiguous buffer (checked first).
    TypeError, ValueError: as for `encode_step_response`, with nothing written.
  """
  view = _common.out_buffer(out)
  data = encode_step_response(state, observations)
  n = len(data)
  if n <= view.nbytes:
    view[:n] = data
  return n


# ---------------------------------------------------------------------------
# Decoding: walking a Tensor.

def _as_bytes(buf):
  """(indexable bytes, object for np.frombuffer) for any C-contiguous buffer."""
  if type(buf) is bytes:
    return buf
  try:
    view = memoryview(buf)
  except ValueError:  # e.g. a released memoryview
    raise TypeError("decode needs a readable C-contiguous buffer") from None
  if not view.c_contiguous:
    raise TypeError("decode needs a readable C-contiguous buffer")
  if view.format != "B" or view.ndim != 1:
    view = view.cast("B")
  return view


def _walk_array(data, pos: int, end: int, depth: int, kind: int, runs: list) -> bool:
  """Collects the byte ranges of a payload array message's elements into `runs`.

  int8/uint8: `runs` ends up holding the last `array` field seen (bytes: the last
  wins).  Repeated kinds: every packed run and unpacked element, in order, all
  of which concatenate into one packed run.  Returns False if an element came
  unpacked.
  """
  what = _WHAT[kind]
  if depth < 0:
    raise ValueError(f"{what}: message {_wire.where(data, pos)} nests too deeply")
  packed = True
  unpacked_tag = 8 | _UNPACKED_WIRE_TYPE.get(kind, 2)
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      _wire.check_tag(data, tag, pos, what)
      pos += 1
    else:
      tag, pos = _wire.read_tag(data, pos, end, what)
    if tag == 0x0A:
      start, pos = _wire.read_length(data, pos, end, what)
      if kind == INT8 or kind == UINT8:
        runs[:] = [(start, pos)]
      elif pos > start:
        if kind <= DOUBLE:
          if (pos - start) % (4 if kind == FLOAT else 8):
            raise ValueError(
                f"{what}: packed run of {pos - start} bytes {_wire.where(data, start)} "
                f"is not a whole number of {'floats' if kind == FLOAT else 'doubles'}")
        elif data[pos - 1] >= 0x80:
          raise ValueError(
              f"{what}: packed run {_wire.where(data, start)} ends in the middle of a varint")
        runs.append((start, pos))
    elif tag == unpacked_tag:
      start = pos
      pos = _wire.skip_field(data, pos, end, tag, depth, what)
      runs.append((start, pos))
      packed = False
    else:
      pos = _wire.skip_field(data, pos, end, tag, depth, what)
  return packed


def _walk_tensor(data, spans, depth: int, what: str):
  """Walks the byte spans of one Tensor (merged in order) at nesting budget `depth`.

  Returns (kind, runs, packed, shape_runs, has_object): the last payload kind
  (0: none), the byte ranges of its elements, whether they all came packed, the
  byte ranges of the shape's varints, and whether a string or proto payload
  appeared anywhere.
  """
  kind = 0
  runs = []
  packed = True
  shape_runs = []
  has_object = False
  for pos, end in spans:
    while pos < end:
      tag = data[pos]
      if tag < 0x80:
        if tag < 8 or tag & 7 > 5:
          _wire.check_tag(data, tag, pos, what)
        pos += 1
      else:
        tag, pos = _wire.read_tag(data, pos, end, what)
      if tag & 7 == 2:
        start, sub_end = _wire.read_length(data, pos, end, what)
        field = tag >> 3
        if field <= 11:
          if field != kind:
            if kind in _VARINT_KINDS and runs:
              # protobuf still parsed the payload this one replaces.
              _join_varints(data, runs, kind)
            kind = field
            runs = []
            packed = True
          if field >= STRING:
            has_object = True
            _wire.skip_message(data, start, sub_end, depth - 1, _WHAT[field],
                               _OBJECT_CHILDREN[field])
          elif not _walk_array(data, start, sub_end, depth - 1, field, runs):
            packed = False
        elif field == 15 and sub_end > start:
          if data[sub_end - 1] >= 0x80:
            raise ValueError(
                f"Tensor.shape: packed run {_wire.where(data, start)} ends in the middle "
                "of a varint")
          shape_runs.append((start, sub_end))
        pos = sub_end
      elif tag == 0x78:
        start = pos
        pos = _wire.read_varint(data, pos, end, what)[1]
        shape_runs.append((start, pos))
      else:
        pos = _wire.skip_field(data, pos, end, tag, depth, what)
  return kind, runs, packed, shape_runs, has_object


def _join_varints(data, runs, kind) -> np.ndarray:
  """The elements' varints as one uint8 array (a view for a single run)."""
  if len(runs) == 1:
    start, end = runs[0]
    raw = np.frombuffer(data, np.uint8, end - start, start)
  else:
    raw = np.frombuffer(b"".join([data[start:end] for start, end in runs]), np.uint8)
  return _decode_varints(raw, kind)


def _decode_varints(raw: np.ndarray, kind: int) -> np.ndarray:
  if _PROTOBUF_C and raw.size <= _PB_DECODE_MAX_BYTES:
    values = _protobuf_varints(raw.tobytes(), kind)
    if values is not None:
      return values
  return _numpy_varints(raw, kind)


def _numpy_varints(raw: np.ndarray, kind: int) -> np.ndarray:
  """_decode_varints by numpy alone: raises our error for a malformed run."""
  what = _WHAT[kind]
  if kind == BOOL:
    if raw.size and raw.max() < 0x80:
      return raw != 0
    return _wire.decode_varints(raw, 64, what) != 0
  if kind == INT32 or kind == UINT32:
    values = _wire.decode_varints(raw, 32, what)
    return values.view(np.int32) if kind == INT32 else values
  values = _wire.decode_varints(raw, 64, what)
  return values.view(np.int64) if kind == INT64 else values


def _protobuf_varints(chunk, kind: int):
  """The elements of a run of complete varints (a byte string or memoryview of at
  most _PB_DECODE_MAX_BYTES) through protobuf's parser (see _PROTOBUF_C), or
  None if protobuf refuses the run (the numpy path then says why)."""
  if type(chunk) is not bytes:
    chunk = bytes(chunk)
  if chunk.isascii():  # one-byte varints: the bytes are the values
    # (uint8 to bool casts any nonzero byte to True, as a bool varint reads)
    return np.frombuffer(chunk, np.uint8).astype(_DTYPES[kind])
  try:
    values = _PB_ARRAYS[kind].FromString(b"\n" + _wire.varint_bytes(len(chunk)) + chunk).array
  except protobuf_message.DecodeError:
    return None
  return _repeated_array(values, kind)


def _repeated_array(values, kind: int) -> np.ndarray:
  """A fresh array of a protobuf repeated scalar container's values."""
  if len(values) < _FROMITER_BELOW:
    return np.fromiter(values, _DTYPES[kind], len(values))
  return np.array(values, _DTYPES[kind])  # (one copy: the container has __array__)


def _small_varints(data, runs, kind) -> np.ndarray:
  """Python decoding of a few varints (each run ends on a complete varint)."""
  values = []
  for pos, end in runs:
    values += _wire.py_varints(data[pos:end], _WHAT[kind], pos)
  if kind == BOOL:
    return np.array([v != 0 for v in values], bool)
  if kind == INT32 or kind == UINT32:
    flat = np.array([v & 0xFFFFFFFF for v in values], np.uint32)
    return flat.view(np.int32) if kind == INT32 else flat
  flat = np.array(values, np.uint64)
  return flat.view(np.int64) if kind == INT64 else flat


def _varint_scalar(data, pos: int, end: int, kind: int):
  """The numpy scalar of a one-varint payload, or None if the run holds more than one."""
  values = _wire.py_varints(data[pos:end], _WHAT[kind], pos)
  if len(values) != 1:
    return None
  return _numpy_scalar(kind, values[0])


def _numpy_scalar(kind: int, value: int):
  """The numpy scalar of a varint kind for a varint's value (mod 2**64)."""
  if kind == BOOL:
    return np.bool_(value != 0)
  if kind == INT32:
    value &= 0xFFFFFFFF
    return np.int32(value - (1 << 32) if value >> 31 else value)
  if kind == INT64:
    return np.int64(value - (1 << 64) if value >> 63 else value)
  if kind == UINT32:
    return np.uint32(value & 0xFFFFFFFF)
  return np.uint64(value)


# The numeric payload tags (fields 1-9, wire type 2) and their kinds.
_NUMERIC_TAGS = {kind << 3 | 2: kind for kind in range(FLOAT, STRING)}
# Scalars decoded from one byte: int8/uint8 elements, and one-byte varints.
_BYTE_SCALARS = {
    INT8: [np.int8(v - 256 if v >= 128 else v) for v in range(256)],
    UINT8: [np.uint8(v) for v in range(256)],
}
_BYTE_SCALARS.update({kind: [_numpy_scalar(kind, v) for v in range(0x80)]
                      for kind in _VARINT_KINDS})


def _scalar(data, end: int):
  """The value of a scalar Tensor laid out `<payload tag> <n+2> 0a <n> <n bytes>`
  (n + 2 < 128, nothing else), or None if the payload is not one element.

  The caller has checked the layout; the tag may be anything.
  """
  kind = _NUMERIC_TAGS.get(data[0])
  if kind is None:
    return None
  n = end - 4
  if kind <= DOUBLE:
    if n != (4 if kind == FLOAT else 8):
      return None
    return np.frombuffer(data, _FLOAT_WIRE[kind], 1, 4)[0]
  if n == 1:
    element = data[4]
    if element < 0x80 or kind == INT8 or kind == UINT8:
      return _BYTE_SCALARS[kind][element]
    return None
  if kind == INT8 or kind == UINT8 or n > 10:
    return None
  value = _wire.py_single_varint(data[4:end])
  return None if value is None else _numpy_scalar(kind, value)


def _shape(data, shape_runs) -> List[int]:
  read = _wire.read_varint
  dims = []
  for pos, end in shape_runs:
    while pos < end:
      dim, pos = read(data, pos, end, "Tensor.shape")
      dim &= 0xFFFFFFFF
      dims.append(dim - (1 << 32) if dim >> 31 else dim)
  return dims


def _flat(data, kind, runs, packed, zero_copy) -> np.ndarray:
  """The payload's elements as a 1-D array, by the ownership rules of decode_tensor."""
  if kind == INT8 or kind == UINT8:
    start, end = runs[0] if runs else (0, 0)
    flat = np.frombuffer(data, _DTYPES[kind], end - start, start)
    if type(data) is not bytes and flat.flags.writeable:  # (views of bytes are read-only)
      flat.flags.writeable = False
    return flat
  if kind <= DOUBLE:
    wire = _FLOAT_WIRE[kind]
    if len(runs) == 1:
      start, end = runs[0]
      flat = np.frombuffer(data, wire, (end - start) // wire.itemsize, start)
      if zero_copy and packed and _LITTLE:
        if type(data) is not bytes and flat.flags.writeable:
          flat.flags.writeable = False
        return flat
      flat = flat.astype(_DTYPES[kind])
    elif runs:
      flat = np.frombuffer(b"".join([data[s:e] for s, e in runs]), wire).astype(_DTYPES[kind])
    else:
      flat = np.empty(0, _DTYPES[kind])
    if zero_copy:
      flat.flags.writeable = False
    return flat
  if not runs:
    return np.empty(0, _DTYPES[kind])
  if len(runs) == 1:
    start, end = runs[0]
    if _PROTOBUF_C and end - start <= _PB_DECODE_MAX_BYTES:
      flat = _protobuf_varints(data[start:end], kind)
      if flat is not None:
        return flat
      # (protobuf refused the run: numpy's pass says why)
      return _numpy_varints(np.frombuffer(data, np.uint8, end - start, start), kind)
    if end - start <= _SMALL:
      return _small_varints(data, runs, kind)
  elif not packed:
    return _small_varints(data, runs, kind)
  return _join_varints(data, runs, kind)


def _read_len(data, pos: int, end: int, what: str):
  """`_wire.read_length`, with the one- to three-byte lengths that fit read inline."""
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
      return _wire.read_length(data, pos, end, what)
    if start + length <= end:
      return start, start + length
  return _wire.read_length(data, pos, end, what)  # (raises)


def _fast_tensor(data, pos: int, end: int, zero_copy: bool):
  """(flat, shape) of a Tensor laid out as serialisers write it, or None for anything else.

  The layout: `<payload tag> <len> [0a <len> <elements>] [7a <len> <dims>]`.
  Anything else (or anything invalid) returns None and takes the general walk.
  """
  if end - pos < 2:
    return None
  kind = _NUMERIC_TAGS.get(data[pos])
  if kind is None:
    return None
  what = _WHAT[kind]
  sub, pos = _read_len(data, pos + 1, end, what)
  if sub < pos:
    if data[sub] != 0x0A:
      return None
    first, last = _read_len(data, sub + 1, pos, what)
    if last != pos:
      return None
  else:
    first = last = pos
  if pos == end:
    shape = []
  else:
    if data[pos] != 0x7A:
      return None
    dims, pos = _read_len(data, pos + 1, end, "Tensor.shape")
    if pos != end:
      return None
    shape = list(data[dims:pos])
    if shape and max(shape) >= 0x80:
      if data[pos - 1] >= 0x80:
        return None
      if len(shape) == 2:  # one dimension of 128 to 16383
        shape = [(shape[0] & 0x7F) | shape[1] << 7]
      elif len(shape) == 3 and shape[0] >= 0x80 and shape[1] >= 0x80:  # one of 2**14 to 2**21 - 1
        shape = [(shape[0] & 0x7F) | (shape[1] & 0x7F) << 7 | shape[2] << 14]
      else:
        try:
          shape = _shape(data, ((dims, pos),))
        except ValueError:
          return None  # (the general walk raises it, in its order)
  if first == last:
    runs = []
  elif kind <= DOUBLE:
    if (last - first) % (4 if kind == FLOAT else 8):
      return None
    if not shape and last - first == (4 if kind == FLOAT else 8):
      # A scalar: the element is copied out later, so a view is enough.
      return np.frombuffer(data, _FLOAT_WIRE[kind], 1, first), shape
    runs = [(first, last)]
  elif kind in _VARINT_KINDS:
    if data[last - 1] >= 0x80:
      return None
    if not shape and last - first <= 10:
      scalar = _varint_scalar(data, first, last, kind)
      if scalar is not None:
        return scalar, shape
    runs = [(first, last)]
  elif type(data) is bytes:  # int8/uint8: a view of bytes is read-only already
    return np.frombuffer(data, _DTYPES[kind], last - first, first), shape
  else:
    runs = [(first, last)]
  return _flat(data, kind, runs, True, zero_copy), shape


def _load_tensor(data, spans, depth: int, what: str, zero_copy: bool):
  """Checks one Tensor's bytes as protobuf would and extracts its parts.

  Returns (flat, shape) for numeric payloads, (None, message) for string and
  proto payloads, (None, None) for no payload.  Only wire errors are raised
  here; shape and dtype errors wait for `_finish`.
  """
  if len(spans) == 1:
    fast = _fast_tensor(data, spans[0][0], spans[0][1], zero_copy)
    if fast is not None:
      return fast
  return _walk_and_load(data, spans, depth, what, zero_copy)


def _walk_and_load(data, spans, depth: int, what: str, zero_copy: bool):
  """_load_tensor for a Tensor that is not laid out as `_fast_tensor` expects."""
  kind, runs, packed, shape_runs, has_object = _walk_tensor(data, spans, depth, what)
  if has_object:
    return None, _common.parse_tensor([data[start:end] for start, end in spans])
  shape = _shape(data, shape_runs) if shape_runs else []
  if not kind:
    return None, None
  return _flat(data, kind, runs, packed, zero_copy), shape


def _finish(flat, shape):
  if flat is None:
    if shape is None:
      raise TypeError("Tensor has no payload: cannot tell its dtype")
    return _common.unpack_tensor_message(shape)
  if not shape:
    if not flat.ndim:
      return flat  # already a numpy scalar (from _fast_tensor)
    if flat.shape[0] == 1:
      return flat[0]
    return _common.shape_payload(flat, shape)
  # The common cases, without _common's general -1 and broadcast handling.
  count = flat.shape[0]
  if count != 1:
    if len(shape) == 1:
      if shape[0] == count:
        return flat  # (already that shape)
    elif min(shape) > 0 and math.prod(shape) == count:
      flat.shape = shape
      return flat
  return _common.shape_payload(flat, shape)


# Small Tensors of a varint payload are parsed whole by protobuf (see
# _PROTOBUF_C): its parse, then one conversion of the payload, costs less than
# walking the fields in Python.
_PB_TENSOR_MAX_BYTES = 2048
_PB_VARINT_TAGS = frozenset(kind << 3 | 2 for kind in _PB_FIELDS)
_KIND_OF_FIELD = {name: kind for kind, name in _PB_FIELDS.items()}


def _protobuf_tensor_value(data):
  """decode_tensor of a Tensor's bytes through protobuf's parser, or None when
  protobuf refuses them (the walk then says why) or the payload that wins is
  not of a varint kind."""
  try:
    message = _Tensor.FromString(data)
  except protobuf_message.DecodeError:
    return None
  kind = _KIND_OF_FIELD.get(message.WhichOneof("payload"))
  if kind is None:
    return None
  flat = _repeated_array(getattr(message, _PB_FIELDS[kind]).array, kind)
  shape = list(message.shape)
  if len(shape) == 1 and shape[0] == flat.shape[0] != 1:
    return flat
  return _finish(flat, shape)


def decode_tensor(buf, *, zero_copy: bool = False, out=None):
  """Decodes the wire bytes of a `dm_env_rpc.v1.Tensor`.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer holding one
      serialised Tensor.  It must not change during the call (a transport
      over shared memory copies the bytes out first for this backend).
    zero_copy: return float32/float64 payloads as read-only views of `buf`
      instead of fresh arrays.  No effect when `out` is given.
    out: None, or a numpy array to decode into: writable, C-contiguous, of
      exactly the payload's dtype and decoded shape (0-d for a scalar), not
      overlapping `buf`.  It is checked before anything is written; the values
      are copied into it (int8/uint8 too) and `out` itself is returned.
      String and proto payloads cannot go into `out` (ValueError).  This
      backend may decode into a temporary array first (varint payloads), then
      copy; float and byte payloads are copied straight from `buf`.

  Returns:
    A numpy array with the Tensor's shape and upstream's dtype, or a numpy scalar
    (np.str_ for strings, an `Any` message for protos) when the shape is empty.
    Ownership:
    - int8/uint8: always a read-only view of `buf` (as upstream's frombuffer);
      the array's base chain keeps `buf` alive.  Writing into a mutable `buf`
      shows through.
    - float32/float64: zero_copy=False gives a fresh, writable array; with
      zero_copy=True a read-only (possibly unaligned) view of `buf` when the
      payload is one packed run, else a fresh array marked read-only.
    - integer and bool payloads: always fresh, writable arrays.
    - a one-element payload broadcast to a shape: a fresh, writable array.

  Raises:
    ValueError: the bytes are not a valid Tensor (the message says what and
      where), or the payload does not fit the shape, or a
      one-element payload would broadcast to more than MAX_BROADCAST_BYTES
      (see dm_env_rpc_fast.codec), or `out` does not fit the payload
      (see `_common.check_out`).
    TypeError: the Tensor has no payload, or `out` is not an ndarray.
  """
  if out is not None:
    data = _as_bytes(buf)
    end = len(data)
    loaded = _fast_tensor(data, 0, end, True)
    if loaded is None:
      loaded = _walk_and_load(data, ((0, end),), 100, "Tensor", True)
    return _write_into(_check_into(None, loaded, out, data))
  data = buf if type(buf) is bytes else _as_bytes(buf)
  end = len(data)
  if 4 < end < 0x82 and data[1] == end - 2 and data[2] == 0x0A and data[3] == end - 4:
    # The layout of a scalar: <payload tag> <n + 2> 0a <n> <element>.
    value = _scalar(data, end)
    if value is not None:
      return value
  if 0 < end <= _PB_TENSOR_MAX_BYTES and data[0] in _PB_VARINT_TAGS and _PROTOBUF_C and not (
      type(data) is bytes and data.isascii()):  # (all one-byte: the walk is cheaper)
    value = _protobuf_tensor_value(data)
    if value is not None:
      return value
  fast = _fast_tensor(data, 0, end, zero_copy)
  if fast is None:
    fast = _walk_and_load(data, ((0, end),), 100, "Tensor", zero_copy)
  flat, shape = fast
  if flat is not None and len(shape) == 1 and shape[0] == flat.shape[0] != 1:
    return flat  # (_finish's commonest case)
  return _finish(flat, shape)


def _check_into(uid, loaded, target, data):
  """Everything that can fail for one tensor decoded into `target` (or None),
  before anything is written: its payload, shape rules, and target.

  Returns what `_write_into` needs.
  """
  flat, shape = loaded
  if flat is None:
    if shape is None:
      raise TypeError("Tensor has no payload: cannot tell its dtype")
    value = _common.unpack_tensor_message(shape)
    if target is not None:
      _common.store_decoded(uid, value, target, data, False)
    return uid, target, data, value, None
  elements = np.asarray(flat)  # (a scalar from the fast paths comes as a numpy scalar)
  dims = _common.decoded_shape(elements.size, shape, elements.dtype.itemsize)
  if target is not None:
    _common.check_out(uid, _common.kind_of(elements.dtype), dims, target, data)
  return uid, target, data, (flat, shape), dims


def _write_into(checked):
  """The value of a tensor `_check_into` passed: `target`, filled, or a new value."""
  uid, target, data, value, dims = checked
  if dims is None:  # decoded by protobuf
    return value if target is None else _common.store_decoded(uid, value, target, data, True)
  flat, shape = value
  if target is None:
    return _finish(flat, shape)
  src = np.asarray(flat).reshape(-1)
  if src.size == 1:  # a scalar, or one element broadcast
    np.copyto(target, src.reshape((1,) * target.ndim))
  else:
    np.copyto(target, src.reshape(dims))
  return target


# ---------------------------------------------------------------------------
# Decoding: the step envelopes.

def _walk_entry(data, pos: int, end: int, depth: int, what: str):
  """A map<uint64, Tensor> entry: (key, byte spans of the value, had unknown fields)."""
  if depth < 0:
    raise ValueError(f"{what}: map entry {_wire.where(data, pos)} nests too deeply")
  key = 0
  spans = []
  unknown = False
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      _wire.check_tag(data, tag, pos, what)
      pos += 1
    else:
      tag, pos = _wire.read_tag(data, pos, end, what)
    if tag == 0x08:
      key, pos = _wire.read_varint(data, pos, end, what)
    elif tag == 0x12:
      start, pos = _wire.read_length(data, pos, end, what)
      spans.append((start, pos))
    else:
      unknown = True
      pos = _wire.skip_field(data, pos, end, tag, depth, what)
  return key, spans, unknown


def _walk_step(data, pos: int, end: int, depth: int, zero_copy: bool, step: dict,
               is_request: bool, into=None):
  """Merges one StepRequest/StepResponse message into `step`.

  `step` holds "tensors" ({uid: loaded tensor}), and "requested" (a list of
  UIDs) or "state".
  """
  name = "StepRequest" if is_request else "StepResponse"
  map_name = name + (".actions" if is_request else ".observations")
  if depth < 0:
    raise ValueError(f"{name}: message {_wire.where(data, pos)} nests too deeply")
  tensors = step["tensors"]
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      _wire.check_tag(data, tag, pos, name)
      pos += 1
    else:
      tag, pos = _wire.read_tag(data, pos, end, name)
    if tag == (0x0A if is_request else 0x12):
      start, pos = _wire.read_length(data, pos, end, name)
      key, spans, unknown = _walk_entry(data, start, pos, depth - 1, map_name)
      # Every entry is checked, even one a later entry for the same key replaces.
      # (A tensor decoded into a caller's array is copied from a view of the wire.)
      loaded = _load_tensor(data, spans, depth - 2, f"{map_name}[{key}]",
                            zero_copy or (into is not None and into.get(key) is not None))
      # protobuf (upb) keeps an entry with unknown fields (a wrong wire type
      # for key or value included) as an unknown field of the message, not in the map.
      if not unknown:
        tensors[key] = loaded
    elif is_request and tag == 0x12:
      start, pos = _wire.read_length(data, pos, end, name)
      if pos > start:
        if data[pos - 1] >= 0x80:
          raise ValueError(
              f"{name}.requested_observations: packed run {_wire.where(data, start)} ends "
              "in the middle of a varint")
        _read_uids(data, start, pos, step["requested"])
    elif is_request and tag == 0x10:
      uid, pos = _wire.read_varint(data, pos, end, name)
      step["requested"].append(uid)
    elif not is_request and tag == 0x08:
      state, pos = _wire.read_varint(data, pos, end, name)
      state &= 0xFFFFFFFF
      step["state"] = state - (1 << 32) if state >> 31 else state
    else:
      pos = _wire.skip_field(data, pos, end, tag, depth, name)


def _read_uids(data, pos: int, end: int, out: list) -> None:
  what = "StepRequest.requested_observations"
  if end - pos <= 64:
    read = _wire.read_varint
    while pos < end:
      uid, pos = read(data, pos, end, what)
      out.append(uid)
  else:
    raw = np.frombuffer(data, np.uint8, end - pos, pos)
    out.extend(_wire.decode_varints(raw, 64, what).tolist())


_STEP = 3
_ERROR = 16
_REQUEST_PAYLOADS = frozenset((1, 2, 3, 4, 5, 6, 7, 15))
_RESPONSE_PAYLOADS = frozenset((1, 2, 3, 4, 5, 6, 7, 15, 16))


def _walk_envelope(buf, zero_copy: bool, is_request: bool, into=None):
  """Walks an EnvironmentRequest/Response; returns (payload field, step dict, data, spans).

  Payloads other than step are left to protobuf: when one appears, the whole
  message is parsed once with protobuf so that exactly what it rejects fails.
  """
  data = _as_bytes(buf)
  name = "EnvironmentRequest" if is_request else "EnvironmentResponse"
  payloads = _REQUEST_PAYLOADS if is_request else _RESPONSE_PAYLOADS
  payload = 0
  step = None
  other_spans = []
  saw_other = False
  pos, end = 0, len(data)
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      _wire.check_tag(data, tag, pos, name)
      pos += 1
    else:
      tag, pos = _wire.read_tag(data, pos, end, name)
    field = tag >> 3
    if tag & 7 == 2 and field in payloads:
      start, pos = _wire.read_length(data, pos, end, name)
      if field != payload:
        # A oneof: another case clears this one.
        step = None
        other_spans = []
        payload = field
      if field == _STEP:
        if step is None:
          step = {"tensors": {}, "requested": [], "state": 0}
        _walk_step(data, start, pos, 99, zero_copy, step, is_request, into)
      else:
        saw_other = True
        other_spans.append(data[start:pos])
    else:
      pos = _wire.skip_field(data, pos, end, tag, 100, name)
  if saw_other:
    _check_with_protobuf(data, is_request)
  return payload, step, other_spans


def _check_with_protobuf(data, is_request: bool) -> None:
  message = _EnvironmentRequest() if is_request else _EnvironmentResponse()
  try:
    message.ParseFromString(bytes(data))
  except Exception as e:  # protobuf's DecodeError, whichever runtime.
    kind = "EnvironmentRequest" if is_request else "EnvironmentResponse"
    raise ValueError(f"Malformed {kind}: {e}") from None


def _finish_tensors(tensors: Dict) -> Dict[int, object]:
  return {uid: _finish(flat, shape) for uid, (flat, shape) in tensors.items()}


def _wrong_payload(descriptor, payload: int, wanted: str):
  found = _common.payload_name(descriptor, payload) if payload else "no payload"
  return ValueError(f"Expected a {wanted} payload but found {found}")


def decode_step_request(buf, *, zero_copy: bool = False) -> Tuple[Dict[int, object], List[int]]:
  """Decodes the wire bytes of an `EnvironmentRequest` whose payload is a step.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer.
    zero_copy: as for `decode_tensor`, applied to every action.

  Returns:
    (actions, requested): a new dict from action UID to array or scalar (each
    owned as `decode_tensor` describes; views keep `buf` alive), and a new list
    of the requested observation UIDs in wire order.

  Raises:
    ValueError: malformed bytes, a payload other than step (named), or an
      action whose payload does not fit its shape.
    TypeError: an action Tensor with no payload.
  """
  payload, step, _ = _walk_envelope(buf, zero_copy, True)
  if payload != _STEP:
    raise _wrong_payload(_common.REQUEST_DESCRIPTOR, payload, "step")
  return _finish_tensors(step["tensors"]), step["requested"]


def decode_step_response(buf, *, zero_copy: bool = False,
                         out=None) -> Tuple[int, Dict[int, object]]:
  """Decodes the wire bytes of an `EnvironmentResponse` whose payload is a step.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer.  It must not
      change during the call.
    zero_copy: as for `decode_tensor`, applied to every observation not in `out`.
    out: None, or a mapping {uid: array} (a None value counts as absent).
      Each observation whose uid is in `out` is decoded into that array, by
      `decode_tensor`'s rules for `out` (errors name the uid), and the
      returned dict maps the uid to that very array.  Every observation's
      payload and shape, and every target, are checked before any target is
      written.  uids the response lacks leave their arrays untouched.

  Returns:
    (state, observations): the EnvironmentStateType value as an int (any int32),
    and a new dict from observation UID to array or scalar (each owned as
    `decode_tensor` describes; views keep `buf` alive).

  Raises:
    DmEnvRpcError: the payload is an error status.
    ValueError: malformed bytes, a payload other than step or error (named), or
      an observation whose payload does not fit its shape.
    TypeError: an observation Tensor with no payload.
  """
  into = _common.out_mapping(out)
  payload, step, other_spans = _walk_envelope(buf, zero_copy, False, into)
  if payload == _ERROR:
    _common.raise_status(b"".join(other_spans))
  if payload != _STEP:
    raise _wrong_payload(_common.RESPONSE_DESCRIPTOR, payload, "step")
  if into is None:
    return step["state"], _finish_tensors(step["tensors"])
  data = _as_bytes(buf)
  checked = [_check_into(uid, loaded, into.get(uid), data)
             for uid, loaded in step["tensors"].items()]
  return step["state"], {c[0]: _write_into(c) for c in checked}
