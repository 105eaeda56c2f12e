"""encode_tensor: byte-identical to a Tensor built the dm-env-rpc way with our generated classes."""

import numpy as np
import pytest
from google.protobuf import any_pb2
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.codec_reference import (
    lfield, packed_varints, reference_bytes, reference_tensor, varint)
from support.strategies import F32_QUIET, NUMERIC, numeric_arrays, quiet_float32_nans

def assert_encodes_like_upstream(codec, value, dtype=None, try_compress=False):
  expected = reference_bytes(value, dtype, try_compress)
  got = codec.encode_tensor(value, dtype, try_compress)
  assert type(got) is bytes
  assert got == expected, f"\n ours {got.hex()}\n want {expected.hex()}"
  return got


@given(value=numeric_arrays())
def test_numeric_arrays_match_protobuf(codec, value):
  assert_encodes_like_upstream(codec, value)


@pytest.mark.parametrize("dtype", NUMERIC, ids=str)
@given(data=st.data())
def test_every_dtype_with_its_extremes(codec, dtype, data):
  """Each dtype alone, so every one is exercised at every example count."""
  if dtype.kind == "f":
    edges = [0.0, -0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).max, np.finfo(dtype).min,
             np.finfo(dtype).tiny, np.finfo(dtype).smallest_subnormal]
  elif dtype.kind == "b":
    edges = [False, True]
  else:
    info = np.iinfo(dtype)
    edges = [info.min, info.max, 0, 1, -1 if info.min < 0 else 1, info.min + 1, info.max - 1]
    edges += [v for v in (127, 128, 16383, 16384, 2**31, 2**35) if v <= info.max]
  extremes = np.array(edges, dtype)
  extra = data.draw(hnp.arrays(dtype, st.integers(0, 20)))
  value = quiet_float32_nans(np.concatenate([extremes, extra]))
  assert_encodes_like_upstream(codec, value)
  assert_encodes_like_upstream(codec, value[::-3])


@pytest.mark.parametrize("dtype", NUMERIC, ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (3, 0), (0, 5), (2, 0, 3), (1, 1, 1), (7,)],
                         ids=str)
def test_shapes_and_empty_payloads(codec, dtype, shape):
  value = np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)
  got = assert_encodes_like_upstream(codec, value)
  if value.size == 0:
    # A present but empty payload: "<payload tag> 00", then the shape.
    field = reference_tensor(value).WhichOneof("payload")
    number = pb.Tensor.DESCRIPTOR.fields_by_name[field].number
    assert got.startswith(bytes([number << 3 | 2, 0]))


def test_wire_layout_spelled_out(codec):
  """A few encodings written out by hand, so the reference itself is pinned down."""
  assert codec.encode_tensor(np.float32(1.0)) == bytes.fromhex("0a060a040000803f")
  assert codec.encode_tensor(np.zeros(0, np.float32)) == bytes.fromhex("0a007a0100")
  assert codec.encode_tensor(np.zeros(0, np.uint8)) == bytes.fromhex("32007a0100")
  assert codec.encode_tensor(np.array([-1], np.int32)) == (
      lfield(4, lfield(1, b"\xff" * 9 + b"\x01")) + lfield(15, b"\x01"))
  assert codec.encode_tensor(np.int8(-2)) == bytes.fromhex("1a030a01fe")
  assert codec.encode_tensor(np.array([True, False])) == bytes.fromhex("4a040a0201007a0102")
  assert codec.encode_tensor(np.zeros((2, 3, 0), np.uint64)) == bytes.fromhex("42007a03020300")


@pytest.mark.parametrize("dtype,n", [(np.float32, 100_003), (np.float64, 70_001),
                                     (np.int8, 300_001), (np.uint8, 200_000),
                                     (np.int32, 50_000), (np.int64, 50_000),
                                     (np.uint32, 50_000), (np.uint64, 50_000),
                                     (np.bool_, 150_000)], ids=str)
def test_big_arrays(codec, dtype, n):
  """Sizes past any GIL-release or bulk-copy threshold, in several layouts."""
  rng = np.random.default_rng(n)
  if np.dtype(dtype).kind == "f":
    value = rng.standard_normal(n).astype(dtype) * 1e6
  elif np.dtype(dtype).kind == "b":
    value = rng.integers(0, 2, n).astype(bool)
  else:
    value = rng.integers(0, 256, n * np.dtype(dtype).itemsize, np.uint8).view(dtype)
  assert_encodes_like_upstream(codec, value)
  assert_encodes_like_upstream(codec, value[1:].reshape(-1, 1)[::2])
  assert_encodes_like_upstream(codec, value.astype(np.dtype(dtype).newbyteorder(">")))
  square = value[: (int(np.sqrt(n)) ** 2)].reshape(int(np.sqrt(n)), -1)
  assert_encodes_like_upstream(codec, np.asfortranarray(square))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64], ids=str)
@pytest.mark.parametrize("n", [1, 255, 256, 257, 513, 70_000])
@pytest.mark.parametrize("where", [None, "first", "block_end", "last"])
def test_one_byte_varint_arrays_and_a_longer_one_anywhere(codec, dtype, n, where):
  """All values below 0x80 (one byte each on the wire), or all but one that is longer:
  first, at the end of a 256-element block, or last."""
  value = (np.arange(n) % 128).astype(dtype)
  if where is not None:
    index = {"first": 0, "block_end": min(n, 256) - 1, "last": n - 1}[where]
    value[index] = 128 if index % 2 else np.iinfo(dtype).max
    if np.dtype(dtype).kind == "i" and index % 3 == 0:
      value[index] = -1
  assert_encodes_like_upstream(codec, value)


def test_bool_bytes_other_than_0_and_1_are_normalised(codec):
  value = np.array([0, 1, 2, 127, 128, 255, 0, 64], np.uint8).view(bool)
  got = assert_encodes_like_upstream(codec, value)
  assert lfield(1, bytes([0, 1, 1, 1, 1, 1, 0, 1])) in got
  big = np.tile(np.arange(256, dtype=np.uint8), 1000).view(bool)
  assert_encodes_like_upstream(codec, big)
  assert_encodes_like_upstream(codec, big.reshape(16, -1).T)


def test_negative_ints_are_ten_byte_varints(codec):
  for dtype in (np.int32, np.int64):
    got = assert_encodes_like_upstream(codec, np.array([-1, np.iinfo(dtype).min], dtype))
    assert varint(-1) in got and len(varint(np.iinfo(dtype).min)) == 10


@given(st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.integers(2**63, 2**64 - 1),
    st.floats(),
    st.booleans(),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
    st.lists(st.floats(), max_size=8),
    st.lists(st.booleans(), max_size=8),
    st.lists(st.lists(st.floats(allow_nan=False), min_size=3, max_size=3), max_size=4),
    st.sampled_from([np.float32(-0.0), np.int8(-128), np.uint64(2**64 - 1), np.bool_(True),
                     np.int32(-(2**31)), np.float64("nan")]),
))
def test_python_values_and_numpy_scalars(codec, value):
  if isinstance(value, np.float32):
    value = quiet_float32_nans(np.asarray(value))[()]
  assert_encodes_like_upstream(codec, value)


@pytest.mark.parametrize("dtype", [
    np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint32, np.uint64,
    np.bool_, "float32", "<f8", ">i4", ">u4",
    pb.DataType.FLOAT, pb.DataType.DOUBLE, pb.DataType.INT8, pb.DataType.INT32,
    pb.DataType.INT64, pb.DataType.UINT8, pb.DataType.UINT32, pb.DataType.UINT64,
    pb.DataType.BOOL, 1, 9], ids=repr)
@given(source=st.one_of(
    hnp.arrays(np.int64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5)),
    hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
               elements=st.floats(-200, 200)),
    hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)),
    hnp.arrays(np.bool_, hnp.array_shapes(min_dims=1, max_dims=2, max_side=5)),
))
def test_dtype_argument_casts_unsafely(codec, dtype, source):
  got = assert_encodes_like_upstream(codec, source, dtype)
  # The payload field is the one the requested dtype names.
  wanted = np.dtype(dtype) if not isinstance(dtype, int) else None
  number = dtype if isinstance(dtype, int) else {
      "f": {4: 1, 8: 2}, "i": {1: 3, 4: 4, 8: 5}, "u": {1: 6, 4: 7, 8: 8},
      "b": {1: 9}}[wanted.kind][wanted.itemsize]
  assert got[0] == (number << 3 | 2)


def test_dtype_argument_casts_python_lists(codec):
  assert_encodes_like_upstream(codec, [1.9, -2.9, 3.5], np.int32)
  assert_encodes_like_upstream(codec, [1, 2, 3], pb.DataType.FLOAT)
  assert_encodes_like_upstream(codec, [], pb.DataType.UINT8)
  assert_encodes_like_upstream(codec, [], np.float32)
  assert_encodes_like_upstream(codec, 300, np.uint8)
  assert_encodes_like_upstream(codec, [0, 2, -1], bool)


TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=12)


@given(strings=st.lists(TEXT, max_size=8), as_object=st.booleans(), dtype=st.sampled_from(
    [None, str, np.str_, pb.DataType.STRING]))
def test_strings(codec, strings, as_object, dtype):
  if as_object:
    value = np.empty(len(strings), object)
    value[:] = strings
    if dtype is None:  # an object array without a string dtype is a proto payload
      dtype = str
  else:
    value = np.array(strings, dtype=str)
  got = assert_encodes_like_upstream(codec, value, dtype)
  assert got[0] == (10 << 3 | 2)


def test_string_scalars_and_unicode(codec):
  for value in ["", "abc", "héllo wörld", "日本語", "🙂🚀", "a\u0000b", "\U0010ffff"]:
    got = assert_encodes_like_upstream(codec, value)
    assert value.encode() in got
  assert_encodes_like_upstream(codec, np.array([["ab", "ç"], ["🙂", ""]]))
  assert_encodes_like_upstream(codec, np.array(["x", "yy", "zzz"])[::-1])
  assert_encodes_like_upstream(codec, ["a", "b"], pb.DataType.STRING)


def test_protos(codec):
  step = pb.StepRequest(requested_observations=[1, 2, 2**64 - 1])
  tensor = pb.Tensor(shape=[2])
  tensor.floats.array.extend([1.5, -2.0])
  packed = any_pb2.Any()
  packed.Pack(pb.CreateWorldResponse(world_name="wörld"))
  for value in (step, packed, [step, tensor], [packed, tensor, step], [[step], [packed]]):
    got = assert_encodes_like_upstream(codec, value)
    assert got[0] == (11 << 3 | 2)
  array = np.empty((2, 2), object)
  array[:] = [[step, packed], [tensor, pb.Tensor()]]
  assert_encodes_like_upstream(codec, array)
  assert_encodes_like_upstream(codec, array, pb.DataType.PROTO)


@pytest.mark.parametrize("value", [
    np.zeros(3, np.float16), np.zeros((2, 2), np.complex64), np.array(1 + 2j),
    np.array([b"ab", b"c"]), np.zeros(2, "datetime64[s]"), np.zeros(2, np.int16),
    np.zeros(2, np.uint16), np.float16(1.0), np.zeros(2, np.longdouble)],
    ids=lambda v: str(np.asarray(v).dtype))
def test_unsupported_dtypes_are_type_errors(codec, value):
  with pytest.raises(TypeError):
    reference_bytes(value)
  with pytest.raises(TypeError):
    codec.encode_tensor(value)


@pytest.mark.parametrize("dtype", [np.float16, np.complex128, "S3", np.int16, 0, 12, 99],
                         ids=repr)
def test_unsupported_dtype_argument_is_a_type_error(codec, dtype):
  with pytest.raises(TypeError):
    codec.encode_tensor([1, 2, 3], dtype)


def test_object_array_with_non_str_under_string_dtype(codec):
  for bad in (["a", 1], ["a", b"b"], [None], ["x", pb.Tensor()]):
    value = np.empty(len(bad), object)
    value[:] = bad
    for dtype in (str, np.str_, pb.DataType.STRING):
      with pytest.raises(TypeError):
        codec.encode_tensor(value, dtype)


def test_values_that_are_not_messages_cannot_be_protos(codec):
  with pytest.raises(ValueError):
    codec.encode_tensor(2**70)
  with pytest.raises(ValueError):
    codec.encode_tensor(np.array([1, "a", None], object))


def test_shape_dims_must_fit_int32(codec):
  ok = np.empty((2**31 - 1, 0), np.float32)
  assert_encodes_like_upstream(codec, ok)
  for shape in [(2**31, 0), (0, 2**31), (0, 2**40)]:
    value = np.empty(shape, np.float32)
    with pytest.raises(ValueError):
      reference_bytes(value)
    with pytest.raises(ValueError):
      codec.encode_tensor(value)


@given(value=numeric_arrays(), data=st.data())
def test_try_compress(codec, value, data):
  assert_encodes_like_upstream(codec, value, try_compress=True)
  if value.size:
    filled = np.full((data.draw(st.integers(1, 5)), 3), value.flat[0])
    got = assert_encodes_like_upstream(codec, filled, try_compress=True)
    is_nan = filled.dtype.kind == "f" and bool(np.isnan(filled.flat[0]))
    if not is_nan:  # NaN != NaN, so a NaN fill is never compressed
      single = codec.encode_tensor(filled.reshape(-1)[0])
      assert got == single + lfield(15, packed_varints(filled.shape))


def test_try_compress_spelled_out(codec):
  got = codec.encode_tensor(np.full((2, 3), 7, np.int32), try_compress=True)
  assert got == lfield(4, lfield(1, b"\x07")) + lfield(15, b"\x02\x03")
  got = codec.encode_tensor(np.array([1, 2], np.int32), try_compress=True)
  assert got == lfield(4, lfield(1, b"\x01\x02")) + lfield(15, b"\x02")
  got = codec.encode_tensor(np.array(["a", "a", "a"]), try_compress=True)
  assert got == reference_bytes(np.array(["a", "a", "a"]), None, True)
  assert got.count(b"a") == 1


def test_float32_signalling_nan_keeps_its_bits(codec):
  """Deliberate difference from upstream, whose tolist() path quiets signalling NaNs."""
  bits = np.array([0x7F800001, 0xFFA00000, 0x7FC00000], np.uint32)
  value = bits.view(np.float32)
  got = codec.encode_tensor(value)
  assert got == lfield(1, lfield(1, bits.astype("<u4").tobytes())) + lfield(15, b"\x03")
  upstream = reference_bytes(value)
  assert upstream != got  # the float->double->float round trip set the quiet bit
  assert upstream == lfield(1, lfield(1, (bits | F32_QUIET).astype("<u4").tobytes())) + (
      lfield(15, b"\x03"))
  decoded = codec.decode_tensor(got)
  assert np.array_equal(decoded.view(np.uint32), bits)


class _Sub(np.ndarray):
  """An ndarray subclass (as numpy users sometimes pass)."""


def _odd_values():
  ro = np.arange(6, dtype=np.float32).reshape(2, 3)
  ro.flags.writeable = False
  neg = np.arange(12, dtype=np.int64).reshape(3, 4)[::-1, ::-2]
  return {
      "longlong": np.array([1, -2], np.longlong), "ulonglong": np.array([1, 2], np.ulonglong),
      "intc": np.array([3], np.intc), "uintc": np.array([3], np.uintc),
      "long": np.array([-9], np.dtype("l")), "longlong_scalar": np.longlong(-5),
      "python_int_below_int64": -(2**63) - 1, "python_int_2_64": 2**64,
      "mixed_big_ints": [2**63, -1], "mixed_bool_int": [True, 2], "mixed_int_float": [1, 2.5],
      "python_bool": True, "python_float": -0.0, "python_int_zero": 0,
      "nested_tuples": ((1, 2), (3, 4)), "empty_list": [], "empty_nested": [[], []],
      "read_only": ro, "negative_strides": neg, "subclass": np.arange(4).view(_Sub),
      "matrix_like_2d_scalar": np.array([[7]], np.uint32), "zero_d_array": np.array(3, np.int8),
      "zero_d_bigendian": np.array(3.5, ">f8"), "bool_scalar": np.bool_(False),
      "structured": np.zeros(2, [("a", "<i4")]), "void": np.zeros(2, "V4"),
      "jagged": np.array([[1, 2], [3]], dtype=object), "none": None,
      "str_and_int_list": ["a", 1], "bytes_scalar": b"ab", "unicode_array_2d": np.array([["x"]]),
      "float_list_with_nan": [float("nan"), 1.0], "uint64_max": np.uint64(2**64 - 1),
  }


ODD = _odd_values()


@pytest.mark.parametrize("name", sorted(ODD))
@pytest.mark.parametrize("try_compress", [False, True], ids=["plain", "compress"])
def test_odd_inputs_like_upstream(codec, name, try_compress):
  """Unusual values: our bytes, or our exception type, are upstream's."""
  value = ODD[name]
  try:
    expected = reference_bytes(value, None, try_compress)
  except Exception as e:  # upstream's failure type is the one to match
    with pytest.raises(type(e)):
      codec.encode_tensor(value, None, try_compress)
    return
  assert codec.encode_tensor(value, None, try_compress) == expected


def _object_array(items):
  out = np.empty(len(items), object)
  out[:] = items
  return out


DTYPE_PAIRS = {
    "object_floats_as_float32": (_object_array([1.0, 2.0]), np.float32),
    "object_strs_as_int32": (_object_array(["1", "2"]), np.int32),
    "object_strs_as_U5": (_object_array(["ab", "c"]), "U5"),
    "str_numbers_as_float32": (np.array(["1.5", "-2"]), np.float32),
    "str_words_as_int32": (np.array(["abc"]), np.int32),
    "str_list_as_INT64": (["7", "8"], pb.DataType.INT64),
    "ints_as_object": (np.arange(3), object),
    "ints_as_PROTO": (np.arange(3), pb.DataType.PROTO),
    "ints_as_U3": (np.array([1, 22]), "U3"),
    "ints_as_STRING": (np.array([1, 22]), pb.DataType.STRING),
    "bools_as_STRING": ([True], pb.DataType.STRING),
    "float_scalar_as_uint64": (3.99, np.uint64),
    "messages_as_PROTO": ([pb.Tensor(), pb.Tensor(shape=[1])], pb.DataType.PROTO),
    "same_messages_compressed": ([pb.Tensor(shape=[2])] * 3, None),
    "same_strings_compressed": (["ab"] * 4, None),
    "same_strings_as_object_compressed": (_object_array(["ab"] * 4), str),
    "datatype_numpy_int": (np.arange(3), np.int64(4)),
    "datatype_numpy_uint8": (np.arange(3), np.uint8(6)),
}


@pytest.mark.parametrize("name", sorted(DTYPE_PAIRS))
@pytest.mark.parametrize("try_compress", [False, True], ids=["plain", "compress"])
def test_dtype_argument_edge_cases_like_upstream(codec, name, try_compress):
  value, dtype = DTYPE_PAIRS[name]
  try:
    expected = reference_bytes(value, dtype, try_compress)
  except Exception as e:
    with pytest.raises(type(e)):
      codec.encode_tensor(value, dtype, try_compress)
    return
  assert codec.encode_tensor(value, dtype, try_compress) == expected
