"""tensor_utils: pack/unpack through the codec, checked against protobuf-built Tensors."""
import numpy as np
import pytest
from google.protobuf import any_pb2
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

DT = dm_env_rpc_pb2.DataType
Tensor = dm_env_rpc_pb2.Tensor

# (numpy dtype, payload field, DataType)
NUMERIC = [
    (np.float32, "floats", DT.FLOAT),
    (np.float64, "doubles", DT.DOUBLE),
    (np.int8, "int8s", DT.INT8),
    (np.int32, "int32s", DT.INT32),
    (np.int64, "int64s", DT.INT64),
    (np.uint8, "uint8s", DT.UINT8),
    (np.uint32, "uint32s", DT.UINT32),
    (np.uint64, "uint64s", DT.UINT64),
    (np.bool_, "bools", DT.BOOL),
]
ALL = NUMERIC + [(np.str_, "strings", DT.STRING), (np.object_, "protos", DT.PROTO)]


def reference_tensor(array: np.ndarray, field: str) -> Tensor:
  """The Tensor protobuf itself builds for `array` in payload `field`."""
  tensor = Tensor()
  tensor.shape[:] = array.shape
  payload = getattr(tensor, field)
  if field in ("int8s", "uint8s"):
    payload.array = array.tobytes()
  else:
    payload.array.extend(array.ravel().tolist())
  return tensor


def sample(dtype, shape=(2, 3)):
  count = int(np.prod(shape))
  if dtype is np.bool_:
    return (np.arange(count) % 3 == 0).reshape(shape)
  info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
  values = np.linspace(-5, 5, count) if info is None else np.linspace(
      max(info.min, -100), min(info.max, 100), count)
  return values.astype(dtype).reshape(shape)


# ---------------------------------------------------------------------------
# pack_tensor

@pytest.mark.parametrize("dtype,field,_", NUMERIC)
def test_pack_matches_protobuf_reference(dtype, field, _):
  array = sample(dtype)
  packed = tensor_utils.pack_tensor(array)
  assert isinstance(packed, Tensor)
  assert packed.WhichOneof("payload") == field
  assert list(packed.shape) == [2, 3]
  assert packed == reference_tensor(array, field)


@pytest.mark.parametrize("dtype,field,_", NUMERIC)
def test_pack_extreme_values(dtype, field, _):
  if dtype is np.bool_:
    array = np.array([True, False])
  elif np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    array = np.array([info.min, info.max, 0], dtype)
  else:
    info = np.finfo(dtype)
    array = np.array([info.min, info.max, info.tiny, -0.0, np.inf, -np.inf], dtype)
  packed = tensor_utils.pack_tensor(array)
  assert packed == reference_tensor(array, field)
  np.testing.assert_array_equal(tensor_utils.unpack_tensor(packed), array)


def test_pack_scalars_have_empty_shape():
  for value, field in [(1, "int64s"), (1.5, "doubles"), (True, "bools"), ("hi", "strings"),
                       (np.float32(2), "floats"), (np.uint8(7), "uint8s")]:
    packed = tensor_utils.pack_tensor(value)
    assert list(packed.shape) == []
    assert packed.WhichOneof("payload") == field
    assert packed == reference_tensor(np.asarray(value), field)


def test_pack_nested_lists_row_major():
  packed = tensor_utils.pack_tensor([[1, 2], [3, 4], [5, 6]], dtype=np.int32)
  assert list(packed.shape) == [3, 2]
  assert list(packed.int32s.array) == [1, 2, 3, 4, 5, 6]


def test_pack_non_contiguous_and_big_endian_arrays():
  base = np.arange(24, dtype=np.int32).reshape(4, 6)
  view = base[::2, 1::2]
  assert not view.flags.c_contiguous
  assert tensor_utils.pack_tensor(view) == reference_tensor(np.ascontiguousarray(view), "int32s")
  swapped = np.arange(5, dtype=">f4")
  packed = tensor_utils.pack_tensor(swapped)
  assert packed.WhichOneof("payload") == "floats"
  assert list(packed.floats.array) == swapped.tolist()


def test_pack_empty_array_keeps_shape():
  packed = tensor_utils.pack_tensor(np.zeros((2, 0), np.float32))
  assert list(packed.shape) == [2, 0]
  assert packed.WhichOneof("payload") == "floats"
  assert len(packed.floats.array) == 0
  assert list(tensor_utils.pack_tensor(np.array([], dtype=object)).shape) == [0]


@pytest.mark.parametrize("dtype,field,data_type", NUMERIC)
def test_pack_with_dtype_casts_unsafely(dtype, field, data_type):
  value = [-1.7, 0.2, 300.9]
  with np.errstate(all="ignore"):
    expected = np.asarray(value).astype(dtype, casting="unsafe")
  for requested in (dtype, np.dtype(dtype), data_type):
    packed = tensor_utils.pack_tensor(value, dtype=requested)
    assert packed == reference_tensor(expected, field)


def test_pack_with_string_dtype_stringifies_numbers():
  packed = tensor_utils.pack_tensor([1, 2], dtype=np.str_)
  assert list(packed.strings.array) == ["1", "2"]
  packed = tensor_utils.pack_tensor(7, dtype=DT.STRING)
  assert list(packed.strings.array) == ["7"]


@pytest.mark.parametrize("dtype", [np.str_, DT.STRING, np.array(["foobar"]).dtype])
def test_pack_object_array_of_str_with_string_dtype(dtype):
  array = np.array(["foo", "barbaz"], dtype=object)
  packed = tensor_utils.pack_tensor(array, dtype=dtype)
  assert list(packed.strings.array) == ["foo", "barbaz"]
  assert list(packed.shape) == [2]


@pytest.mark.parametrize("items", [["foo", 42], [1, 2, 3]])
def test_pack_object_array_with_non_str_and_string_dtype_raises(items):
  with pytest.raises(TypeError, match="not all elements are Python string types") as info:
    tensor_utils.pack_tensor(np.array(items, dtype=object), dtype=np.str_)
  assert "<class 'int'>" in str(info.value)


def test_pack_object_array_ignores_non_string_dtype():
  # Object arrays are not cast to numeric dtypes: their items must be messages.
  with pytest.raises(ValueError, match="not recognized"):
    tensor_utils.pack_tensor(np.array([1, 2], dtype=object), dtype=np.int32)


def test_pack_object_array_of_str_without_dtype_raises():
  with pytest.raises(ValueError, match="Trying to pack an Any proto"):
    tensor_utils.pack_tensor(np.array(["foo"], dtype=object))


def test_pack_protos():
  messages = [struct_pb2.Value(string_value=s) for s in ("a", "b")]
  packed = tensor_utils.pack_tensor(messages)
  assert list(packed.shape) == [2]
  for packed_any, original in zip(packed.protos.array, messages):
    unpacked = struct_pb2.Value()
    assert packed_any.Unpack(unpacked)
    assert unpacked == original
  scalar = tensor_utils.pack_tensor(messages[0])
  assert list(scalar.shape) == []
  assert len(scalar.protos.array) == 1


def test_pack_any_is_not_wrapped_twice():
  inner = any_pb2.Any()
  inner.Pack(struct_pb2.Value(number_value=3))
  packed = tensor_utils.pack_tensor([inner])
  assert packed.protos.array[0] == inner


def test_pack_mixed_proto_array_raises():
  with pytest.raises(ValueError, match="not recognized") as info:
    tensor_utils.pack_tensor(np.array([struct_pb2.Value(), 1], dtype=object))
  assert "<class 'int'>" in str(info.value)


@pytest.mark.parametrize("value", [[[1, 2], [3, 4, 5]], object(), None])
def test_pack_unrepresentable_values_raise_value_error(value):
  with pytest.raises(ValueError):
    tensor_utils.pack_tensor(value)


def test_pack_mixed_scalar_types_with_float_dtype_raises():
  with pytest.raises(ValueError):
    tensor_utils.pack_tensor(["hello!", 75], dtype=np.float32)


@pytest.mark.parametrize("value,type_name", [
    (np.float16(1), "numpy.float16"),
    (np.zeros(2, np.complex64), "numpy.complex64"),
    (b"bytes", "numpy.bytes_"),
])
def test_pack_unsupported_dtype_raises_type_error(value, type_name):
  with pytest.raises(TypeError) as info:
    tensor_utils.pack_tensor(value)
  assert str(info.value) == f"Unknown NumPy type \"<class '{type_name}'>\" has no known packer."


def test_pack_to_unsupported_dtype_raises_type_error():
  with pytest.raises(TypeError, match="float16.*has no known packer"):
    tensor_utils.pack_tensor([1, 2], dtype=np.float16)


def test_pack_invalid_data_type_raises_type_error():
  with pytest.raises(TypeError):
    tensor_utils.pack_tensor([1, 2], dtype=DT.INVALID_DATA_TYPE)


@pytest.mark.parametrize("array", [
    np.full((2, 3), 7, np.int32), np.full(4, 1.5, np.float32), np.array(["x", "x"]),
    np.full((2, 2, 2), 3, np.uint8),
])
def test_try_compress_sends_one_element(array):
  packed = tensor_utils.pack_tensor(array, try_compress=True)
  assert list(packed.shape) == list(array.shape)
  field = packed.WhichOneof("payload")
  if field == "uint8s":
    assert len(packed.uint8s.array) == 1
  else:
    assert len(getattr(packed, field).array) == 1
  unpacked = tensor_utils.unpack_tensor(packed)
  np.testing.assert_array_equal(unpacked, array)
  assert unpacked.shape == array.shape


def test_try_compress_keeps_differing_elements_and_nans():
  array = np.array([[1, 2], [3, 4]], np.int64)
  assert tensor_utils.pack_tensor(array, try_compress=True) == reference_tensor(array, "int64s")
  nans = np.full(3, np.nan, np.float32)  # nan != nan: not compressible
  assert len(tensor_utils.pack_tensor(nans, try_compress=True).floats.array) == 3


def test_try_compress_off_by_default():
  array = np.zeros(5, np.float32)
  assert len(tensor_utils.pack_tensor(array).floats.array) == 5


def test_try_compress_on_empty_array_packs_it():
  # dm-env-rpc raises StopIteration here; we pack the empty array.
  packed = tensor_utils.pack_tensor(np.zeros((0, 3), np.float32), try_compress=True)
  assert list(packed.shape) == [0, 3]
  assert len(packed.floats.array) == 0


def test_pack_uses_the_codec(monkeypatch):
  calls = []
  real = codec.encode_tensor

  def spy(*args, **kwargs):
    calls.append(args)
    return real(*args, **kwargs)

  monkeypatch.setattr(codec, "encode_tensor", spy)
  tensor_utils.pack_tensor(np.zeros(3, np.float32))
  tensor_utils.pack_tensor([1, 2], dtype=DT.INT32, try_compress=True)
  assert len(calls) == 2


# ---------------------------------------------------------------------------
# unpack_tensor

@pytest.mark.parametrize("dtype,field,_", NUMERIC)
def test_unpack_reference_tensor(dtype, field, _):
  array = sample(dtype, (3, 2))
  unpacked = tensor_utils.unpack_tensor(reference_tensor(array, field))
  assert unpacked.dtype == np.dtype(dtype)
  assert unpacked.shape == (3, 2)
  np.testing.assert_array_equal(unpacked, array)
  # int8/uint8 are views of the message bytes, as in dm-env-rpc.
  assert unpacked.flags.writeable == (field not in ("int8s", "uint8s"))


@pytest.mark.parametrize("dtype,field,_", NUMERIC)
def test_unpack_scalar_gives_numpy_scalar(dtype, field, _):
  array = sample(dtype, (1,)).reshape(())
  unpacked = tensor_utils.unpack_tensor(reference_tensor(array, field))
  assert type(unpacked) is np.dtype(dtype).type
  assert unpacked == array[()]


def test_unpack_string_tensors():
  tensor = Tensor(strings=Tensor.StringArray(array=["a", "bcd", "é"]))
  tensor.shape[:] = [3]
  unpacked = tensor_utils.unpack_tensor(tensor)
  assert unpacked.dtype.kind == "U"
  assert unpacked.tolist() == ["a", "bcd", "é"]
  assert unpacked.flags.writeable
  scalar = tensor_utils.unpack_tensor(Tensor(strings=Tensor.StringArray(array=["x"])))
  assert type(scalar) is np.str_ and scalar == "x"


def test_unpack_proto_tensors():
  value = struct_pb2.Value(bool_value=True)
  packed = tensor_utils.pack_tensor([value, value])
  unpacked = tensor_utils.unpack_tensor(packed)
  assert unpacked.dtype == object and unpacked.shape == (2,)
  for item in unpacked:
    assert isinstance(item, any_pb2.Any)
    assert item == packed.protos.array[0]
  scalar = tensor_utils.unpack_tensor(tensor_utils.pack_tensor(value))
  assert isinstance(scalar, any_pb2.Any)


@pytest.mark.parametrize("shape,expected_shape", [([2, 3], (2, 3)), ([2, -1], (2, 1)),
                                                  ([0, 4], (1, 4)), ([-1], (1,))])
def test_unpack_broadcasts_single_element(shape, expected_shape):
  tensor = Tensor(int32s=Tensor.Int32Array(array=[9]))
  tensor.shape[:] = shape
  unpacked = tensor_utils.unpack_tensor(tensor)
  assert unpacked.shape == expected_shape
  assert unpacked.dtype == np.int32
  assert (unpacked == 9).all()
  assert unpacked.flags.writeable


def test_unpack_broadcast_uint8_is_writable():
  tensor = Tensor(uint8s=Tensor.Uint8Array(array=b"\x05"))
  tensor.shape[:] = [2, 2]
  unpacked = tensor_utils.unpack_tensor(tensor)
  assert unpacked.dtype == np.uint8 and unpacked.shape == (2, 2)
  assert unpacked.flags.writeable


def test_unpack_infers_negative_dimension():
  tensor = Tensor(floats=Tensor.FloatArray(array=range(6)))
  tensor.shape[:] = [-1, 3]
  assert tensor_utils.unpack_tensor(tensor).shape == (2, 3)


@pytest.mark.parametrize("count", [4, 10])
def test_unpack_wrong_element_count_raises_numpy_message(count):
  tensor = Tensor(floats=Tensor.FloatArray(array=range(count)))
  tensor.shape[:] = [2, 4]
  with pytest.raises(ValueError) as info:
    tensor_utils.unpack_tensor(tensor)
  with pytest.raises(ValueError) as numpy_info:
    np.zeros(count).shape = (2, 4)
  assert str(info.value) == str(numpy_info.value)


def test_unpack_two_unknown_dimensions_raises():
  tensor = Tensor(int32s=Tensor.Int32Array(array=range(6)))
  tensor.shape[:] = [-1, -2]
  with pytest.raises(ValueError, match="one unknown dimension"):
    tensor_utils.unpack_tensor(tensor)


@pytest.mark.parametrize("count", [0, 3])
def test_unpack_scalar_with_wrong_count_raises(count):
  tensor = Tensor(int32s=Tensor.Int32Array(array=range(count)))
  with pytest.raises(ValueError) as info:
    tensor_utils.unpack_tensor(tensor)
  assert str(info.value) == (
      f"Scalar tensors must have exactly 1 element but had {count} elements.")


def test_unpack_without_payload_raises_type_error():
  with pytest.raises(TypeError) as info:
    tensor_utils.unpack_tensor(Tensor(shape=[2]))
  assert str(info.value) == "Unknown NumPy type None"


def test_unpack_results_are_independent_of_the_message():
  tensor = tensor_utils.pack_tensor(np.arange(4, dtype=np.float64))
  unpacked = tensor_utils.unpack_tensor(tensor)
  unpacked[0] = 100
  assert tensor.doubles.array[0] == 0
  assert tensor_utils.unpack_tensor(tensor)[0] == 0


def test_unpack_uses_the_codec(monkeypatch):
  calls = []
  real = codec.decode_tensor

  def spy(buf, **kwargs):
    calls.append(bytes(buf))
    return real(buf, **kwargs)

  monkeypatch.setattr(codec, "decode_tensor", spy)
  tensor = tensor_utils.pack_tensor(np.ones(3, np.int32))
  tensor_utils.unpack_tensor(tensor)
  assert calls == [tensor.SerializeToString()]


@given(hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8,
                           np.uint32, np.uint64, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)))
def test_round_trip_property(array):
  field = dict((np.dtype(d), f) for d, f, _ in NUMERIC)[array.dtype]
  packed = tensor_utils.pack_tensor(array)
  assert packed.SerializeToString() == reference_tensor(array, field).SerializeToString()
  unpacked = tensor_utils.unpack_tensor(packed)
  if array.shape == ():
    assert type(unpacked) is array.dtype.type
  elif array.size == 1:
    assert unpacked.shape == array.shape  # broadcast back to the same shape
  else:
    assert unpacked.shape == array.shape
  np.testing.assert_array_equal(unpacked, array)
  assert np.asarray(unpacked).dtype == array.dtype


# ---------------------------------------------------------------------------
# Type mappings and packers

@pytest.mark.parametrize("dtype,field,data_type", ALL)
def test_type_mappings(dtype, field, data_type):
  assert tensor_utils.data_type_to_np_type(data_type) == np.dtype(dtype)
  assert tensor_utils.np_type_to_data_type(dtype) == data_type
  assert tensor_utils.np_type_to_data_type(np.dtype(dtype)) == data_type
  packer = tensor_utils.get_packer(dtype)
  assert isinstance(packer, tensor_utils.Packer)
  assert packer.name == field and packer.np_type == np.dtype(dtype)
  tensor = Tensor()
  getattr(tensor, field).SetInParent()
  assert tensor_utils.get_tensor_type(tensor) == np.dtype(dtype)


@pytest.mark.parametrize("value", [DT.INVALID_DATA_TYPE, 30, -1])
def test_data_type_to_np_type_unknown(value):
  with pytest.raises(TypeError, match=f"Unknown DataType {value}"):
    tensor_utils.data_type_to_np_type(value)


@pytest.mark.parametrize("np_type", [np.complex64, np.float16, np.dtype("<U5")])
def test_np_type_to_data_type_unknown(np_type):
  with pytest.raises(TypeError) as info:
    tensor_utils.np_type_to_data_type(np_type)
  assert str(info.value) == f'No dm_env_rpc DataType corresponds to NumPy type "{np_type}"'


def test_get_packer_unknown():
  with pytest.raises(TypeError) as info:
    tensor_utils.get_packer(np.complex64)
  assert str(info.value) == (
      "Unknown NumPy type \"<class 'numpy.complex64'>\" has no known packer.")


def test_get_tensor_type_without_payload():
  with pytest.raises(TypeError, match="Unknown NumPy type None"):
    tensor_utils.get_tensor_type(Tensor())


def test_packer_is_abstract():
  with pytest.raises(TypeError):
    tensor_utils.Packer("floats", np.dtype(np.float32))  # pytype: disable=not-instantiable


# TensorSpec.Value has every numeric payload but bools.
@pytest.mark.parametrize("dtype,field,message", [
    (dtype, field, message) for dtype, field, _ in NUMERIC
    for message in (Tensor, dm_env_rpc_pb2.TensorSpec.Value)
    if not (field == "bools" and message is not Tensor)])
def test_packer_appends_and_unpacks(dtype, field, message):
  packer = tensor_utils.get_packer(dtype)
  proto = message()
  first, second = sample(dtype, (2, 2)), sample(dtype, (3,))
  packer.pack(proto, first)
  if field not in ("int8s", "uint8s"):  # bytes payloads are replaced, not extended
    packer.pack(proto, second)
    expected = np.concatenate([first.ravel(), second])
  else:
    expected = first.ravel()
  assert proto.WhichOneof("payload") == field
  unpacked = packer.unpack(proto)
  assert unpacked.ndim == 1
  assert unpacked.dtype == np.dtype(dtype)
  np.testing.assert_array_equal(unpacked, expected)
  np.testing.assert_array_equal(tensor_utils.unpack_proto(proto), expected)


@pytest.mark.parametrize("dtype,field,_", NUMERIC)
def test_packer_single_and_empty_payloads(dtype, field, _):
  packer = tensor_utils.get_packer(dtype)
  message = Tensor if field == "bools" else dm_env_rpc_pb2.TensorSpec.Value
  one = message()
  packer.pack(one, np.asarray(sample(dtype, (1,))))
  assert packer.unpack(one).shape == (1,)
  empty = message()
  packer.pack(empty, np.zeros(0, dtype))
  assert empty.WhichOneof("payload") == field  # set, though empty
  assert packer.unpack(empty).shape == (0,)
  assert packer.unpack(empty).dtype == np.dtype(dtype)


def test_packer_with_other_element_type_uses_protobuf_conversion():
  packer = tensor_utils.get_packer(np.float32)
  proto = Tensor()
  packer.pack(proto, np.array([1, 2], np.int64))
  assert list(proto.floats.array) == [1.0, 2.0]
  with pytest.raises(TypeError):
    tensor_utils.get_packer(np.int32).pack(Tensor(), np.array([1.5]))


def test_string_and_proto_packers():
  strings = tensor_utils.get_packer(np.str_)
  proto = Tensor()
  strings.pack(proto, np.array([["a", "b"], ["c", "d"]]))
  assert strings.unpack(proto).tolist() == ["a", "b", "c", "d"]
  protos = tensor_utils.get_packer(object)
  proto = Tensor()
  protos.pack(proto, np.array([struct_pb2.Value(number_value=1)], dtype=object))
  assert protos.unpack(proto)[0].Is(struct_pb2.Value.DESCRIPTOR)
  with pytest.raises(ValueError, match="not recognized"):
    protos.pack(Tensor(), np.array([3], dtype=object))


def test_reshape_array_rules():
  array = np.arange(6)
  reshaped = tensor_utils.reshape_array(array, [2, 3])
  assert reshaped is array and reshaped.shape == (2, 3)
  filled = tensor_utils.reshape_array(np.array([4]), [0, -1, 2])
  assert filled.shape == (1, 1, 2) and (filled == 4).all()
  assert tensor_utils.reshape_array(np.array([5.0]), []) == 5.0
  with pytest.raises(ValueError, match="had 2 elements"):
    tensor_utils.reshape_array(np.array([1, 2]), [])
  with pytest.raises(ValueError, match="cannot reshape array"):
    tensor_utils.reshape_array(np.arange(5), [2, 3])
