"""tensor_spec_utils: TensorSpec bounds, checked against numpy's type ranges."""
import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_spec_utils
from dm_env_rpc_fast.v1 import tensor_utils

DT = dm_env_rpc_pb2.DataType
TensorSpec = dm_env_rpc_pb2.TensorSpec

NUMERIC_TYPES = [DT.FLOAT, DT.DOUBLE, DT.INT8, DT.INT32, DT.INT64, DT.UINT8, DT.UINT32,
                 DT.UINT64]


def spec(dtype, shape=(), name="s"):
  return TensorSpec(name=name, dtype=dtype, shape=list(shape))


@pytest.mark.parametrize("np_type", [np.float32, np.float64, np.int8, np.uint64, "int32"])
def test_np_range_info_matches_numpy(np_type):
  info = tensor_spec_utils.np_range_info(np_type)
  floating = np.issubdtype(np.dtype(np_type), np.floating)
  expected = np.finfo(np_type) if floating else np.iinfo(np_type)
  assert type(info) is type(expected)
  assert (info.min, info.max, info.dtype) == (expected.min, expected.max, expected.dtype)


@pytest.mark.parametrize("np_type", [np.bool_, np.str_, np.complex64, object])
def test_np_range_info_rejects_non_numeric(np_type):
  with pytest.raises(ValueError) as info:
    tensor_spec_utils.np_range_info(np_type)
  assert str(info.value) == f"{np.dtype(np_type)} does not have range info."


@pytest.mark.parametrize("data_type", NUMERIC_TYPES)
def test_bounds_default_to_dtype_range(data_type):
  np_type = tensor_utils.data_type_to_np_type(data_type)
  result = tensor_spec_utils.bounds(spec(data_type))
  info = tensor_spec_utils.np_range_info(np_type)
  assert result.min == info.min and result.max == info.max
  assert type(result.min) is np_type.type and type(result.max) is np_type.type


@pytest.mark.parametrize("data_type", NUMERIC_TYPES)
def test_set_bounds_then_bounds_round_trip(data_type):
  np_type = tensor_utils.data_type_to_np_type(data_type)
  tensor_spec = spec(data_type)
  # Bounds are range-checked by their own kind: float specs take float bounds.
  low, high = (1.0, 9.0) if np.issubdtype(np_type, np.floating) else (1, 9)
  tensor_spec_utils.set_bounds(tensor_spec, low, high)
  field = tensor_utils.get_packer(np_type).name
  assert tensor_spec.min.WhichOneof("payload") == field
  assert tensor_spec.max.WhichOneof("payload") == field
  result = tensor_spec_utils.bounds(tensor_spec)
  assert result == tensor_spec_utils.Bounds(np_type.type(1), np_type.type(9))
  assert type(result.min) is np_type.type


def test_array_bounds_round_trip():
  tensor_spec = spec(DT.INT32, (2, 2))
  minimum = np.array([[0, 1], [2, 3]])
  maximum = np.array([[5, 6], [7, 8]])
  tensor_spec_utils.set_bounds(tensor_spec, minimum, maximum)
  assert list(tensor_spec.min.int32s.array) == minimum.ravel().tolist()
  result = tensor_spec_utils.bounds(tensor_spec)
  np.testing.assert_array_equal(result.min, minimum)
  np.testing.assert_array_equal(result.max, maximum)
  assert result.min.dtype == np.int32 and result.min.shape == (2, 2)


def test_scalar_bound_on_array_spec_stays_scalar():
  tensor_spec = spec(DT.FLOAT, (3, 4))
  tensor_spec_utils.set_bounds(tensor_spec, -1.5, np.full((3, 4), 2.5))
  result = tensor_spec_utils.bounds(tensor_spec)
  assert np.ndim(result.min) == 0 and result.min == np.float32(-1.5)
  assert result.max.shape == (3, 4)


def test_set_bounds_none_clears_fields():
  tensor_spec = spec(DT.INT32)
  tensor_spec_utils.set_bounds(tensor_spec, 1, 2)
  tensor_spec_utils.set_bounds(tensor_spec, None, None)
  assert not tensor_spec.HasField("min") and not tensor_spec.HasField("max")
  tensor_spec_utils.set_bounds(tensor_spec, None, 5)
  assert not tensor_spec.HasField("min") and tensor_spec.HasField("max")
  assert tensor_spec_utils.bounds(tensor_spec).min == np.iinfo(np.int32).min


def test_set_bounds_again_appends_to_repeated_payloads():
  # As in dm-env-rpc: set_bounds packs into the existing field (repeated
  # payloads grow) rather than replacing it; clear first to replace.
  tensor_spec = spec(DT.INT32)
  tensor_spec_utils.set_bounds(tensor_spec, 1, 2)
  tensor_spec_utils.set_bounds(tensor_spec, None, 5)
  assert list(tensor_spec.max.int32s.array) == [2, 5]
  bytes_spec = spec(DT.UINT8)
  tensor_spec_utils.set_bounds(bytes_spec, 1, 2)
  tensor_spec_utils.set_bounds(bytes_spec, None, 5)
  assert bytes_spec.max.uint8s.array == bytes([5])


def test_integer_bounds_on_float_spec_raise():
  # As in dm-env-rpc: integer bounds are checked with np.iinfo of the spec's
  # (float) dtype, which numpy refuses.
  with pytest.raises(ValueError, match="Invalid integer data type"):
    tensor_spec_utils.set_bounds(spec(DT.FLOAT), 0, 1)


@pytest.mark.parametrize("data_type", [DT.BOOL, DT.STRING, DT.PROTO])
def test_non_numeric_specs_rejected(data_type):
  name = DT.Name(data_type).lower()
  with pytest.raises(ValueError) as info:
    tensor_spec_utils.bounds(spec(data_type, name="foo"))
  assert str(info.value) == f'TensorSpec "foo" has non-numeric type {name}.'
  np_type = tensor_utils.data_type_to_np_type(data_type)
  with pytest.raises(ValueError) as info:
    tensor_spec_utils.set_bounds(spec(data_type), 0, 1)
  assert str(info.value) == f'TensorSpec has non-numeric type "{np_type}".'


def test_invalid_data_type_raises_type_error():
  with pytest.raises(TypeError):
    tensor_spec_utils.bounds(spec(DT.INVALID_DATA_TYPE))
  with pytest.raises(TypeError):
    tensor_spec_utils.set_bounds(spec(DT.INVALID_DATA_TYPE), 0, 1)


@pytest.mark.parametrize("which", ["min", "max"])
def test_bound_payload_type_must_match_dtype(which):
  tensor_spec = spec(DT.INT32, name="foo")
  getattr(tensor_spec, which).floats.array[:] = [1.0]
  with pytest.raises(ValueError) as info:
    tensor_spec_utils.bounds(tensor_spec)
  assert str(info.value) == f'TensorSpec "foo" has dtype int32 but {which} type floats.'


def test_min_larger_than_max():
  tensor_spec = spec(DT.INT32, name="foo")
  with pytest.raises(ValueError, match='TensorSpec "foo" has min 5 larger than max 1.'):
    tensor_spec_utils.set_bounds(tensor_spec, 5, 1)
  tensor_spec.min.int32s.array[:] = [5]
  tensor_spec.max.int32s.array[:] = [1]
  with pytest.raises(ValueError, match='TensorSpec "foo" has min 5 larger than max 1.'):
    tensor_spec_utils.bounds(tensor_spec)


def test_partially_crossed_array_bounds():
  tensor_spec = spec(DT.DOUBLE, (2,))
  with pytest.raises(ValueError, match="larger than max"):
    tensor_spec_utils.set_bounds(tensor_spec, [0.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize("data_type,minimum,maximum", [
    (DT.INT8, -129, 0),
    (DT.UINT8, 0, 256),
    (DT.UINT64, -1, 3),
    (DT.INT64, 0, 2**63),
    (DT.FLOAT, 0.0, float(np.finfo(np.float64).max)),
    (DT.FLOAT, -1e39, 0.0),
    (DT.INT32, [0, -2**31 - 1], 3),
])
def test_unsafe_bounds_rejected(data_type, minimum, maximum):
  shape = (2,) if isinstance(minimum, list) else ()
  tensor_spec = spec(data_type, shape, name="foo")
  with pytest.raises(ValueError) as info:
    tensor_spec_utils.set_bounds(tensor_spec, minimum, maximum)
  assert str(info.value) == tensor_spec_utils._BOUNDS_CANNOT_BE_SAFELY_CAST_TO_DTYPE.format(
      name="foo", minimum=minimum, maximum=maximum, dtype=DT.Name(data_type))
  assert "cannot be safely cast to dtype" in str(info.value)


def test_unsafe_stored_bounds_rejected():
  # An int64 payload on an int64 spec is fine; the same numbers on float
  # bounds read back as float and are checked against float32's range.
  tensor_spec = spec(DT.FLOAT, name="foo")
  tensor_spec.max.floats.array[:] = [1.0]
  tensor_spec.min.doubles.array[:] = [-1e300]  # wrong payload type: reported first
  with pytest.raises(ValueError, match="min type doubles"):
    tensor_spec_utils.bounds(tensor_spec)


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_infinite_float_bounds_allowed(value):
  tensor_spec = spec(DT.FLOAT)
  minimum, maximum = (value, value) if value > 0 else (value, 0.0)
  tensor_spec_utils.set_bounds(tensor_spec, minimum, maximum)
  result = tensor_spec_utils.bounds(tensor_spec)
  assert result.min == np.float32(minimum)


def test_float32_limit_itself_is_allowed():
  limit = float(np.finfo(np.float32).max)
  tensor_spec = spec(DT.FLOAT)
  tensor_spec_utils.set_bounds(tensor_spec, -limit, limit)
  assert tensor_spec_utils.bounds(tensor_spec).max == np.finfo(np.float32).max


def test_bound_shape_must_match_spec():
  tensor_spec = spec(DT.INT32, (2, 2), name="foo")
  with pytest.raises(ValueError) as info:
    tensor_spec_utils.set_bounds(tensor_spec, [1, 2, 3], None)
  assert str(info.value) == (
      "minimum has shape (3,), which is incompatible with tensor_spec foo's shape [2, 2].")
  with pytest.raises(ValueError, match="maximum has shape"):
    tensor_spec_utils.set_bounds(tensor_spec, None, [1, 2, 3])


def test_variable_shape_allows_only_scalar_bounds():
  tensor_spec = spec(DT.INT32, (-1,))
  tensor_spec_utils.set_bounds(tensor_spec, 0, 3)
  assert tensor_spec_utils.bounds(tensor_spec).max == 3
  tensor_spec.max.int32s.array[:] = [3, 4]
  with pytest.raises(ValueError, match="variable length shapes can only have scalar ranges"):
    tensor_spec_utils.bounds(tensor_spec)


def test_stored_bound_with_wrong_element_count():
  tensor_spec = spec(DT.INT32, (2, 2))
  tensor_spec.max.int32s.array[:] = [1, 2, 3]
  with pytest.raises(ValueError, match="cannot reshape array"):
    tensor_spec_utils.bounds(tensor_spec)


def test_set_bounds_casts_to_spec_dtype():
  tensor_spec = spec(DT.UINT8, (2,))
  tensor_spec_utils.set_bounds(tensor_spec, np.array([1, 2], np.int64), 200)
  assert tensor_spec.min.uint8s.array == bytes([1, 2])
  assert tensor_spec.max.uint8s.array == bytes([200])


def test_bounds_dataclass():
  first = tensor_spec_utils.Bounds(1, 2)
  assert first.min == 1 and first.max == 2
  assert first == tensor_spec_utils.Bounds(1, 2)
  assert first != tensor_spec_utils.Bounds(1, 3)
