"""Tensor encode and decode of the pure backend (csrc/tensor_codec.cc).

Fixed-width payloads (float, double, int8, uint8) move as whole buffers
(`np.frombuffer` views, one copy at most); varint payloads go by the route
`routes` picks: protobuf's compiled parser or serialiser, numpy passes, or
plain Python.  A Tensor is walked field by field in Python, which costs per
field, never per element, except for the rare unpacked repeated encoding.
"""

import math
import struct
import sys
from typing import Dict, List, Tuple

import numpy as np

from dm_env_rpc_fast.codec import _common
from dm_env_rpc_fast.codec._pure import routes
from dm_env_rpc_fast.codec._pure import varints
from dm_env_rpc_fast.codec._pure import wire

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
_OBJECT_CHILDREN = {STRING: None, PROTO: {1: ("Tensor.protos.array", None)}}
_INT32_MAX = (1 << 31) - 1

# The kind of every numeric dtype in native byte order, for arrays that need no
# cast: `_common.prepare` would find the same kind (equal dtypes have equal types).
_ARRAY_KINDS = {dtype: kind for kind, dtype in _DTYPES.items() if kind < STRING}


# ---------------------------------------------------------------------------
# Encoding.

# (bound once: these run on every encode and decode)
_encode_route, _PROTOBUF, _PYTHON = routes.encode_route, routes.PROTOBUF, routes.PYTHON
_protobuf_tensor_parts, _VARINT_PAYLOAD_TAGS = routes.protobuf_tensor_parts, routes.VARINT_PAYLOAD_TAGS


def _shape_bytes(shape) -> bytes:
  if max(shape) < 0x80:
    return bytes(shape)
  if len(shape) == 1 and shape[0] <= _INT32_MAX:
    return wire.varint_bytes(shape[0])
  for dim in shape:
    if dim > _INT32_MAX:
      raise ValueError(f"Tensor shape {list(shape)}: dimension {dim} does not fit int32")
  return b"".join([wire.varint_bytes(dim) for dim in shape])


def _tensor_parts(kind: int, array: np.ndarray, shape) -> Tuple[List, int]:
  """The wire bytes of a numeric Tensor as a list of buffers, and their total size."""
  flat = array.ravel()  # C-contiguous: copies only a non-contiguous array
  size = flat.size
  route = _encode_route(kind, size)
  if route is _PROTOBUF:
    encoded, data = routes.protobuf_tensor(kind, flat.tolist(), shape)
    if encoded is not None:
      return [encoded], len(encoded)
  elif route is _PYTHON:
    encoded = _encode_in_python(kind, flat, shape)
    return [encoded], len(encoded)
  elif kind in _VARINT_KINDS:
    data = routes.varint_payload(kind, flat)
  elif kind <= DOUBLE and not _LITTLE:
    data = flat.astype(_FLOAT_WIRE[kind])
  else:
    data = flat
  size = len(data) if type(data) is bytes else data.nbytes
  varint = wire.varint_bytes
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


def _encode_in_python(kind: int, flat: np.ndarray, shape) -> bytes:
  """The Tensor's bytes for a few elements (routes.PYTHON_ENCODE_MAX_ELEMENTS), in plain Python."""
  if kind in _VARINT_KINDS:
    values = flat.tolist()
    if kind == BOOL:
      data = bytes([v != 0 for v in values])
    elif values and (min(values) < 0 or max(values) >= 0x80):
      # Masked to 64 bits, a negative int becomes its sign extension.
      varint = varints.py_varint_bytes
      mask = wire.MASK64
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
  return b"".join((head, data, b"z", wire.varint_bytes(len(dims)), dims))


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

  Each takes a scalar and returns the Tensor's bytes (what `_encode_in_python`
  makes of it), or None to leave it to the general path.
  """
  encoders = {}
  mask = wire.MASK64

  def varint_encoder(kind):
    tag = kind << 3 | 2
    table = [bytes((tag, 3, 10, 1, v)) for v in range(0x80)]

    def encode(value):
      v = int(value)
      if 0 <= v < 0x80:
        return table[v]
      payload = varints.py_varint_bytes(v & mask)  # negatives: their sign extension
      return bytes((tag, len(payload) + 2, 10, len(payload))) + payload
    return encode

  for kind in (INT32, INT64, UINT32, UINT64, BOOL):
    encoders[_DTYPES[kind].type] = varint_encoder(kind)
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


def value_parts(value) -> Tuple[List, int]:
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


# ---------------------------------------------------------------------------
# Decoding.

def _walk_array(data, pos: int, end: int, depth: int, kind: int, runs: list) -> bool:
  """Collects the byte ranges of a payload array message's elements into `runs`.

  int8/uint8: `runs` ends up holding the last `array` field seen (bytes: the last
  wins).  Repeated kinds: every packed run and unpacked element, in order, all
  of which concatenate into one packed run.  Returns False if an element came
  unpacked.
  """
  what = _WHAT[kind]
  packed = True
  unpacked_tag = 8 | _UNPACKED_WIRE_TYPE.get(kind, 2)
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      wire.check_tag(data, tag, pos, what)
      pos += 1
    else:
      tag, pos = wire.read_tag(data, pos, end, what)
    if tag == 0x0A:
      at = pos
      start, pos = wire.read_length(data, pos, end, what)
      if kind == INT8 or kind == UINT8:
        runs[:] = [(start, pos)]
      elif pos > start:
        if kind <= DOUBLE:
          if (pos - start) % (4 if kind == FLOAT else 8):
            raise ValueError(
                f"{what}: packed run of {pos - start} bytes is not a multiple of "
                f"{4 if kind == FLOAT else 8} {wire.where(data, at)}")
        elif data[pos - 1] >= 0x80:  # (ends in the middle of a varint)
          wire.check_varint_run(data, start, pos, what)
        runs.append((start, pos))
    elif tag == unpacked_tag:
      start = pos
      pos = wire.skip_field(data, pos, end, tag, depth, what)
      runs.append((start, pos))
      packed = False
    else:
      pos = wire.skip_field(data, pos, end, tag, depth, what)
  return packed


def raise_first_run_error(data, kind: int, runs, shape_runs) -> None:
  """Raises the error of the first bad varint, in wire order, among the payload's
  runs (varint kinds) and the shape's, if any.

  For error paths: the native backend reads every varint as it meets it, so
  such an error comes before any later one; the walk leaves them to decoding.
  """
  checks = [(start, end, "Tensor.shape") for start, end in shape_runs]
  if kind in _VARINT_KINDS:
    checks += [(start, end, _WHAT[kind]) for start, end in runs]
  for start, end, path in sorted(checks):
    wire.check_varint_run(data, start, end, path)


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
  try:
    for pos, end in spans:
      while pos < end:
        tag = data[pos]
        if tag < 0x80:
          if tag < 8 or tag & 7 > 5:
            wire.check_tag(data, tag, pos, what)
          pos += 1
        else:
          tag, pos = wire.read_tag(data, pos, end, what)
        if tag & 7 == 2:
          start, sub_end = wire.read_length(data, pos, end, what)
          field = tag >> 3
          if field <= 11:
            wire.check_depth(data, pos, depth - 1, what)
            if field != kind:
              if kind in _VARINT_KINDS and runs:
                # protobuf still parsed the payload this one replaces.
                routes.joined_varint_array(data, runs, kind)
              kind = field
              runs = []
              packed = True
            if field >= STRING:
              has_object = True
              wire.skip_message(data, start, sub_end, depth - 1, _WHAT[field],
                                 _OBJECT_CHILDREN[field])
            elif not _walk_array(data, start, sub_end, depth - 1, field, runs):
              packed = False
          elif field == 15 and sub_end > start:
            if data[sub_end - 1] >= 0x80:  # (ends in the middle of a varint)
              wire.check_varint_run(data, start, sub_end, "Tensor.shape")
            shape_runs.append((start, sub_end))
          pos = sub_end
        elif tag == 0x78:
          start = pos
          pos = wire.read_varint(data, pos, end, what)[1]
          shape_runs.append((start, pos))
        else:
          pos = wire.skip_field(data, pos, end, tag, depth, what)
  except ValueError:
    raise_first_run_error(data, kind, runs, shape_runs)
    raise
  return kind, runs, packed, shape_runs, has_object


def _varint_scalar(data, pos: int, end: int, kind: int):
  """The numpy scalar of a one-varint payload, or None if the run holds more than one."""
  values = varints.py_varints(data[pos:end], _WHAT[kind], pos)
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
  value = varints.py_single_varint(data[4:end])
  return None if value is None else _numpy_scalar(kind, value)


def _shape(data, shape_runs) -> List[int]:
  read = wire.read_varint
  dims = []
  for pos, end in shape_runs:
    while pos < end:
      dim, pos = read(data, pos, end, "Tensor.shape")
      dim &= 0xFFFFFFFF
      dims.append(dim - (1 << 32) if dim >> 31 else dim)
  return dims


def _payload_array(data, kind, runs, packed, zero_copy) -> np.ndarray:
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
  return routes.varint_array(data, runs, packed, kind)


def _parse_usual_layout(data, pos: int, end: int, zero_copy: bool):
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
  sub, pos = wire.read_length(data, pos + 1, end, "Tensor")
  if sub < pos:
    if data[sub] != 0x0A:
      return None
    first, last = wire.read_length(data, sub + 1, pos, what)
    if last != pos:
      return None
  else:
    first = last = pos
  if pos == end:
    shape = []
  else:
    if data[pos] != 0x7A:
      return None
    dims, pos = wire.read_length(data, pos + 1, end, "Tensor")
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
  return _payload_array(data, kind, runs, True, zero_copy), shape


def load_tensor(data, spans, depth: int, zero_copy: bool, entry=None):
  """Checks one Tensor's bytes as protobuf would and extracts its parts.

  Returns (flat, shape) for numeric payloads, (None, message) for string and
  proto payloads, (None, None) for no payload.  Only wire errors are raised
  here, prefixed with the map entry's path when `entry` is (map path, entry
  number); shape and dtype errors wait for `finish`.
  """
  if len(spans) == 1:
    try:
      fast = _parse_usual_layout(data, spans[0][0], spans[0][1], zero_copy)
    except ValueError:  # (the walk raises it, in the walk's order)
      fast = None
    if fast is not None:
      return fast
  return _walk_and_load(data, spans, depth, zero_copy, entry)


def _walk_and_load(data, spans, depth: int, zero_copy: bool, entry=None):
  """load_tensor for a Tensor that is not laid out as `_parse_usual_layout` expects."""
  try:
    kind, runs, packed, shape_runs, has_object = _walk_tensor(data, spans, depth, "Tensor")
    if not has_object:
      try:
        shape = _shape(data, shape_runs) if shape_runs else []
        flat = _payload_array(data, kind, runs, packed, zero_copy) if kind else None
      except ValueError:  # (a bad varint: the first in wire order, as csrc reads them)
        raise_first_run_error(data, kind, runs, shape_runs)
        raise
  except ValueError as e:
    if entry is None:
      raise
    raise entry_error(entry, e) from None
  if has_object:  # (parsed by protobuf when finished, as the native backend does)
    return None, ObjectSpans(data[start:end] for start, end in spans)
  if not kind:
    return None, None
  return flat, shape


def entry_error(entry, error: ValueError) -> ValueError:
  """A wire error inside a map entry's value, with the entry's path (as csrc gives it)."""
  path, number = entry
  return ValueError(f"{path}[entry {number}].value: {error}")


def check_value(data, span, depth: int, entry) -> None:
  """Walks one value span of a map entry on its own: raises its first wire error, if any.

  For error paths: the native backend reads each value as it meets it, so an
  error there comes before one later in the entry.
  """
  try:
    _walk_tensor(data, (span,), depth, "Tensor")
  except ValueError as e:
    raise entry_error(entry, e) from None


class ObjectSpans(tuple):
  """The bytes of a Tensor with a string or proto payload, for protobuf to parse
  once the whole message has passed the wire checks."""


def finish(flat, shape):
  if flat is None:
    if shape is None:
      raise TypeError("Tensor has no payload: cannot tell its dtype")
    return _common.unpack_tensor_message(_common.parse_tensor(shape))
  if not shape:
    if not flat.ndim:
      return flat  # already a numpy scalar (from _parse_usual_layout)
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
    data = wire.as_bytes(buf)
    end = len(data)
    loaded = load_tensor(data, ((0, end),), _common.MAX_DEPTH, True)
    return write_into(check_into(None, loaded, out, data))
  data = buf if type(buf) is bytes else wire.as_bytes(buf)
  end = len(data)
  if 4 < end < 0x82 and data[1] == end - 2 and data[2] == 0x0A and data[3] == end - 4:
    # The layout of a scalar: <payload tag> <n + 2> 0a <n> <element>.
    value = _scalar(data, end)
    if value is not None:
      return value
  parts = _protobuf_tensor_parts(data) if end and data[0] in _VARINT_PAYLOAD_TAGS else None
  if parts is not None:
    flat, shape = parts
    if len(shape) == 1 and shape[0] == flat.shape[0] != 1:
      return flat
    return finish(flat, shape)
  try:
    fast = _parse_usual_layout(data, 0, end, zero_copy)
  except ValueError:  # (the walk raises it, in the walk's order)
    fast = None
  if fast is None:
    fast = _walk_and_load(data, ((0, end),), _common.MAX_DEPTH, zero_copy)
  flat, shape = fast
  if flat is not None and len(shape) == 1 and shape[0] == flat.shape[0] != 1:
    return flat  # (finish's commonest case)
  return finish(flat, shape)


def check_into(uid, loaded, target, data):
  """Everything that can fail for one tensor decoded into `target` (or None),
  before anything is written: its payload, shape rules, and target.

  Returns what `write_into` needs.
  """
  flat, shape = loaded
  if flat is None:
    if shape is None:
      raise TypeError("Tensor has no payload: cannot tell its dtype")
    value = _common.unpack_tensor_message(_common.parse_tensor(shape))
    if target is not None:
      _common.store_decoded(uid, value, target, data, False)
    return uid, target, data, value, None
  elements = np.asarray(flat)  # (a scalar from the fast paths comes as a numpy scalar)
  dims = _common.decoded_shape(elements.size, shape, elements.dtype.itemsize)
  if target is not None:
    _common.check_out(uid, _common.kind_of(elements.dtype), dims, target, data)
  return uid, target, data, (flat, shape), dims


def write_into(checked):
  """The value of a tensor `check_into` passed: `target`, filled, or a new value."""
  uid, target, data, value, dims = checked
  if dims is None:  # decoded by protobuf
    return value if target is None else _common.store_decoded(uid, value, target, data, True)
  flat, shape = value
  if target is None:
    return finish(flat, shape)
  src = np.asarray(flat).reshape(-1)
  if src.size == 1:  # a scalar, or one element broadcast
    np.copyto(target, src.reshape((1,) * target.ndim))
  else:
    np.copyto(target, src.reshape(dims))
  return target

