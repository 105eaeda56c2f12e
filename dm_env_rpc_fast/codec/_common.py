"""The rules both codec backends share: what a value packs to and what a payload unpacks to.

Both backends call into this module for the parts that are not about bytes:
choosing the payload for a Python value (upstream's `pack_tensor` rules), the
reshape and broadcast rules of a decoded payload, and the string and proto
payloads, which always go through protobuf.  Keeping these in one place is
what keeps the two backends' behaviour identical.
"""

import collections.abc
import numbers
import os
from typing import Any, Iterable, Optional, Tuple

import numpy as np
from google.protobuf import any_pb2
from google.protobuf import message as _message
from google.rpc import status_pb2

from dm_env_rpc_fast._proto import dm_env_rpc_pb2
from dm_env_rpc_fast._proto import error as _error

# Payload kinds.  A kind is the Tensor payload field number, which is also the
# DataType enum value (FLOAT = 1 ... PROTO = 11).
FLOAT, DOUBLE, INT8, INT32, INT64, UINT8, UINT32, UINT64, BOOL, STRING, PROTO = range(1, 12)

KIND_NAMES = {
    FLOAT: "floats", DOUBLE: "doubles", INT8: "int8s", INT32: "int32s",
    INT64: "int64s", UINT8: "uint8s", UINT32: "uint32s", UINT64: "uint64s",
    BOOL: "bools", STRING: "strings", PROTO: "protos",
}

KIND_DTYPES = {
    FLOAT: np.dtype(np.float32), DOUBLE: np.dtype(np.float64),
    INT8: np.dtype(np.int8), INT32: np.dtype(np.int32), INT64: np.dtype(np.int64),
    UINT8: np.dtype(np.uint8), UINT32: np.dtype(np.uint32), UINT64: np.dtype(np.uint64),
    BOOL: np.dtype(bool), STRING: np.dtype(str), PROTO: np.dtype(object),
}

# Kinds whose payload the codec leaves to protobuf.
OBJECT_KINDS = frozenset((STRING, PROTO))

# Keyed like upstream: by np.dtype(dtype.type), so '<U7' and '>f4' find their kind.
_KIND_BY_TYPE = {dtype: kind for kind, dtype in KIND_DTYPES.items()}

# EnvironmentStateType values.
INVALID_ENVIRONMENT_STATE, RUNNING, TERMINATED, INTERRUPTED = range(4)

_UINT64_MAX = (1 << 64) - 1


def kind_of(dtype: np.dtype) -> int:
  """The payload kind for a numpy dtype; TypeError if the protocol has none."""
  kind = _KIND_BY_TYPE.get(np.dtype(dtype.type))
  if kind is None:
    # Upstream's wording, word for word: pack_tensor callers match on it.
    raise TypeError(f'Unknown NumPy type "{dtype.type}" has no known packer.')
  return kind


def resolve_dtype(dtype) -> Optional[np.dtype]:
  """A numpy dtype for `dtype`: None, a DataType value, or anything np.dtype takes."""
  if dtype is None:
    return None
  if isinstance(dtype, (numbers.Integral,)) and not isinstance(dtype, (bool, np.bool_)):
    found = KIND_DTYPES.get(int(dtype))
    if found is None:
      raise TypeError(f"Unknown DataType {dtype}")
    return found
  return np.dtype(dtype)


def prepare(value, dtype=None, try_compress: bool = False) -> Tuple[int, np.ndarray, Tuple[int, ...]]:
  """Applies upstream's pack_tensor rules to a value.

  Args:
    value: a scalar, nested sequence, numpy array or protobuf message.
    dtype: None (inferred), a numpy dtype or type, or a DataType value.  Numeric
      values are cast to it unsafely, as upstream does.
    try_compress: send a single element when all elements are equal.

  Returns:
    (kind, array, shape): the payload kind, an array in native byte order holding
    the payload elements (C-contiguous for numeric kinds; a single element when
    compressed), and the shape to write on the wire.

  Raises:
    TypeError: the dtype has no payload type, or an object array asked to be
      packed as strings holds something that is not a str.
    ValueError: the value is jagged or cannot be cast.
  """
  array = np.asarray(value)
  wanted = resolve_dtype(dtype)
  if array.dtype == object:
    # Object arrays of str are how numpy users hold variable-length strings.
    if wanted is not None and np.issubdtype(wanted, np.str_):
      for item in array.flat:
        if not isinstance(item, str):
          raise TypeError(
              "Requested string dtype but not all elements are Python string "
              f"types. At least one element was {type(item)}.")
      array = np.array(array, dtype=np.str_)
  elif wanted is not None:
    array = array.astype(wanted, copy=False, casting="unsafe")
  kind = kind_of(array.dtype)
  shape = array.shape
  if not array.dtype.isnative:
    array = array.astype(array.dtype.newbyteorder("="))
  if try_compress and array.size > 1:
    first = array.flat[0]
    if np.all(array == first):
      array = array.reshape(-1)[:1]
  return kind, array, shape


def check_uid(uid) -> int:
  """A map key or requested UID as a Python int; ValueError unless it fits uint64."""
  try:
    as_int = int(uid)
  except (TypeError, ValueError):
    raise TypeError(f"UID {uid!r} is not an integer") from None
  if as_int != uid or not 0 <= as_int <= _UINT64_MAX:
    raise ValueError(f"UID {uid!r} is out of range: UIDs are uint64")
  return as_int


# ---------------------------------------------------------------------------
# Strings and protos: both backends build and parse these with protobuf.

def pack_any(value) -> any_pb2.Any:
  """`value` as an Any: itself if it is one, else the message packed into a new one."""
  if isinstance(value, any_pb2.Any):
    return value
  if isinstance(value, _message.Message):
    packed = any_pb2.Any()
    packed.Pack(value)
    return packed
  # Usually a jagged list, or mixed element types that numpy left as objects.
  # Upstream's wording: pack_tensor callers match on it.
  raise ValueError(
      "Trying to pack an Any proto with a type that's not recognized! "
      f"Type: {type(value)}, value: '{value}'. Is the value a jagged iterable? "
      "Is the data type not a supported primitive type like strings, floats, "
      "integers or protobuf messages? Are all elements in the array the same "
      "type?")


def object_tensor(kind: int, array: np.ndarray, shape) -> dm_env_rpc_pb2.Tensor:
  """A Tensor message for a string or proto payload."""
  tensor = dm_env_rpc_pb2.Tensor()
  tensor.shape[:] = shape
  flat = array.ravel()
  if kind == STRING:
    tensor.strings.array.extend(flat.tolist())
  else:
    tensor.protos.array.extend([pack_any(item) for item in flat])
  return tensor


def encode_object_tensor(kind: int, array: np.ndarray, shape) -> bytes:
  """The wire bytes of a string or proto Tensor."""
  return object_tensor(kind, array, shape).SerializeToString()


def tensor_message(value) -> Optional[dm_env_rpc_pb2.Tensor]:
  """`value` if it is already a Tensor message (which step encoders send as is)."""
  return value if isinstance(value, dm_env_rpc_pb2.Tensor) else None


def parse_tensor(spans: Iterable) -> dm_env_rpc_pb2.Tensor:
  """Parses (and merges, in order) the byte spans of one Tensor with protobuf."""
  tensor = dm_env_rpc_pb2.Tensor()
  try:
    for span in spans:
      tensor.MergeFromString(bytes(span))
  except _message.DecodeError as e:
    raise ValueError(f"Malformed Tensor: {e}") from None
  return tensor


def unpack_tensor_message(tensor: dm_env_rpc_pb2.Tensor):
  """Upstream's unpack_tensor on a parsed message (the slow, general path)."""
  kind_name = tensor.WhichOneof("payload")
  if kind_name is None:
    raise TypeError("Tensor has no payload: cannot tell its dtype")
  payload = getattr(tensor, kind_name).array
  if kind_name in ("int8s", "uint8s"):
    flat = np.frombuffer(payload, np.int8 if kind_name == "int8s" else np.uint8)
  elif kind_name == "strings":
    flat = np.array(payload, np.dtype(str))
  elif kind_name == "protos":
    flat = np.empty(len(payload), object)
    flat[:] = list(payload)
  else:
    dtype = KIND_DTYPES[_KIND_BY_NAME[kind_name]]
    flat = np.fromiter(payload, dtype, len(payload))
  return shape_payload(flat, list(tensor.shape))


_KIND_BY_NAME = {name: kind for kind, name in KIND_NAMES.items()}


def decode_object_tensor(spans: Iterable):
  """Decodes a Tensor whose bytes hold a string or proto payload, via protobuf."""
  return unpack_tensor_message(parse_tensor(spans))


# ---------------------------------------------------------------------------
# Shape rules.

def shape_payload(flat: np.ndarray, shape):
  """Gives a flat payload its shape, by dm_env_rpc's rules.

  - An empty shape is a scalar: the payload must hold exactly one element, which
    is returned as a numpy scalar (or str / Any for string and proto payloads).
  - A non-empty shape with a one-element payload is filled with that element,
    every dimension below 1 taken as 1; the result is a fresh, writable array.
  - Otherwise the payload is reshaped to `shape`; one dimension may be -1.

  The returned array is `flat` itself (reshaped in place), so it keeps flat's
  writability and memory.

  Raises:
    ValueError: the element count does not fit the shape.
  """
  count = flat.shape[0]
  if not shape:
    if count != 1:
      raise ValueError(
          f"Scalar tensors must have exactly 1 element but had {count} elements.")
    return flat[0]
  if count == 1:
    filled = check_shape_for_fill(shape, flat.dtype.itemsize)
    return np.full(filled, flat[0])
  flat.shape = reshape_target(count, shape)
  return flat


def decoded_shape(count: int, shape, itemsize: int) -> Tuple[int, ...]:
  """The shape `shape_payload` gives `count` elements (() for a scalar), without
  building it; the same errors."""
  if not shape:
    if count != 1:
      raise ValueError(
          f"Scalar tensors must have exactly 1 element but had {count} elements.")
    return ()
  if count == 1:
    return check_shape_for_fill(shape, itemsize)
  return reshape_target(count, shape)


def _max_broadcast_bytes() -> int:
  setting = os.environ.get("DM_ENV_RPC_FAST_MAX_BROADCAST_BYTES", "")
  if not setting:
    return 1 << 28
  try:
    limit = int(setting)
  except ValueError:
    limit = -1
  if not 0 <= limit < 1 << 63:
    raise ValueError(f"DM_ENV_RPC_FAST_MAX_BROADCAST_BYTES={setting!r} is not a byte count")
  return limit


# The broadcast rule turns one element on the wire into a whole array, so a few
# bytes could ask for gigabytes.  Both backends refuse a broadcast whose result
# would exceed this many bytes (default 256 MiB; set
# DM_ENV_RPC_FAST_MAX_BROADCAST_BYTES before import to change it) with a
# ValueError, before allocating anything.  Upstream has no such cap: this is
# a deliberate difference.
MAX_BROADCAST_BYTES = _max_broadcast_bytes()


def broadcast_error(shape, limit: int) -> str:
  """The message of a refused broadcast (the native core words it the same)."""
  return (f"Tensor shape {list(shape)} would broadcast a one-element payload to more "
          f"than {limit} bytes (the codec's MAX_BROADCAST_BYTES limit)")


def check_shape_for_fill(shape, itemsize: int) -> Tuple[int, ...]:
  """The shape a one-element payload fills (dimensions below 1 become 1).

  Raises:
    ValueError: the result would exceed MAX_BROADCAST_BYTES (itemsize bytes
      per element).
  """
  filled = tuple(max(int(d), 1) for d in shape)
  total = max(itemsize, 1)
  for d in filled:
    total *= d
  if total > MAX_BROADCAST_BYTES:
    raise ValueError(broadcast_error([int(d) for d in shape], MAX_BROADCAST_BYTES))
  return filled


def reshape_target(count: int, shape) -> Tuple[int, ...]:
  """The concrete shape for `count` elements; ValueError if they do not fit.

  Same outcome as numpy's reshape (which upstream uses): one negative dimension
  (conventionally -1) is inferred; two or more are an error.
  """
  shape = [int(d) for d in shape]
  unknown = [i for i, d in enumerate(shape) if d < 0]
  if len(unknown) > 1:
    raise ValueError(f"Invalid tensor shape {shape}: at most one dimension may be negative "
                     "(inferred)")
  known = 1
  for d in shape:
    if d >= 0:
      known *= d
  if unknown:
    if known == 0 or count % known:
      raise ValueError(f"Cannot reshape a payload of {count} elements into shape {shape}")
    shape[unknown[0]] = count // known
  elif known != count:
    raise ValueError(f"Cannot reshape a payload of {count} elements into shape {shape}")
  return tuple(shape)


# ---------------------------------------------------------------------------
# Caller-provided output: encode_step_response_into's buffer.

def out_buffer(out) -> memoryview:
  """`out` as a writable, C-contiguous memoryview of bytes (encode_step_response_into).

  Raises:
    TypeError: `out` is not a writable C-contiguous buffer (the native backend
      words its refusal the same).
  """
  try:
    view = memoryview(out)
  except (TypeError, ValueError):  # no buffer; a released memoryview
    view = None
  if view is None or view.readonly or not view.c_contiguous:
    raise TypeError(f"out must be a writable C-contiguous buffer, not {type(out).__name__}")
  if view.format != "B" or view.ndim != 1:
    view = view.cast("B")
  return view


# ---------------------------------------------------------------------------
# Caller-provided arrays: decode_tensor(out=...) / decode_step_response(out=...).
#
# Both backends check a target with these rules before writing anything, and
# word every refusal with check_out (the native backend checks in C++ and
# calls check_out only to raise).

def out_mapping(out) -> Optional[dict]:
  """decode_step_response's `out`: None, or a dict {uid: array or None}."""
  if out is None or type(out) is dict:
    return out
  if not isinstance(out, collections.abc.Mapping):
    raise TypeError(f"out must be a mapping {{uid: array}}, not {type(out).__name__}")
  return dict(out)


def _out_name(uid) -> str:
  return "out" if uid is None else f"out[{uid}] (observation {uid})"


def _shape_text(shape) -> str:
  return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_out(uid, kind: int, shape, target, wire) -> None:
  """Raises unless `target` can take a payload of `kind` decoded to `shape`.

  The target must be a writable, C-contiguous numpy ndarray of exactly the
  payload's dtype and shape (0-d for a scalar) that does not overlap `wire`
  (the buffer being decoded).  String and proto payloads never go into a
  target.  `uid` names the observation (None for decode_tensor).

  Raises:
    ValueError: the payload is strings/protos, or the target's dtype, shape,
      writability, contiguity or memory do not fit.
    TypeError: the target is not a numpy ndarray.
  """
  name = _out_name(uid)
  if kind in OBJECT_KINDS:
    raise ValueError(f"{name}: a {KIND_NAMES[kind]} payload cannot be decoded into an array; "
                     "leave this uid out of `out`")
  if not isinstance(target, np.ndarray):
    raise TypeError(f"{name} must be a numpy ndarray, not {type(target).__name__}")
  dtype = KIND_DTYPES[kind]
  if target.dtype != dtype or target.shape != tuple(shape):
    raise ValueError(f"{name} is {target.dtype} {_shape_text(target.shape)} but the payload "
                     f"decodes to {dtype} {_shape_text(shape)}")
  if not target.flags.writeable:
    raise ValueError(f"{name} is read-only")
  if not target.flags.c_contiguous:
    raise ValueError(f"{name} is not C-contiguous")
  if np.may_share_memory(target, np.frombuffer(wire, np.uint8)):
    raise ValueError(f"{name} overlaps the buffer being decoded")


def store_decoded(uid, value, target, wire, write: bool):
  """Checks (and if `write`, copies) an already decoded value into `target`.

  For tensors protobuf decodes (string and proto payloads, and numeric ones
  whose bytes also carry such a field).  Returns `target`.
  """
  if isinstance(value, np.ndarray):
    array = value
  elif isinstance(value, np.generic) and not isinstance(value, np.str_):
    array = np.asarray(value)
  else:
    array = None
  if array is None:
    kind, shape = (STRING if isinstance(value, str) else PROTO), ()
  else:
    kind, shape = _KIND_BY_TYPE[np.dtype(array.dtype.type)], array.shape
  check_out(uid, kind, shape, target, wire)
  if write:
    np.copyto(target, array)
  return target


# ---------------------------------------------------------------------------
# Errors carried in an EnvironmentResponse.

def raise_status(status_bytes) -> None:
  """Raises DmEnvRpcError for the serialised google.rpc.Status of an error response."""
  status = status_pb2.Status()
  try:
    status.ParseFromString(bytes(status_bytes))
  except _message.DecodeError as e:
    raise ValueError(f"Malformed error status in EnvironmentResponse: {e}") from None
  raise _error.DmEnvRpcError(status)


def payload_name(envelope_descriptor, number: int) -> str:
  """The name of an EnvironmentRequest/Response payload field, for error messages."""
  field = envelope_descriptor.fields_by_number.get(number)
  return field.name if field is not None else f"field {number}"


def wrong_payload(envelope_descriptor, number: int) -> ValueError:
  """The error for an EnvironmentRequest/Response whose payload is not step
  (`number` 0: none), the same from both backends."""
  name = envelope_descriptor.name
  if not number:
    return ValueError(f"{name} has no payload (expected step)")
  return ValueError(f"{name} payload is {payload_name(envelope_descriptor, number)}, not step")


# upb's nesting budget for a top-level message (each nested message or group
# spends one level) and the error past it.  The native core defines its own
# (csrc/wire.h: kMaxDepth, nesting_error) and exports them as _native.MAX_DEPTH
# and NESTING_ERROR; a test holds them equal to these.
MAX_DEPTH = 100
NESTING_ERROR = f"nesting deeper than {MAX_DEPTH} levels"


def where(pos: int, size: int) -> str:
  """Where a wire error is, as both backends say it (csrc/wire.h: Reader::fail)."""
  return f"at offset {pos} ({size}-byte buffer)"


REQUEST_DESCRIPTOR = dm_env_rpc_pb2.EnvironmentRequest.DESCRIPTOR
RESPONSE_DESCRIPTOR = dm_env_rpc_pb2.EnvironmentResponse.DESCRIPTOR
