"""The pure backend's whole-array varint methods, against protobuf, on both sides of their size cutoffs.

`_pure.varints` encodes and decodes packed varints with numpy in more than one
way, chosen by size in `_pure.routes` (few values or bytes: one method; more: another, with
separate cases for runs of one varint length and for 9- and 10-byte varints).
The codec tests reach these through whole tensors at a few sizes; here every
method and case is run directly, each against protobuf's own packed encoding
and parse.
"""

import numpy as np
import pytest

from dm_env_rpc_fast.codec._pure import routes
from dm_env_rpc_fast.codec._pure import varints
from dm_env_rpc_fast.codec._pure import wire
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb

Uint64Array = pb.Tensor.DESCRIPTOR.fields_by_name["uint64s"].message_type._concrete_class
Uint32Array = pb.Tensor.DESCRIPTOR.fields_by_name["uint32s"].message_type._concrete_class

# Counts around the encoder's cutoff, and byte sizes around the decoder's.
COUNTS = sorted({1, 2, 9, 100, routes.NUMPY_FEW_VALUES - 1, routes.NUMPY_FEW_VALUES, routes.NUMPY_FEW_VALUES + 1,
                 routes.NUMPY_FEW_BYTES // 10, routes.NUMPY_FEW_BYTES // 10 + 1, routes.NUMPY_FEW_BYTES // 3,
                 routes.NUMPY_FEW_BYTES + 7, 5000})
U64 = np.uint64


def _values(kind: str, n: int, rng) -> np.ndarray:
  if kind == "full":
    return rng.integers(0, 2**64 - 1, n, dtype=U64, endpoint=True)
  if kind == "negative_int32":  # half are 10-byte varints, half at most 5
    return rng.integers(-2**31, 2**31, n).astype(np.int64).view(U64)
  if kind == "bit_lengths":  # every varint length, mixed
    bits = rng.integers(0, 65, n)
    return np.array([int(rng.integers(0, 2**64 - 1, dtype=U64, endpoint=True)) >> (64 - int(b))
                     if b else 0 for b in bits], U64)
  if kind == "mostly_short":  # a few 9- and 10-byte varints among short ones
    values = rng.integers(0, 2**20, n, dtype=U64)
    values[rng.integers(0, n, max(1, n // 50))] = U64(2**63 + 5)
    values[rng.integers(0, n, max(1, n // 50))] = U64(2**60)
    return values
  if kind.startswith("uniform"):  # every varint `length` bytes long
    length = int(kind[len("uniform"):])
    low = 0 if length == 1 else 1 << (7 * (length - 1))
    high = min((1 << (7 * length)) - 1, 2**64 - 1)
    return rng.integers(low, high, n, dtype=U64, endpoint=True)
  raise ValueError(kind)


KINDS = ["full", "negative_int32", "bit_lengths", "mostly_short"] + [
    f"uniform{k}" for k in range(1, 11)]


def _packed(values: np.ndarray) -> bytes:
  """protobuf's packed encoding of the values (the payload of a repeated uint64 field)."""
  message = Uint64Array(array=values.tolist())
  data = message.SerializeToString()
  if not values.size:
    return b""
  start, _ = wire.read_length(data, 1, len(data), "test")
  return data[start:]


def _parse(raw: bytes, bits: int):
  """protobuf's reading of a packed run of varints, or None if it rejects it."""
  array = Uint64Array if bits == 64 else Uint32Array
  message = array()
  try:
    message.ParseFromString(b"\x0a" + wire.varint_bytes(len(raw)) + raw)
  except Exception:  # DecodeError, whichever runtime
    return None
  return list(message.array)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", COUNTS)
def test_round_trips_match_protobuf(kind, n):
  rng = np.random.default_rng([n, len(kind)])
  values = _values(kind, n, rng)
  encoded = routes.encode_varints(values)
  assert encoded.dtype == np.uint8 and encoded.flags.c_contiguous
  assert encoded.tobytes() == _packed(values)
  for bits in (64, 32):
    decoded = routes.decode_varints(encoded, bits, "test")
    assert decoded.dtype == (np.uint64 if bits == 64 else np.uint32)
    assert decoded.flags.writeable and decoded.flags.c_contiguous
    assert decoded.tolist() == _parse(encoded.tobytes(), bits)


def _corrupt(raw: np.ndarray, how: str, rng) -> np.ndarray:
  raw = raw.copy()
  if how == "bytes":  # random bytes anywhere, the last one ending a varint
    at = rng.integers(0, raw.size, max(1, raw.size // 40))
    raw[at] = rng.integers(0, 256, at.size)
    raw[-1] &= 0x7F
  elif how == "continuations":  # varints merged into longer ones (some past 10 bytes)
    raw |= (rng.random(raw.size) < 0.3).astype(np.uint8) << 7
    raw[-1] &= 0x7F
  elif how == "tenth_byte":  # 10-byte varints with bits beyond 64 in their last byte
    raw = np.frombuffer(b"".join(
        b"\xff" * 9 + bytes([int(rng.integers(0, 128))]) for _ in range(raw.size // 10 + 1)),
                        np.uint8).copy()
  elif how.startswith("long_at_"):  # one 11-byte varint at the start, middle or end
    at = {"long_at_start": 0, "long_at_middle": raw.size // 2, "long_at_end": raw.size}[how]
    raw = np.concatenate([raw[:at], np.full(10, 0x80, np.uint8), [1], raw[at:]]).astype(np.uint8)
  elif how == "cut":  # ends in the middle of a varint
    raw = np.concatenate([raw, [0x80]]).astype(np.uint8)
  return raw


@pytest.mark.parametrize("how", ["bytes", "continuations", "tenth_byte", "long_at_start",
                                 "long_at_middle", "long_at_end", "cut"])
@pytest.mark.parametrize("kind", ["full", "bit_lengths", "uniform4", "uniform9"])
@pytest.mark.parametrize("n", [20, routes.NUMPY_FEW_BYTES // 10 + 5, 3000])
def test_malformed_runs_match_protobuf(how, kind, n):
  rng = np.random.default_rng([n, len(kind), len(how)])
  raw = _corrupt(routes.encode_varints(_values(kind, n, rng)), how, rng)
  for bits in (64, 32):
    expected = _parse(raw.tobytes(), bits)
    if expected is None:
      with pytest.raises(ValueError, match="test: "):
        routes.decode_varints(raw, bits, "test")
    else:
      assert routes.decode_varints(raw, bits, "test").tolist() == expected


def test_single_varints():
  rng = np.random.default_rng(3)
  for value in [0, 1, 127, 128, 2**63, 2**64 - 1] + rng.integers(
      0, 2**64 - 1, 200, dtype=U64, endpoint=True).tolist():
    encoded = varints.py_varint_bytes(value)
    assert varints.py_single_varint(encoded) == value
    if len(encoded) < 10:
      assert varints.py_single_varint(encoded + b"\x00") is None
    if len(encoded) > 1:
      assert varints.py_single_varint(encoded[:-1]) is None
  assert varints.py_single_varint(b"\xff" * 9 + b"\x7f") == 2**64 - 1
  assert varints.py_single_varint(b"\x80\x00") == 0


@pytest.mark.parametrize("kind, n", [("full", 40_000), ("negative_int32", 320_000)])
def test_long_runs_match_protobuf(kind, n):
  """Runs past the sizes at which the decoder changes how it reads words (routes.NUMPY_TAKE_MAX_BYTES)."""
  values = _values(kind, n, np.random.default_rng(n))
  encoded = routes.encode_varints(values)
  assert encoded.size > routes.NUMPY_TAKE_MAX_BYTES[64 if kind == "full" else 32]
  assert encoded.tobytes() == _packed(values)
  for bits in (64, 32):
    assert routes.decode_varints(encoded, bits, "test").tolist() == _parse(encoded.tobytes(), bits)


# --------------------------------------------------------------------------
# Tensors whose varints go through protobuf's parser and serialiser (runs of
# multi-byte varints up to routes' cutoffs, when protobuf is compiled) and
# through numpy (one-byte varints, larger runs, or protobuf in pure Python).

from dm_env_rpc_fast.codec import _pure  # pylint: disable=g-import-not-at-top

_TENSOR_KINDS = {  # dtype, payload field, how the values are drawn
    "int32": (np.int32, "int32s"), "int64": (np.int64, "int64s"),
    "uint32": (np.uint32, "uint32s"), "uint64": (np.uint64, "uint64s"),
}
_TENSOR_COUNTS = sorted({1, 2, 8, 9, routes.FROMITER_BELOW - 1, routes.FROMITER_BELOW, 100,
                         *routes.PB_ENCODE_MAX_VALUES.values(),
                         *(n + 1 for n in routes.PB_ENCODE_MAX_VALUES.values()),
                         routes.PB_DECODE_MAX_BYTES // 10, routes.PB_DECODE_MAX_BYTES // 10 + 7,
                         routes.PB_DECODE_MAX_BYTES // 5})


def _tensor_values(dtype, values_kind: str, n: int, rng) -> np.ndarray:
  info = np.iinfo(dtype)
  if values_kind == "full":
    return rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
  if values_kind == "one_byte":
    return rng.integers(0, 128, n).astype(dtype)
  if values_kind == "one_byte_then_long":  # passes the encoder's first-value guess, then not
    values = rng.integers(0, 128, n).astype(dtype)
    values[-1] = info.max
    return values
  if values_kind == "below_256":  # bytes(values) works, but some need two bytes
    return rng.integers(0, 256, n).astype(dtype)
  return _values(values_kind, n, rng).astype(dtype)  # (wraps, as a cast does)


@pytest.mark.parametrize("protobuf_c", [True, False], ids=["protobuf", "numpy"])
@pytest.mark.parametrize("values_kind", ["full", "one_byte", "one_byte_then_long", "below_256",
                                         "bit_lengths", "mostly_short"])
@pytest.mark.parametrize("n", _TENSOR_COUNTS)
@pytest.mark.parametrize("name", sorted(_TENSOR_KINDS))
def test_varint_tensors_match_protobuf_by_either_route(name, n, values_kind, protobuf_c,
                                                       monkeypatch):
  """Encode and decode equal protobuf's bytes and values, whichever route a run takes."""
  if protobuf_c and not routes.PROTOBUF_C:
    pytest.skip("protobuf is not compiled here (pure-Python runtime): the numpy route only")
  monkeypatch.setattr(routes, "PROTOBUF_C", protobuf_c)
  dtype, field = _TENSOR_KINDS[name]
  rng = np.random.default_rng([n, len(values_kind), len(name)])
  values = _tensor_values(dtype, values_kind, n, rng)
  expected = pb.Tensor(shape=[n])
  getattr(expected, field).array.extend(values.tolist())
  data = expected.SerializeToString()
  assert _pure.encode_tensor(values) == data
  for buf in (data, bytearray(data), memoryview(data)):
    decoded = _pure.decode_tensor(buf)
    assert decoded.dtype == dtype and decoded.flags.writeable
    np.testing.assert_array_equal(decoded, values, strict=True)


# (Where protobuf runs as pure Python the pure backend has no protobuf route to test.)
_ROUTES = [True, False] if routes.PROTOBUF_C else [False]


@pytest.mark.parametrize("protobuf_c", _ROUTES, ids=["protobuf", "numpy"][-len(_ROUTES):])
@pytest.mark.parametrize("shape", [(), (1,), (2, 3), (4, 1, 8), (3, 50), (16, 16)])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64, np.bool_])
def test_small_tensors_of_any_shape_match_protobuf(dtype, shape, protobuf_c, monkeypatch):
  """Small tensors (protobuf's routes when it is compiled) keep their shape, scalars included."""
  monkeypatch.setattr(routes, "PROTOBUF_C", protobuf_c)
  rng = np.random.default_rng([len(shape), np.dtype(dtype).num])
  if dtype is np.bool_:
    values = rng.random(shape) < 0.5
  else:
    info = np.iinfo(dtype)
    values = np.asarray(rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True))
  expected = pb.Tensor(shape=shape)
  getattr(expected, routes.PB_FIELDS[_pure.tensor._ARRAY_KINDS[np.dtype(dtype)]]).array.extend(
      values.ravel().tolist())
  data = expected.SerializeToString()
  assert _pure.encode_tensor(values) == data
  decoded = _pure.decode_tensor(data)
  assert decoded.dtype == dtype and decoded.shape == values.shape
  np.testing.assert_array_equal(decoded, values, strict=True)


def test_small_tensor_whose_last_payload_is_not_a_varint_kind():
  """protobuf's whole-Tensor parse sees floats win over an earlier int32s: the walk decodes it."""
  first = pb.Tensor(int32s=pb.Tensor.Int32Array(array=[1, -2, 300]), shape=[2])
  second = pb.Tensor(floats=pb.Tensor.FloatArray(array=[0.5, 1.5]))
  data = first.SerializeToString() + second.SerializeToString()
  assert pb.Tensor.FromString(data).WhichOneof("payload") == "floats"
  np.testing.assert_array_equal(_pure.decode_tensor(data), np.float32([0.5, 1.5]), strict=True)


@pytest.mark.parametrize("how", ["bytes", "continuations", "tenth_byte", "long_at_middle", "cut"])
@pytest.mark.parametrize("name", ["int32", "uint64"])
def test_malformed_runs_in_protobufs_range_raise_our_error(name, how):
  """A run protobuf refuses falls back to the numpy route, which names the field;
  one it accepts decodes to what protobuf's own Tensor parse gives."""
  dtype, field = _TENSOR_KINDS[name]
  rng = np.random.default_rng([len(name), len(how)])
  raw = _corrupt(routes.encode_varints(_values("full", 300, rng)), how, rng)
  assert raw.size <= routes.PB_DECODE_MAX_BYTES
  payload = b"\x0a" + wire.varint_bytes(raw.size) + raw.tobytes()
  data = bytes([pb.Tensor.DESCRIPTOR.fields_by_name[field].number << 3 | 2]) + wire.varint_bytes(
      len(payload)) + payload
  try:
    reference = pb.Tensor.FromString(data)
  except Exception:  # pylint: disable=broad-except
    reference = None
  if reference is not None:  # a valid run: give the tensor its shape (the run's bytes kept as they are)
    count = wire.varint_bytes(len(getattr(reference, field).array))
    data += b"\x7a" + bytes([len(count)]) + count
    assert pb.Tensor.FromString(data).shape == [len(getattr(reference, field).array)]
  if reference is None:
    with pytest.raises(ValueError, match=f"Tensor.{field}"):
      _pure.decode_tensor(data)
  else:
    np.testing.assert_array_equal(
        _pure.decode_tensor(data), np.array(getattr(reference, field).array, dtype), strict=True)
