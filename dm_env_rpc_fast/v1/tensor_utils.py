"""numpy values to and from dm_env_rpc `Tensor` messages, on the fast codec.

`pack_tensor` and `unpack_tensor` behave as dm-env-rpc's functions of the same
names (same dtypes, shapes, writability, scalars and errors), but move the
payload through `dm_env_rpc_fast.codec` as wire bytes instead of element by
element through Python objects.

The `Packer` objects (`get_packer`) are the lower-level tool that reads and
writes the payload field of any message with a `payload` oneof of the
dm_env_rpc array messages: `Tensor` and `TensorSpec.Value`.
"""

import abc
from typing import Optional, Type, Union

import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

_DataType = dm_env_rpc_pb2.DataType

TensorOrTensorSpecValue = Union[dm_env_rpc_pb2.Tensor, dm_env_rpc_pb2.TensorSpec.Value]

# Shape field [-1] of a Tensor, ready to append to its payload bytes: field 15,
# length-delimited, holding the 10-byte varint of int32 -1.
_SHAPE_MINUS_ONE = b"\x7a\x0a" + b"\xff" * 9 + b"\x01"


class Packer(metaclass=abc.ABCMeta):
  """Moves a flat numpy array in and out of one payload field of a message.

  A packer touches only the payload (e.g. `floats`); it sets neither a shape
  nor a dtype.  Use `pack_tensor` / `unpack_tensor` for whole Tensors.
  """

  def __init__(self, name: str, np_type: np.dtype):
    """Creates a packer.

    Args:
      name: the payload field it handles, e.g. 'floats'.
      np_type: the numpy dtype of that payload's elements.
    """
    self._name = name
    self._np_type = np_type

  @property
  def name(self) -> str:
    """The payload field name, e.g. 'int32s'."""
    return self._name

  @property
  def np_type(self) -> np.dtype:
    """The numpy dtype of the payload's elements."""
    return self._np_type

  @abc.abstractmethod
  def pack(self, proto: TensorOrTensorSpecValue, value: np.ndarray):
    """Appends the elements of `value` (flattened, row-major) to `proto`'s payload.

    Args:
      proto: a Tensor or TensorSpec.Value; modified in place.
      value: a numpy array; only read.
    """

  @abc.abstractmethod
  def unpack(self, proto: TensorOrTensorSpecValue) -> np.ndarray:
    """Returns `proto`'s payload as a flat (1-D) numpy array of `np_type`.

    Args:
      proto: a Tensor or TensorSpec.Value; only read.

    Returns:
      The elements, in order.  Who owns the array depends on the packer:
      int8/uint8 payloads give read-only views of the message's bytes, the
      others fresh arrays the caller owns.
    """


def _varint(n: int) -> bytes:
  out = bytearray()
  while n > 0x7F:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


class _NumericPacker(Packer):
  """Packed repeated numbers (float, double, int32/64, uint32/64, bool)."""

  def __init__(self, name: str, np_type: np.dtype):
    super().__init__(name, np_type)
    # The key of this payload in a Tensor: field number, wire type 2.
    number = dm_env_rpc_pb2.Tensor.DESCRIPTOR.fields_by_name[name].number
    self._tensor_key = _varint(number << 3 | 2)

  def pack(self, proto, value):
    payload = getattr(proto, self._name)
    if isinstance(value, np.ndarray) and value.dtype == self._np_type and value.size:
      # Let the codec write the elements, then copy the payload message over.
      tensor = dm_env_rpc_pb2.Tensor.FromString(codec.encode_tensor(value.reshape(-1)))
      payload.MergeFrom(getattr(tensor, self._name))
    else:
      # Other element types take protobuf's own conversion (and its errors).
      payload.array.extend(np.asarray(value).ravel().tolist())

  def unpack(self, proto):
    # Wrap the payload message as a Tensor of shape [-1] and let the codec
    # read it: a fresh, writable array.
    body = getattr(proto, self._name).SerializeToString()
    wire = b"".join((self._tensor_key, _varint(len(body)), body, _SHAPE_MINUS_ONE))
    return codec.decode_tensor(wire)


class _BytesPacker(Packer):
  """int8 and uint8 payloads, carried as one bytes field."""

  def pack(self, proto, value):
    getattr(proto, self._name).array = np.asarray(value).tobytes()

  def unpack(self, proto):
    # A read-only view: the message's bytes object stays alive through it.
    return np.frombuffer(getattr(proto, self._name).array, self._np_type)


class _StringPacker(Packer):
  """UTF-8 strings."""

  def pack(self, proto, value):
    getattr(proto, self._name).array.extend(np.asarray(value).ravel().tolist())

  def unpack(self, proto):
    return np.array(getattr(proto, self._name).array, self._np_type)


class _ProtoPacker(Packer):
  """Protobuf messages, each carried in an Any."""

  def pack(self, proto, value):
    getattr(proto, self._name).array.extend(
        [codec.pack_any(item) for item in np.asarray(value).ravel()])

  def unpack(self, proto):
    return np.array(getattr(proto, self._name).array, self._np_type)


# One row per payload: (payload field, numpy dtype, DataType, packer class).
_PAYLOADS = (
    ("floats", np.dtype(np.float32), _DataType.FLOAT, _NumericPacker),
    ("doubles", np.dtype(np.float64), _DataType.DOUBLE, _NumericPacker),
    ("int8s", np.dtype(np.int8), _DataType.INT8, _BytesPacker),
    ("int32s", np.dtype(np.int32), _DataType.INT32, _NumericPacker),
    ("int64s", np.dtype(np.int64), _DataType.INT64, _NumericPacker),
    ("uint8s", np.dtype(np.uint8), _DataType.UINT8, _BytesPacker),
    ("uint32s", np.dtype(np.uint32), _DataType.UINT32, _NumericPacker),
    ("uint64s", np.dtype(np.uint64), _DataType.UINT64, _NumericPacker),
    ("bools", np.dtype(bool), _DataType.BOOL, _NumericPacker),
    ("strings", np.dtype(str), _DataType.STRING, _StringPacker),
    ("protos", np.dtype(object), _DataType.PROTO, _ProtoPacker),
)

_PACKER_BY_DTYPE = {dtype: cls(name, dtype) for name, dtype, _, cls in _PAYLOADS}
_DTYPE_BY_PAYLOAD = {name: dtype for name, dtype, _, _ in _PAYLOADS}
_DTYPE_BY_DATA_TYPE = {data_type: dtype for _, dtype, data_type, _ in _PAYLOADS}
_DATA_TYPE_BY_DTYPE = {dtype: data_type for _, dtype, data_type, _ in _PAYLOADS}
# The scalar types themselves are accepted too (np.dtype(np.str_) is '<U0',
# which a dtype such as '<U5' does not equal).
_DATA_TYPE_BY_DTYPE.update(
    {np.bool_: _DataType.BOOL, np.str_: _DataType.STRING, np.object_: _DataType.PROTO})

def get_tensor_type(tensor_proto: dm_env_rpc_pb2.Tensor) -> np.dtype:
  """The numpy dtype of a Tensor's (or TensorSpec.Value's) payload.

  Args:
    tensor_proto: a message with a `payload` oneof.

  Returns:
    The numpy dtype its payload unpacks to (e.g. float32 for `floats`).

  Raises:
    TypeError: no payload is set (or it has an unknown name).
  """
  payload = tensor_proto.WhichOneof("payload")
  dtype = _DTYPE_BY_PAYLOAD.get(payload)
  if dtype is None:
    raise TypeError(f"Unknown NumPy type {payload}")
  return dtype


def data_type_to_np_type(dm_env_rpc_dtype: dm_env_rpc_pb2.DataType) -> np.dtype:
  """The numpy dtype for a dm_env_rpc DataType value.

  Args:
    dm_env_rpc_dtype: a DataType enum value, e.g. `DataType.FLOAT`.

  Returns:
    The numpy dtype, e.g. float32; `np.dtype(str)` for STRING and
    `np.dtype(object)` for PROTO.

  Raises:
    TypeError: the value is INVALID_DATA_TYPE or not a DataType.
  """
  dtype = _DTYPE_BY_DATA_TYPE.get(dm_env_rpc_dtype)
  if dtype is None:
    raise TypeError(f"Unknown DataType {dm_env_rpc_dtype}")
  return dtype


def np_type_to_data_type(
    np_type: Union[np.dtype, Type[np.generic]]) -> dm_env_rpc_pb2.DataType:
  """The dm_env_rpc DataType for a numpy dtype.

  Args:
    np_type: a numpy dtype, scalar type or anything `np.dtype` accepts.

  Returns:
    The DataType enum value.

  Raises:
    TypeError: no DataType corresponds (e.g. float16, complex64, or a sized
      string dtype such as '<U5'; use `np.str_` for strings).
  """
  data_type = _DATA_TYPE_BY_DTYPE.get(np.dtype(np_type))
  if data_type is None:
    raise TypeError(f'No dm_env_rpc DataType corresponds to NumPy type "{np_type}"')
  return data_type


def get_packer(np_type: Union[np.dtype, Type[np.generic]]) -> Packer:
  """The packer for one numpy element type.

  A packer only reads and writes a payload field; it sets no shape.  Prefer
  `pack_tensor` and `unpack_tensor` for whole Tensors.

  Args:
    np_type: a numpy dtype or scalar type, e.g. `np.int32`.

  Returns:
    The shared `Packer` for that type's payload field.

  Raises:
    TypeError: the type has no dm_env_rpc payload.
  """
  packer = _PACKER_BY_DTYPE.get(np.dtype(np_type))
  if packer is None:
    raise TypeError(f'Unknown NumPy type "{np_type}" has no known packer.')
  return packer


def reshape_array(array: np.ndarray, shape):
  """Gives a flat payload array its Tensor shape, by dm_env_rpc's rules.

  Args:
    array: a 1-D array of payload elements.  Reshaped in place (and
      returned) in the plain case.
    shape: the Tensor's shape; empty for a scalar, one dimension may be -1.

  Returns:
    - for an empty shape, the single element (a numpy scalar);
    - for a one-element array, a new array of `shape` (any dimension below 1
      taken as 1) filled with that element;
    - otherwise `array` itself, reshaped.

  Raises:
    ValueError: a scalar shape with other than one element, or elements that
      do not fit `shape`.
  """
  if not shape:
    if len(array) != 1:
      raise ValueError(
          f"Scalar tensors must have exactly 1 element but had {len(array)} elements.")
    return array[0]
  if len(array) == 1:
    return np.full(np.maximum(shape, 1), array[0])
  array.shape = shape
  return array


def unpack_proto(proto: TensorOrTensorSpecValue) -> np.ndarray:
  """The payload of a Tensor or TensorSpec.Value as a flat numpy array.

  The shape field, if any, is ignored: see `reshape_array`.

  Args:
    proto: a message with a `payload` oneof; only read.

  Returns:
    A 1-D array of the payload's dtype (ownership as for `Packer.unpack`).

  Raises:
    TypeError: no payload is set.
  """
  return get_packer(get_tensor_type(proto)).unpack(proto)


def _reference_error(tensor_proto, codec_error: ValueError):
  """Raises the error upstream raises for a Tensor the codec rejected.

  The codec's messages for shape mismatches are its own; re-running the
  reshape the slow way gives numpy's (which users' tests match on).  A refused
  broadcast (the codec's size limit) has no upstream counterpart and is raised
  as is.
  """
  flat = unpack_proto(tensor_proto)
  shape = list(tensor_proto.shape)
  if shape and len(flat) == 1:
    raise codec_error
  reshape_array(flat, shape)
  raise codec_error


def unpack_tensor(tensor_proto: dm_env_rpc_pb2.Tensor):
  """Converts a Tensor message to a numpy array or scalar.

  Args:
    tensor_proto: a dm_env_rpc Tensor; only read.

  Returns:
    For an empty shape, the single element as a numpy scalar (`np.str_` for
    strings, the Any message for protos).  Otherwise an array of the payload's
    dtype and the Tensor's shape; a one-element payload is repeated to fill
    the shape.  int8/uint8 arrays are read-only views of bytes that the array
    keeps alive; every other array is new and owned by the caller.

  Raises:
    TypeError: the Tensor has no payload.
    ValueError: the number of elements does not fit the shape.
  """
  payload = tensor_proto.WhichOneof("payload")
  if payload not in _DTYPE_BY_PAYLOAD:
    raise TypeError(f"Unknown NumPy type {payload}")
  try:
    return codec.decode_tensor(tensor_proto.SerializeToString())
  except ValueError as e:
    _reference_error(tensor_proto, e)


def pack_tensor(
    value,
    dtype: Optional[Union[np.dtype, Type[np.generic], "dm_env_rpc_pb2.DataType"]] = None,
    try_compress=False,
) -> dm_env_rpc_pb2.Tensor:
  """Converts a value to a Tensor message.

  Args:
    value: a scalar (number, bool, str), protobuf message, numpy array, or
      (nested) sequence of these.  Only read.
    dtype: None to infer the payload type from `value`, or a numpy dtype /
      scalar type or DataType value to cast `value` to (unsafely, like
      `astype(casting='unsafe')`).  An object array with a string dtype must
      hold only `str`; an object array is never cast to any other dtype.
    try_compress: when every element is equal, send one element (with the
      full shape); unpacking repeats it.  Costs a comparison over the array.

  Returns:
    A new Tensor message with `shape` and one payload set; the caller owns it.

  Raises:
    TypeError: the (resulting) dtype has no dm_env_rpc payload, or a string
      dtype was asked for an object array holding something other than str.
    ValueError: `value` is jagged, mixes element types, holds objects that are
      not protobuf messages, or cannot be cast to `dtype`.
  """
  # The codec applies upstream's casting and checking rules (codec.prepare).
  return dm_env_rpc_pb2.Tensor.FromString(
      codec.encode_tensor(value, dtype=dtype, try_compress=bool(try_compress)))
