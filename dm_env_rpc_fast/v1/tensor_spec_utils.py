"""Reading and writing the bounds (`min` / `max`) of dm_env_rpc TensorSpecs."""

import dataclasses
from typing import Generic, TypeVar, Union

import numpy as np

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

# Named as in dm-env-rpc, whose tests format it to match the message.
_BOUNDS_CANNOT_BE_SAFELY_CAST_TO_DTYPE = (
    "TensorSpec \"{name}\"'s bounds [{minimum}, {maximum}] contain value(s) "
    "that cannot be safely cast to dtype {dtype}.")

T = TypeVar("T")


@dataclasses.dataclass
class Bounds(Generic[T]):
  """Inclusive bounds of a TensorSpec: scalars, or arrays of the spec's shape."""
  min: T
  max: T


def _fits(value, np_dtype: np.dtype) -> bool:
  """Whether every element of `value` lies within `np_dtype`'s range.

  Integers are compared exactly (as Python ints); floats against the finite
  range, infinities always fitting.  Other element kinds are not checked.
  """
  array = np.asarray(value)
  if np.issubdtype(array.dtype, np.integer):
    info = np.iinfo(np_dtype)
    return all(info.min <= int(x) <= info.max for x in array.flat)
  if np.issubdtype(array.dtype, np.floating):
    info = np.finfo(np_dtype)
    # Comparing with a float32 limit rounds x to float32 (NEP 50), which
    # overflows to inf for large x: the intended outcome, without the warning.
    with np.errstate(over="ignore"):
      for x in array.flat:
        x = float(x)
        if np.isinf(x):
          continue
        if x < info.min or x > info.max:
          return False
  return True


def np_range_info(np_type) -> Union[np.finfo, np.iinfo]:
  """The range information (with `min` and `max`) of a numeric numpy type.

  Args:
    np_type: anything `np.dtype` accepts.

  Returns:
    `np.finfo` for floating types, `np.iinfo` for integer types.

  Raises:
    ValueError: the type is neither (bool, str, object, complex, ...).
  """
  np_type = np.dtype(np_type)
  if issubclass(np_type.type, np.floating):
    return np.finfo(np_type)
  if issubclass(np_type.type, np.integer):
    return np.iinfo(np_type)
  raise ValueError(f"{np_type} does not have range info.")


def _bound_value(value_proto, shape, default):
  """One bound of a spec: its payload, or `default` when none is set.

  Args:
    value_proto: the spec's `min` or `max` (a TensorSpec.Value).
    shape: the spec's shape.
    default: the bound to use when `value_proto` has no payload.

  Returns:
    A scalar for a one-element payload, else the payload reshaped to `shape`.

  Raises:
    ValueError: a non-scalar bound on a spec with a variable dimension, or a
      payload that does not fit `shape`.
  """
  if value_proto.WhichOneof("payload") is None:
    bound = default
  else:
    flat = tensor_utils.unpack_proto(value_proto)
    bound = flat[0] if len(flat) <= 1 else tensor_utils.reshape_array(flat, shape)
  if shape is not None and np.any(np.array(shape) < 0) and np.asarray(bound).size > 1:
    raise ValueError(
        "TensorSpec's with variable length shapes can only have scalar ranges. "
        f"Shape: {shape}, value: {bound}")
  return bound


def bounds(tensor_spec: dm_env_rpc_pb2.TensorSpec) -> Bounds:
  """The inclusive bounds of a TensorSpec.

  A missing `min` or `max` defaults to the dtype's lowest or highest value.

  Args:
    tensor_spec: a TensorSpec with a numeric dtype; only read.

  Returns:
    `Bounds(min, max)`, each of the spec's numpy type: a scalar, or an array
    of the spec's shape (new arrays, owned by the caller).

  Raises:
    ValueError: the dtype is not numeric, a bound's payload type does not
      match the dtype, a bound does not fit the dtype or the shape, or min
      exceeds max somewhere.
    TypeError: the dtype is not a valid DataType.
  """
  np_type = tensor_utils.data_type_to_np_type(tensor_spec.dtype)
  type_name = dm_env_rpc_pb2.DataType.Name(tensor_spec.dtype).lower()
  if not issubclass(np_type.type, np.number):
    raise ValueError(f'TensorSpec "{tensor_spec.name}" has non-numeric type {type_name}.')

  # A bound's payload field is named after its type: 'float' -> 'floats'.
  for label, value_proto in (("min", tensor_spec.min), ("max", tensor_spec.max)):
    which = value_proto.WhichOneof("payload")
    if which and not which.startswith(type_name):
      raise ValueError(
          f'TensorSpec "{tensor_spec.name}" has dtype {type_name} but {label} type {which}.')

  info = np_range_info(np_type)
  minimum = _bound_value(tensor_spec.min, tensor_spec.shape, info.min)
  maximum = _bound_value(tensor_spec.max, tensor_spec.shape, info.max)

  if not (_fits(minimum, np_type) and _fits(maximum, np_type)):
    raise ValueError(_BOUNDS_CANNOT_BE_SAFELY_CAST_TO_DTYPE.format(
        name=tensor_spec.name, minimum=minimum, maximum=maximum, dtype=type_name))
  if np.any(maximum < minimum):
    raise ValueError(
        f'TensorSpec "{tensor_spec.name}" has min {minimum} larger than max {maximum}.')
  return Bounds(np_type.type(minimum), np_type.type(maximum))


def _as_bound(value, np_type, label: str, tensor_spec) -> np.ndarray:
  """A bound as an array of the spec's type; ValueError unless it fits the shape."""
  array = np.asarray(value, dtype=np_type)
  if array.size != 1 and array.shape != tuple(tensor_spec.shape):
    raise ValueError(
        f"{label} has shape {array.shape}, which is incompatible with "
        f"tensor_spec {tensor_spec.name}'s shape {tensor_spec.shape}.")
  return array


def set_bounds(tensor_spec: dm_env_rpc_pb2.TensorSpec, minimum, maximum):
  """Sets (or clears) the inclusive bounds of a TensorSpec, in place.

  Args:
    tensor_spec: the spec to modify; its `name`, `dtype` and `shape` must
      already be set.
    minimum: a scalar, an array (or nested sequence) of the spec's shape, or
      None to clear `min`.
    maximum: as `minimum`, for `max`.

  Raises:
    ValueError: the dtype is not numeric, a bound does not fit the dtype or
      the shape, or min exceeds max somewhere.
    TypeError: the dtype is not a valid DataType.
  """
  np_type = tensor_utils.data_type_to_np_type(tensor_spec.dtype)
  if not issubclass(np_type.type, np.number):
    raise ValueError(f'TensorSpec has non-numeric type "{np_type}".')

  has_min = minimum is not None
  has_max = maximum is not None
  if (has_min and not _fits(minimum, np_type)) or (has_max and not _fits(maximum, np_type)):
    raise ValueError(_BOUNDS_CANNOT_BE_SAFELY_CAST_TO_DTYPE.format(
        name=tensor_spec.name, minimum=minimum, maximum=maximum,
        dtype=dm_env_rpc_pb2.DataType.Name(tensor_spec.dtype)))

  if has_min:
    minimum = _as_bound(minimum, np_type, "minimum", tensor_spec)
  if has_max:
    maximum = _as_bound(maximum, np_type, "maximum", tensor_spec)
  if has_min and has_max and np.any(maximum < minimum):
    raise ValueError(
        f'TensorSpec "{tensor_spec.name}" has min {minimum} larger than max {maximum}.')

  packer = tensor_utils.get_packer(np_type)
  for field, bound, present in (("min", minimum, has_min), ("max", maximum, has_max)):
    if present:
      packer.pack(getattr(tensor_spec, field), bound)
    else:
      tensor_spec.ClearField(field)
