"""decode_tensor: upstream's unpack_tensor results (values, dtypes, shapes, scalars), our writability rules."""

import array as pyarray

import numpy as np
import pytest
from google.protobuf import any_pb2
from hypothesis import given, strategies as st

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.codec_reference import (
    NUMERIC_DTYPES, PAYLOAD_FIELDS, Raises, assert_same_decoded, check_against_upstream,
    check_decode, compare_tensor, expect_tensor, expected_writeable, lfield, reference_bytes,
    reference_tensor, reference_unpack, tensor_bytes, vfield)
from support.strategies import numeric_arrays

NUMERIC_NAMES = list(NUMERIC_DTYPES)


@given(value=numeric_arrays(), zero_copy=st.booleans())
def test_round_trip_numeric(codec, value, zero_copy):
  buf = reference_bytes(value)
  expected = check_against_upstream(codec, buf, zero_copy)
  decoded = codec.decode_tensor(codec.encode_tensor(value), zero_copy=zero_copy)
  assert_same_decoded(decoded, expected)
  native = np.asarray(value).astype(np.asarray(value).dtype.newbyteorder("="))
  if native.ndim == 0:
    assert type(decoded) is native.dtype.type
    assert_same_decoded(decoded, native[()])
  elif native.size == 1:
    assert_same_decoded(decoded, native)
  else:
    assert_same_decoded(decoded, np.ascontiguousarray(native))


@pytest.mark.parametrize("name", NUMERIC_NAMES)
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
@pytest.mark.parametrize("values,shape", [
    ([], [0]), ([], [2, 0]), ([], [0, -1]), ([], [-1, 0]), ([], [-1, 3]), ([], []),
    ([1], []), ([1], [1]), ([1], [2, 3]), ([1], [0, 3]), ([1], [-1, 2]), ([1], [-5, 0]),
    ([1], [0]), ([1], [-1]), ([1, 0], []), ([1, 0], [2]), ([1, 0], [1, 2]), ([1, 0], [-1]),
    ([1, 0, 1, 1, 0, 1], [2, 3]), ([1, 0, 1, 1, 0, 1], [-1, 3]), ([1, 0, 1, 1, 0, 1], [3, -1]),
    ([1, 0, 1, 1, 0, 1], [2, -1, 1]), ([1, 0, 1, 1, 0, 1], [4, -1]),
    ([1, 0, 1, 1, 0, 1], [-1, -1]), ([1, 0, 1, 1, 0, 1], [-2, -3]),
    ([1, 0, 1, 1, 0, 1], [7]), ([1, 0, 1, 1, 0, 1], [0, -1]), ([1, 0, 1, 1, 0], [2, 3]),
], ids=str)
def test_shape_rules(codec, name, zero_copy, values, shape):
  buf = tensor_bytes(name, values, shape)
  check_against_upstream(codec, buf, zero_copy)


def test_shape_rules_spelled_out(codec):
  """The rules restated as literal results, so the reference cannot drift with them."""
  out = codec.decode_tensor(tensor_bytes("floats", [2.5], [0, 3]))
  assert out.shape == (1, 3) and out.dtype == np.float32 and (out == 2.5).all()
  assert out.flags.writeable
  out = codec.decode_tensor(tensor_bytes("int32s", [1, 2, 3, 4, 5, 6], [-1, 2]))
  assert out.shape == (3, 2) and out.dtype == np.int32 and out[2, 1] == 6
  out = codec.decode_tensor(tensor_bytes("uint8s", [9], [2, -1, 3]))
  assert out.shape == (2, 1, 3) and (out == 9).all() and out.flags.writeable
  out = codec.decode_tensor(tensor_bytes("doubles", [7.0], []))
  assert type(out) is np.float64 and out == 7.0
  with pytest.raises(ValueError):
    codec.decode_tensor(tensor_bytes("floats", [1, 2, 3], [2, 2]))
  with pytest.raises(ValueError):
    codec.decode_tensor(tensor_bytes("int64s", [1, 2], []))
  with pytest.raises(ValueError):
    codec.decode_tensor(tensor_bytes("int8s", [], []))
  with pytest.raises(TypeError):
    codec.decode_tensor(b"")
  with pytest.raises(TypeError):
    codec.decode_tensor(lfield(15, b"\x02\x03"))


@given(name=st.sampled_from(NUMERIC_NAMES), count=st.integers(0, 7),
       shape=st.lists(st.integers(-1, 4), max_size=4), zero_copy=st.booleans())
def test_shape_rules_random(codec, name, count, shape, zero_copy):
  values = [(i * 37) % 100 for i in range(count)]
  check_against_upstream(codec, tensor_bytes(name, values, shape), zero_copy)


@pytest.mark.parametrize("values,shape,result", [
    ([1, 2, 3, 4, 5, 6], [-2, 3], (2, 3)),
    ([1, 2, 3, 4, 5, 6], [3, -7], (3, 2)),
    ([], [-7], (0,)),
    ([], [-5, 3], (0, 3)),
    ([1, 2, 3, 4, 5, 6], [-2, -1], None),  # two unknown dimensions
])
def test_dims_below_minus_one_are_unknown_like_minus_one(codec, values, shape, result):
  """Upstream reshapes with numpy, which takes ANY negative dimension as the unknown one."""
  buf = tensor_bytes("int32s", values, shape)
  if result is None:
    with pytest.raises(ValueError):
      reference_unpack(pb.Tensor.FromString(buf))
    expected = Raises((ValueError,))
  else:
    expected = reference_unpack(pb.Tensor.FromString(buf))
    assert expected.shape == result
  check_decode(lambda: codec.decode_tensor(buf), expected, compare_tensor)


@pytest.mark.parametrize("name", NUMERIC_NAMES)
def test_scalars_are_numpy_scalars(codec, name):
  dtype = NUMERIC_DTYPES[name]
  value = np.array(1, dtype)[()]
  out = codec.decode_tensor(reference_bytes(value))
  assert type(out) is dtype.type and not isinstance(out, np.ndarray)
  assert out == value
  for zero_copy in (False, True):
    assert type(codec.decode_tensor(tensor_bytes(name, [0]), zero_copy=zero_copy)) is dtype.type


@pytest.mark.parametrize("name", NUMERIC_NAMES)
def test_dtypes_are_upstreams(codec, name):
  out = codec.decode_tensor(tensor_bytes(name, [1, 0, 1], [3]))
  assert out.dtype == NUMERIC_DTYPES[name]
  assert out.dtype.isnative


@pytest.mark.parametrize("name", NUMERIC_NAMES)
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_writability_rules(codec, name, zero_copy):
  """int8/uint8 views are read-only; floats/doubles read-only iff zero_copy; others writable."""
  out = codec.decode_tensor(tensor_bytes(name, [1, 0, 1, 1], [2, 2]), zero_copy=zero_copy)
  expected = {"int8s": False, "uint8s": False,
              "floats": not zero_copy, "doubles": not zero_copy}.get(name, True)
  assert out.flags.writeable == expected
  if expected:
    out[0, 0] = 0  # really writable, and a fresh array
    assert out[0, 0] == 0
  else:
    with pytest.raises(ValueError):
      out[0, 0] = 0
  broadcast = codec.decode_tensor(tensor_bytes(name, [1], [2, 2]), zero_copy=zero_copy)
  assert broadcast.flags.writeable and broadcast.flags.owndata


@pytest.mark.parametrize("make", [
    bytes, bytearray, memoryview, lambda b: np.frombuffer(b, np.uint8).copy(),
    lambda b: pyarray.array("B", b), lambda b: memoryview(b"\x00\x01" + b + b"\x02")[2:-1],
    lambda b: memoryview(bytearray(b)).cast("B"),
], ids=["bytes", "bytearray", "memoryview", "ndarray", "array", "offset_slice", "cast"])
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_buffer_types(codec, make, zero_copy):
  for name in NUMERIC_NAMES:
    raw = tensor_bytes(name, [1, 0, 1, 1, 1, 0], [3, 2])
    expected = reference_unpack(pb.Tensor.FromString(raw))
    out = codec.decode_tensor(make(raw), zero_copy=zero_copy)
    assert_same_decoded(out, expected, writeable=expected_writeable(name, 6, [3, 2], zero_copy))
  for value in (np.array(["ab", "ç"]), "x"):
    raw = reference_bytes(value)
    assert_same_decoded(codec.decode_tensor(make(raw), zero_copy=zero_copy),
                        reference_unpack(pb.Tensor.FromString(raw)))


@pytest.mark.parametrize("name", ["floats", "doubles", "int32s", "uint64s", "bools", "int8s"])
def test_int8_views_from_writable_buffers_are_still_read_only(codec, name):
  raw = bytearray(tensor_bytes(name, [1, 2, 3], [3]))
  for zero_copy in (False, True):
    out = codec.decode_tensor(raw, zero_copy=zero_copy)
    want = expected_writeable(name, 3, [3], zero_copy)
    assert out.flags.writeable == want


TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=10)


@given(strings=st.lists(TEXT, max_size=6), data=st.data())
def test_strings(codec, strings, data):
  value = np.array(strings, dtype=str)
  if value.size == 6 and data.draw(st.booleans()):
    value = value.reshape(2, 3)
  buf = reference_bytes(value)
  expected = check_against_upstream(codec, buf)
  if value.size:
    assert_same_decoded(codec.decode_tensor(codec.encode_tensor(value)), expected)
    assert np.array_equal(expected, value) or value.size == 1


def test_string_scalars_and_shapes(codec):
  for value in ["", "abc", "日本語🙂"]:
    out = codec.decode_tensor(codec.encode_tensor(value))
    assert type(out) is np.str_ and out == value
  check_against_upstream(codec, lfield(10, lfield(1, b"a")) + lfield(15, b"\x02\x02"))
  check_against_upstream(codec, lfield(10, b"") + lfield(15, b"\x00"))
  check_against_upstream(codec, lfield(10, lfield(1, b"a") + lfield(1, b"bc")) + lfield(15, b"\x03"))
  with pytest.raises(ValueError):
    codec.decode_tensor(lfield(10, lfield(1, b"\xff")))  # not UTF-8: protobuf rejects it
  with pytest.raises(TypeError):
    codec.decode_tensor(lfield(15, b"\x01"))


def test_protos(codec):
  step = pb.StepRequest(requested_observations=[3, 2**64 - 1])
  packed = any_pb2.Any()
  packed.Pack(pb.CreateWorldResponse(world_name="w"))
  for value in ([step, packed], [[step], [packed]], step, packed):
    buf = reference_bytes(value)
    expected = check_against_upstream(codec, buf)
    out = codec.decode_tensor(buf)
    if isinstance(expected, np.ndarray):
      assert out.dtype == object and all(type(x) is any_pb2.Any for x in out.flat)
    else:
      assert type(out) is any_pb2.Any
      unpacked = type(value)() if not isinstance(value, any_pb2.Any) else None
      if unpacked is not None:
        assert out.Unpack(unpacked) and unpacked == value
      else:
        assert out == packed


@pytest.mark.parametrize("name", NUMERIC_NAMES)
def test_large_tensors(codec, name):
  dtype = NUMERIC_DTYPES[name]
  rng = np.random.default_rng(7)
  n = 300_000 if dtype.itemsize == 1 else 70_000
  if dtype.kind == "b":
    value = rng.integers(0, 2, n).astype(bool)
  else:
    value = rng.integers(0, 256, n * dtype.itemsize, np.uint8).view(dtype)
    if dtype.kind == "f":
      value = np.where(np.isnan(value), 0, value).astype(dtype)
  value = value.reshape(-1, 10)
  buf = codec.encode_tensor(value)
  for zero_copy in (False, True):
    out = codec.decode_tensor(buf, zero_copy=zero_copy)
    assert_same_decoded(out, value, writeable=expected_writeable(name, n, [n // 10, 10],
                                                                 zero_copy))


@pytest.mark.parametrize("shape", [(16384,), (20000,), (3, 20000), (20000, 3), (130, 140),
                                   (2**21 - 1,), (2**21,), (5, 200, 30)], ids=str)
@pytest.mark.parametrize("name", ["uint8s", "floats", "int32s"])
def test_multi_byte_lengths_and_dimensions(codec, name, shape):
  """Lengths and dimensions of two, three and four bytes, alone or beside others."""
  dtype = NUMERIC_DTYPES[name]
  value = (np.arange(int(np.prod(shape))) % 120).astype(dtype).reshape(shape)
  message = pb.Tensor(shape=shape)
  if dtype.itemsize == 1:
    getattr(message, name).array = value.tobytes()
  else:
    getattr(message, name).array.extend(value.ravel().tolist())
  buf = message.SerializeToString()
  assert codec.encode_tensor(value) == buf
  out = codec.decode_tensor(buf)
  assert out.shape == shape and out.dtype == dtype
  np.testing.assert_array_equal(out, value)


def test_no_payload_is_a_type_error(codec):
  for buf in (b"", lfield(15, b"\x01\x02"), vfield(20, 1), lfield(15, b"")):
    with pytest.raises(TypeError):
      codec.decode_tensor(buf)
    assert isinstance(expect_tensor(buf), Raises)


def test_payload_field_numbers_match_datatypes():
  """The reference's field table is the proto's (guards the test helpers themselves)."""
  fields = pb.Tensor.DESCRIPTOR.fields_by_name
  for name, number in PAYLOAD_FIELDS.items():
    assert fields[name].number == number == pb.DataType.Value(
        {"floats": "FLOAT", "doubles": "DOUBLE", "int8s": "INT8", "int32s": "INT32",
         "int64s": "INT64", "uint8s": "UINT8", "uint32s": "UINT32", "uint64s": "UINT64",
         "bools": "BOOL", "strings": "STRING", "protos": "PROTO"}[name])
  assert fields["shape"].number == 15
  assert reference_tensor(np.zeros(2, np.int8)).WhichOneof("payload") == "int8s"


def test_signatures(codec):
  """The six functions and their keyword-only zero_copy, as the codec API documents them."""
  import inspect
  for name in ("decode_tensor", "decode_step_request", "decode_step_response"):
    parameters = inspect.signature(getattr(codec, name)).parameters
    assert parameters["zero_copy"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["zero_copy"].default is False
    with pytest.raises(TypeError):
      getattr(codec, name)(b"", True)
  parameters = inspect.signature(codec.encode_tensor).parameters
  assert list(parameters)[:3] == ["value", "dtype", "try_compress"]
  assert codec.encode_tensor(value=[1.5], dtype=np.float32, try_compress=True) == (
      reference_bytes([1.5], np.float32))
  for name in ("encode_tensor", "decode_tensor", "encode_step_request", "decode_step_request",
               "encode_step_response", "decode_step_response"):
    doc = getattr(codec, name).__doc__ or ""
    assert "Args:" in doc and "Returns:" in doc, f"{codec.NAME}.{name}: Google-style docstring"


def test_concurrent_use(codec):
  """Big tensors (past any GIL-release threshold) from several threads at once."""
  from concurrent.futures import ThreadPoolExecutor
  rng = np.random.default_rng(3)
  values = [rng.standard_normal((256, 300)).astype(np.float32),
            rng.integers(-(2**40), 2**40, 40_000),
            rng.integers(0, 255, 300_000).astype(np.uint8),
            rng.integers(0, 2, 200_000).astype(bool)]
  encoded = [codec.encode_tensor(v) for v in values]

  def work(i):
    v = values[i % len(values)]
    buf = codec.encode_tensor(v)
    out = codec.decode_tensor(buf, zero_copy=bool(i % 2))
    return buf == encoded[i % len(values)] and np.array_equal(out, v)

  with ThreadPoolExecutor(4) as pool:
    assert all(pool.map(work, range(24)))


@pytest.mark.parametrize("buf", ["abc", 5, None, 1.5, [1, 2]], ids=repr)
def test_non_buffers_are_type_errors(codec, buf):
  for name in ("decode_tensor", "decode_step_request", "decode_step_response"):
    with pytest.raises(TypeError):
      getattr(codec, name)(buf)


def test_no_reference_leaks(codec):
  """Decoding (successfully or not) leaves the input's reference count as it found it."""
  import sys
  cases = [tensor_bytes("int32s", [1, 2], [2]), tensor_bytes("floats", [1, 2], [2]),
           tensor_bytes("uint8s", [1, 2], [2]), tensor_bytes("floats", [1, 2], []),
           lfield(10, lfield(1, b"a")), b"\x0a\xff", lfield(15, b"\x01"), b"\x00"]
  for raw in cases:
    for buf in (raw, bytearray(raw)):
      for name in ("decode_tensor", "decode_step_request", "decode_step_response"):
        before = sys.getrefcount(buf)
        for zero_copy in (False, True):
          for _ in range(50):
            try:
              getattr(codec, name)(buf, zero_copy=zero_copy)
            except Exception:
              pass
        assert sys.getrefcount(buf) == before, f"{name} on {bytes(raw).hex()} leaks references"
