"""Conversions between dm_env specs and dm_env_rpc TensorSpecs."""

from typing import Dict

import numpy as np
from dm_env import specs

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import spec_manager as dm_env_rpc_spec_manager
from dm_env_rpc_fast.v1 import tensor_spec_utils
from dm_env_rpc_fast.v1 import tensor_utils


def tensor_spec_to_dm_env_spec(tensor_spec: dm_env_rpc_pb2.TensorSpec) -> specs.Array:
  """The dm_env spec that describes the same values as a TensorSpec.

  Args:
    tensor_spec: a dm_env_rpc TensorSpec; only read.

  Returns:
    - `DiscreteArray` for a scalar integer spec with `max` set and a lower
      bound of 0 (given or defaulted);
    - `BoundedArray` for any other spec with `min` or `max` set;
    - `StringArray` for an unbounded string spec;
    - `Array` otherwise.

  Raises:
    TypeError: the dtype is not a valid DataType.
    ValueError: the bounds are invalid (see `tensor_spec_utils.bounds`).
  """
  np_type = tensor_utils.data_type_to_np_type(tensor_spec.dtype)
  has_min = tensor_spec.HasField("min")
  has_max = tensor_spec.HasField("max")
  if not (has_min or has_max):
    if tensor_spec.dtype == dm_env_rpc_pb2.DataType.STRING:
      return specs.StringArray(shape=tensor_spec.shape, name=tensor_spec.name)
    return specs.Array(shape=tensor_spec.shape, dtype=np_type, name=tensor_spec.name)

  limits = tensor_spec_utils.bounds(tensor_spec)
  if (not tensor_spec.shape and np.issubdtype(np_type, np.integer)
      and limits.min == 0 and has_max):
    # `limits.max` is of the spec's dtype: + 1 in Python, or a maximum at the
    # dtype's limit wraps round (dm-env-rpc 1.1.7 fails there).
    return specs.DiscreteArray(
        num_values=int(limits.max) + 1, dtype=np_type, name=tensor_spec.name)
  return specs.BoundedArray(
      shape=tensor_spec.shape, dtype=np_type, name=tensor_spec.name,
      minimum=limits.min, maximum=limits.max)


def dm_env_spec_to_tensor_spec(spec: specs.Array) -> dm_env_rpc_pb2.TensorSpec:
  """A new TensorSpec describing the same values as a dm_env spec.

  Args:
    spec: a dm_env `Array`, `BoundedArray`, `DiscreteArray` or `StringArray`.

  Returns:
    A TensorSpec with name, shape and dtype set, and the bounds of bounded
    specs (0 to num_values - 1 for a DiscreteArray).

  Raises:
    TypeError: the spec's dtype has no dm_env_rpc DataType.
    ValueError: the bounds do not fit the dtype or the shape.
  """
  dtype = np.str_ if isinstance(spec, specs.StringArray) else spec.dtype
  tensor_spec = dm_env_rpc_pb2.TensorSpec(
      name=spec.name, shape=spec.shape, dtype=tensor_utils.np_type_to_data_type(dtype))
  # DiscreteArray is a BoundedArray, so it must be tested first.
  if isinstance(spec, specs.DiscreteArray):
    tensor_spec_utils.set_bounds(tensor_spec, minimum=0, maximum=spec.num_values - 1)
  elif isinstance(spec, specs.BoundedArray):
    tensor_spec_utils.set_bounds(tensor_spec, spec.minimum, spec.maximum)
  return tensor_spec


def dm_env_spec(
    spec_manager: dm_env_rpc_spec_manager.SpecManager) -> Dict[str, specs.Array]:
  """The dm_env spec of every TensorSpec a SpecManager holds.

  Args:
    spec_manager: the SpecManager of a world's actions or observations.

  Returns:
    A new dict of name to dm_env spec (see `tensor_spec_to_dm_env_spec`).
  """
  return {
      name: tensor_spec_to_dm_env_spec(spec_manager.name_to_spec(name))
      for name in spec_manager.names()
  }
