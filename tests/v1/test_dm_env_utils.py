"""dm_env_utils: dm_env specs <-> TensorSpecs."""
import numpy as np
import pytest
from dm_env import specs

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_utils
from dm_env_rpc_fast.v1 import spec_manager
from dm_env_rpc_fast.v1 import tensor_spec_utils

DT = dm_env_rpc_pb2.DataType
TensorSpec = dm_env_rpc_pb2.TensorSpec


def bounded(dtype, shape=(), minimum=None, maximum=None, name="b"):
  tensor_spec = TensorSpec(name=name, dtype=dtype, shape=list(shape))
  tensor_spec_utils.set_bounds(tensor_spec, minimum, maximum)
  return tensor_spec


def test_unbounded_array():
  result = dm_env_utils.tensor_spec_to_dm_env_spec(
      TensorSpec(name="a", dtype=DT.UINT32, shape=[2, 3]))
  assert type(result) is specs.Array
  assert result == specs.Array(shape=(2, 3), dtype=np.uint32, name="a")


def test_string_array():
  result = dm_env_utils.tensor_spec_to_dm_env_spec(
      TensorSpec(name="s", dtype=DT.STRING, shape=[2]))
  assert type(result) is specs.StringArray
  assert result.shape == (2,) and result.name == "s"


def test_discrete_array_from_scalar_integer_with_zero_min():
  for minimum in (0, None):
    if minimum is None:
      # No min: the default is the dtype's lowest value, so only unsigned types qualify.
      tensor_spec = bounded(DT.UINT8, maximum=4)
    else:
      tensor_spec = bounded(DT.INT32, minimum=0, maximum=4)
    result = dm_env_utils.tensor_spec_to_dm_env_spec(tensor_spec)
    assert type(result) is specs.DiscreteArray
    assert result.num_values == 5 and result.name == "b"
    assert result.dtype == tensor_spec_utils.bounds(tensor_spec).max.dtype


@pytest.mark.parametrize("dtype", [DT.INT8, DT.INT32, DT.INT64, DT.UINT8, DT.UINT32, DT.UINT64])
def test_a_discrete_array_up_to_the_dtypes_maximum_does_not_overflow(dtype):
  """A scalar integer spec from 0 to its dtype's maximum is a DiscreteArray of max + 1 values,
  counted in Python (dm-env-rpc 1.1.7 adds 1 in the dtype, which wraps round and fails)."""
  np_type = tensor_spec_utils.bounds(bounded(dtype, maximum=1)).max.dtype
  top = np.iinfo(np_type).max
  result = dm_env_utils.tensor_spec_to_dm_env_spec(bounded(dtype, minimum=0, maximum=top))
  assert type(result) is specs.DiscreteArray
  assert result.num_values == int(top) + 1 and result.maximum == top and result.dtype == np_type


def test_bounded_array_cases():
  cases = [
      bounded(DT.INT32, minimum=1, maximum=4),          # min not 0
      bounded(DT.INT32, shape=(2,), minimum=0, maximum=4),  # not scalar
      bounded(DT.FLOAT, minimum=0.0, maximum=4.0),      # not integer
      bounded(DT.UINT8, minimum=0),                      # no max
  ]
  for tensor_spec in cases:
    result = dm_env_utils.tensor_spec_to_dm_env_spec(tensor_spec)
    assert type(result) is specs.BoundedArray, tensor_spec
    limits = tensor_spec_utils.bounds(tensor_spec)
    np.testing.assert_array_equal(result.minimum, np.broadcast_to(limits.min, result.shape))
    np.testing.assert_array_equal(result.maximum, np.broadcast_to(limits.max, result.shape))
    assert result.shape == tuple(tensor_spec.shape)


def test_array_bounds_are_kept():
  tensor_spec = bounded(DT.DOUBLE, shape=(2,), minimum=[0.0, -1.0], maximum=[1.0, 2.0])
  result = dm_env_utils.tensor_spec_to_dm_env_spec(tensor_spec)
  np.testing.assert_array_equal(result.minimum, [0.0, -1.0])
  np.testing.assert_array_equal(result.maximum, [1.0, 2.0])


def test_invalid_bounds_and_dtype_raise():
  tensor_spec = TensorSpec(name="x", dtype=DT.INT32)
  tensor_spec.min.floats.array[:] = [1.0]
  with pytest.raises(ValueError, match="has dtype int32 but min type floats"):
    dm_env_utils.tensor_spec_to_dm_env_spec(tensor_spec)
  with pytest.raises(TypeError, match="Unknown DataType 0"):
    dm_env_utils.tensor_spec_to_dm_env_spec(TensorSpec(name="x"))


@pytest.mark.parametrize("dm_env_spec", [
    specs.Array(shape=(2, 3), dtype=np.float32, name="a"),
    specs.Array(shape=(), dtype=np.bool_, name="flag"),
    specs.BoundedArray(shape=(2,), dtype=np.int64, minimum=[-1, 0], maximum=[3, 4], name="b"),
    specs.BoundedArray(shape=(), dtype=np.float64, minimum=-1.0, maximum=1.0, name="c"),
    specs.DiscreteArray(num_values=7, dtype=np.int32, name="d"),
    specs.StringArray(shape=(4,), name="s"),
])
def test_round_trip(dm_env_spec):
  tensor_spec = dm_env_utils.dm_env_spec_to_tensor_spec(dm_env_spec)
  assert tensor_spec.name == dm_env_spec.name
  assert tuple(tensor_spec.shape) == dm_env_spec.shape
  back = dm_env_utils.tensor_spec_to_dm_env_spec(tensor_spec)
  assert type(back) is type(dm_env_spec)
  assert back == dm_env_spec
  if isinstance(dm_env_spec, specs.BoundedArray):
    np.testing.assert_array_equal(back.minimum, dm_env_spec.minimum)
    np.testing.assert_array_equal(back.maximum, dm_env_spec.maximum)


def test_dm_env_spec_to_tensor_spec_fields():
  tensor_spec = dm_env_utils.dm_env_spec_to_tensor_spec(
      specs.DiscreteArray(num_values=3, dtype=np.uint8, name="d"))
  assert tensor_spec.dtype == DT.UINT8
  assert tensor_spec.min.uint8s.array == b"\x00" and tensor_spec.max.uint8s.array == b"\x02"
  assert dm_env_utils.dm_env_spec_to_tensor_spec(specs.StringArray(shape=())).dtype == DT.STRING


def test_unsupported_dtype_raises():
  with pytest.raises(TypeError, match="No dm_env_rpc DataType corresponds"):
    dm_env_utils.dm_env_spec_to_tensor_spec(specs.Array(shape=(), dtype=np.float16))


def test_dm_env_spec_from_manager():
  manager = spec_manager.SpecManager({
      1: TensorSpec(name="a", dtype=DT.FLOAT, shape=[2]),
      2: bounded(DT.INT32, minimum=0, maximum=2, name="b"),
  })
  result = dm_env_utils.dm_env_spec(manager)
  assert set(result) == {"a", "b"}
  assert result["a"] == specs.Array(shape=(2,), dtype=np.float32, name="a")
  assert result["b"] == specs.DiscreteArray(num_values=3, dtype=np.int32, name="b")
