"""What the codec is measured against, built only from protobuf and numpy.

- A tiny protobuf wire writer, to hand-build byte strings (unpacked runs,
  unknown fields, groups, malformed input) that no serialiser would emit;
  `as_action` / `as_observation` wrap a Tensor's bytes into step messages.
- `reference_tensor`: dm-env-rpc's pack_tensor rules restated over our
  generated classes (element lists through `extend(tolist())`, int8/uint8 as
  bytes), whose SerializeToString() is the byte-exact target of encode_tensor.
- `reference_unpack`: dm-env-rpc's unpack_tensor rules restated over a parsed
  Tensor message (the target of decode_tensor's values, dtypes and shapes).
- `expect_*`: what a decode of some bytes must give, as protobuf sees them:
  a value, or the exception type that protobuf's rejection (ValueError) or
  upstream's unpacking (TypeError/ValueError) implies.
- `assert_same_decoded`: value, type, dtype, shape and (optionally)
  writability comparison, NaN-aware and sign-of-zero aware.
- `check` (a decode of any kind against protobuf) and `check_against_upstream`
  (decode_tensor against upstream, writability included): the checks the codec
  tests make of a backend.

dm_env_rpc itself is never imported: its generated modules register the same
proto package as ours and cannot share one process with them.
"""

import dataclasses
import math
from typing import Any, Callable, Optional, Tuple

import numpy as np
from google.protobuf import any_pb2
from google.protobuf import message as pb_message

from dm_env_rpc_fast import codec as live_codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb

U64 = (1 << 64) - 1

# ---------------------------------------------------------------------------
# Wire writer.

VARINT, I64, LEN, SGROUP, EGROUP, I32 = 0, 1, 2, 3, 4, 5


def varint(n: int) -> bytes:
  """Canonical varint; negative values are sign-extended to 64 bits."""
  n &= U64
  out = bytearray()
  while True:
    low = n & 0x7F
    n >>= 7
    if n:
      out.append(low | 0x80)
    else:
      out.append(low)
      return bytes(out)


def padded_varint(n: int, size: int) -> bytes:
  """A non-canonical varint of exactly `size` bytes (continuation bits padded)."""
  out = bytearray()
  for i in range(size):
    low = (n >> (7 * i)) & 0x7F
    out.append(low | (0x80 if i < size - 1 else 0))
  return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
  return varint((field << 3) | wire_type)


def vfield(field: int, value: int) -> bytes:
  return tag(field, VARINT) + varint(value)


def lfield(field: int, payload: bytes) -> bytes:
  return tag(field, LEN) + varint(len(payload)) + payload


def f32field(field: int, value) -> bytes:
  return tag(field, I32) + np.asarray(value, "<f4").tobytes()


def f64field(field: int, value) -> bytes:
  return tag(field, I64) + np.asarray(value, "<f8").tobytes()


def group(field: int, body: bytes = b"") -> bytes:
  return tag(field, SGROUP) + body + tag(field, EGROUP)


def packed_varints(values) -> bytes:
  return b"".join(varint(int(v)) for v in values)


def nested_groups(depth: int, field: int = 20) -> bytes:
  return tag(field, SGROUP) * depth + tag(field, EGROUP) * depth


def unknown_fields(field: int = 20) -> bytes:
  """One unknown field of every wire type (incl. a nested group) at `field`..`field+5`."""
  return b"".join([
      vfield(field, 300),
      tag(field + 1, I64) + bytes(range(8)),
      lfield(field + 2, b"\xff\xfe not utf-8 \x80"),
      group(field + 3, vfield(1, 5) + group(4, lfield(2, b"x")) + tag(9, I32) + b"abcd"),
      tag(field + 4, I32) + b"\x01\x02\x03\x04",
      vfield(field + 5, U64),
  ])


# Tensor payload field numbers (= DataType values), by name and numpy dtype.
PAYLOAD_FIELDS = {
    "floats": 1, "doubles": 2, "int8s": 3, "int32s": 4, "int64s": 5, "uint8s": 6,
    "uint32s": 7, "uint64s": 8, "bools": 9, "strings": 10, "protos": 11,
}
SHAPE_FIELD = 15
NUMERIC_DTYPES = {
    "floats": np.dtype(np.float32), "doubles": np.dtype(np.float64),
    "int8s": np.dtype(np.int8), "int32s": np.dtype(np.int32), "int64s": np.dtype(np.int64),
    "uint8s": np.dtype(np.uint8), "uint32s": np.dtype(np.uint32),
    "uint64s": np.dtype(np.uint64), "bools": np.dtype(bool),
}
NAME_BY_TYPE = {**{d: n for n, d in NUMERIC_DTYPES.items()},
                np.dtype(str): "strings", np.dtype(object): "protos"}
DATATYPE_DTYPES = {PAYLOAD_FIELDS[n]: d for n, d in NUMERIC_DTYPES.items()}
DATATYPE_DTYPES[10] = np.dtype(str)
DATATYPE_DTYPES[11] = np.dtype(object)


def payload_bytes(name: str, values) -> bytes:
  """The canonical (packed) inner bytes of an array message holding `values`."""
  if name in ("int8s", "uint8s"):
    data = np.asarray(values, NUMERIC_DTYPES[name]).tobytes()
    return lfield(1, data) if data else b""
  if name == "floats":
    data = np.asarray(values, "<f4").tobytes()
  elif name == "doubles":
    data = np.asarray(values, "<f8").tobytes()
  else:
    data = packed_varints(values)
  return lfield(1, data) if data else b""


def tensor_bytes(name: str, values, shape=None) -> bytes:
  """A canonical Tensor: payload then packed shape."""
  out = lfield(PAYLOAD_FIELDS[name], payload_bytes(name, values))
  if shape:
    out += lfield(SHAPE_FIELD, packed_varints(shape))
  return out


def as_action(tensor: bytes, key: int = 7) -> bytes:
  """An EnvironmentRequest carrying `tensor` as the value of one action."""
  return lfield(3, lfield(1, vfield(1, key) + lfield(2, tensor)) + lfield(2, varint(key)))


def as_observation(tensor: bytes, key: int = 7) -> bytes:
  """An EnvironmentResponse carrying `tensor` as the value of one observation."""
  return lfield(3, vfield(1, 1) + lfield(2, vfield(1, key) + lfield(2, tensor)))


def read_varint(buf: bytes, pos: int):
  value, shift = 0, 0
  while True:
    byte = buf[pos]
    pos += 1
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value, pos


def top_level_fields(buf: bytes):
  """Field numbers of a VALID message's top-level fields, in wire order (groups skipped)."""
  buf, pos, out, depth = bytes(buf), 0, [], 0
  while pos < len(buf):
    key, pos = read_varint(buf, pos)
    number, wire_type = key >> 3, key & 7
    if depth == 0 and wire_type != EGROUP:
      out.append(number)
    if wire_type == VARINT:
      _, pos = read_varint(buf, pos)
    elif wire_type == I64:
      pos += 8
    elif wire_type == I32:
      pos += 4
    elif wire_type == LEN:
      length, pos = read_varint(buf, pos)
      pos += length
    elif wire_type == SGROUP:
      depth += 1
    elif wire_type == EGROUP:
      depth -= 1
  return out


# ---------------------------------------------------------------------------
# Encoding: upstream's pack_tensor, restated.

def _as_any(item) -> any_pb2.Any:
  if isinstance(item, any_pb2.Any):
    return item
  if isinstance(item, pb_message.Message):
    packed = any_pb2.Any()
    packed.Pack(item)
    return packed
  raise ValueError(f"not a protobuf message: {item!r}")


def reference_tensor(value, dtype=None, try_compress=False) -> pb.Tensor:
  """A Tensor message built the way dm-env-rpc's pack_tensor builds it."""
  array = np.asarray(value)
  try:  # a DataType value (int, enum or numpy integer) names its dtype, as upstream looks it up
    wanted = DATATYPE_DTYPES.get(dtype, dtype)
  except TypeError:  # unhashable: not a DataType
    wanted = dtype
  if array.dtype == object:
    if wanted is not None and np.issubdtype(wanted, np.str_):
      if not all(isinstance(item, str) for item in array.flat):
        raise TypeError("object array holds a non-str under a string dtype")
      array = np.array(array, dtype=np.str_)
  elif wanted is not None:
    array = array.astype(wanted, copy=False, casting="unsafe")
  name = NAME_BY_TYPE.get(np.dtype(array.dtype.type))
  if name is None:
    raise TypeError(f"no payload for {array.dtype}")
  tensor = pb.Tensor()
  tensor.shape[:] = array.shape
  flat = array.ravel()
  if try_compress and flat.size > 1 and np.all(flat == flat[0]):
    flat = flat[:1]
  if name in ("int8s", "uint8s"):
    getattr(tensor, name).array = flat.tobytes()
  elif name == "protos":
    tensor.protos.array.extend([_as_any(item) for item in flat])
  else:
    getattr(tensor, name).array.extend(flat.tolist())
  return tensor


def reference_bytes(value, dtype=None, try_compress=False) -> bytes:
  return reference_tensor(value, dtype, try_compress).SerializeToString()


# ---------------------------------------------------------------------------
# Decoding: upstream's unpack_tensor, restated.

# The codec refuses broadcasts of more bytes than this (see dm_env_rpc_fast.codec).
MAX_BROADCAST_BYTES = live_codec.MAX_BROADCAST_BYTES

# Results bigger than this are not built by the tests (a one-element payload
# with a large shape broadcasts, and a mutated shape can ask for gigabytes).
MAX_TEST_ELEMENTS = 1 << 22


def broadcast_size(tensor: pb.Tensor) -> int:
  """Element count the decode of a parsed tensor would allocate (0 if it does not fill)."""
  name = tensor.WhichOneof("payload")
  if name is None or not tensor.shape:
    return 0
  payload = getattr(tensor, name).array
  if len(payload) != 1:
    return 0
  return math.prod(max(int(d), 1) for d in tensor.shape)


def _itemsize(tensor: pb.Tensor) -> int:
  name = tensor.WhichOneof("payload")
  if name == "strings":
    return 4 * max([len(s) for s in tensor.strings.array] + [1])
  return 8 if name == "protos" else NUMERIC_DTYPES[name].itemsize


def over_broadcast_cap(tensor: pb.Tensor) -> bool:
  """True if the tensor broadcasts past MAX_BROADCAST_BYTES, which the codec refuses.

  The cap is the codec's one deliberate difference from upstream's unpacking
  (which would try to allocate it); the tests expect a ValueError there.
  """
  size = broadcast_size(tensor)
  return size > 0 and size * _itemsize(tensor) > MAX_BROADCAST_BYTES


def _reshape(flat: np.ndarray, shape):
  shape = [int(d) for d in shape]
  if not shape:
    if flat.shape[0] != 1:
      raise ValueError("scalar tensor must hold exactly one element")
    return flat[0]
  if flat.shape[0] == 1:
    filled = [max(d, 1) for d in shape]
    if math.prod(filled) * max(flat.dtype.itemsize, 1) > MAX_BROADCAST_BYTES:
      raise ValueError("broadcast over the codec's MAX_BROADCAST_BYTES")
    return np.full(filled, flat[0])
  flat.shape = shape  # numpy's own -1 inference and size check (ValueError)
  return flat


def reference_unpack(tensor: pb.Tensor):
  """dm-env-rpc's unpack_tensor result for a parsed Tensor."""
  name = tensor.WhichOneof("payload")
  if name is None:
    raise TypeError("Tensor has no payload")
  payload = getattr(tensor, name).array
  if name in ("int8s", "uint8s"):
    flat = np.frombuffer(payload, NUMERIC_DTYPES[name])
  elif name == "strings":
    flat = np.array(list(payload), np.dtype(str))
  elif name == "protos":
    flat = np.empty(len(payload), object)
    flat[:] = list(payload)
  else:
    flat = np.fromiter(payload, NUMERIC_DTYPES[name], len(payload))
  return _reshape(flat, tensor.shape)


@dataclasses.dataclass
class Raises:
  """The decode must raise one of `types`."""
  types: Tuple[type, ...]
  why: str = ""


class Excluded(Exception):
  """Random-input tests leave this input out (the reason is the message).

  - a broadcast to more than MAX_TEST_ELEMENTS elements (memory) but within
    MAX_BROADCAST_BYTES (beyond it the codec raises ValueError, expected);
  - a shape dimension below -1: upstream (numpy's reshape) takes any negative
    dimension as the unknown one, which _common.reshape_target rejects; one
    dedicated test (test_tensor_decode) holds that case, so random tests do not
    all fail on it.
  """


def too_big_to_decode(buf) -> bool:
  """True if a decode of `buf` (as a tensor or a step message) would broadcast hugely."""
  tensors = []
  for cls in (pb.Tensor, pb.EnvironmentRequest, pb.EnvironmentResponse):
    try:
      message = cls.FromString(bytes(buf))
    except pb_message.DecodeError:
      continue
    if cls is pb.Tensor:
      tensors.append(message)
    else:
      step = message.step
      tensors.extend((step.actions if cls is pb.EnvironmentRequest else step.observations).values())
  return any(MAX_TEST_ELEMENTS < broadcast_size(t) and not over_broadcast_cap(t) for t in tensors)


def _unpack_checked(tensor: pb.Tensor):
  if MAX_TEST_ELEMENTS < broadcast_size(tensor) and not over_broadcast_cap(tensor):
    raise Excluded("broadcast too big for a test")  # (beyond the cap it is a ValueError)
  negative = [d for d in tensor.shape if d < 0]
  if len(negative) == 1 and negative[0] < -1 and broadcast_size(tensor) == 0:
    raise Excluded("a reshape with a dimension below -1")
  return reference_unpack(tensor)


def _parse(cls, buf):
  try:
    return cls.FromString(bytes(buf)), None
  except pb_message.DecodeError as e:
    return None, Raises((ValueError,), f"protobuf rejects: {e}")


def expect_tensor(buf):
  """What decode_tensor(buf) must give: a value, or Raises(...).  May raise Excluded."""
  tensor, rejected = _parse(pb.Tensor, buf)
  if rejected:
    return rejected
  try:
    return _unpack_checked(tensor)
  except (TypeError, ValueError) as e:
    return Raises((type(e),), f"upstream unpack: {e}")


def _expect_map(entries):
  """Unpacks every map value; Raises with every exception type any value raises."""
  out, errors = {}, []
  for key, tensor in entries.items():
    try:
      out[key] = _unpack_checked(tensor)
    except (TypeError, ValueError) as e:
      errors.append(type(e))
  if errors:
    return Raises(tuple(set(errors)), "a map value does not unpack")
  return out


def expect_step_request(buf):
  """What decode_step_request(buf) must give: (actions, requested) or Raises."""
  request, rejected = _parse(pb.EnvironmentRequest, buf)
  if rejected:
    return rejected
  which = request.WhichOneof("payload")
  if which != "step":
    return Raises((ValueError,), f"payload is {which}")
  actions = _expect_map(request.step.actions)
  if isinstance(actions, Raises):
    return actions
  return actions, list(request.step.requested_observations)


@dataclasses.dataclass
class RaisesStatus:
  """The decode must raise DmEnvRpcError with this code and message."""
  code: int
  message: str


def expect_step_response(buf):
  """What decode_step_response(buf) must give: (state, observations), Raises or RaisesStatus."""
  response, rejected = _parse(pb.EnvironmentResponse, buf)
  if rejected:
    return rejected
  which = response.WhichOneof("payload")
  if which == "error":
    return RaisesStatus(response.error.code, response.error.message)
  if which != "step":
    return Raises((ValueError,), f"payload is {which}")
  observations = _expect_map(response.step.observations)
  if isinstance(observations, Raises):
    return observations
  return int(response.step.state), observations


# ---------------------------------------------------------------------------
# Comparison.

def _same_floats(a: np.ndarray, b: np.ndarray) -> bool:
  """Equal as IEEE values: NaN where NaN, and otherwise bit-identical (-0.0 != 0.0)."""
  nan_a, nan_b = np.isnan(a), np.isnan(b)
  if not np.array_equal(nan_a, nan_b):
    return False
  uint = np.dtype(f"u{a.dtype.itemsize}")
  bits_a = np.ascontiguousarray(a).view(uint)
  bits_b = np.ascontiguousarray(b).view(uint)
  return bool(np.array_equal(bits_a[~nan_a], bits_b[~nan_b]))


def assert_same_decoded(ours, expected, writeable: Optional[bool] = None, where: str = ""):
  """Asserts `ours` is `expected`: type, dtype, shape, values and (if given) writability."""
  ctx = f" ({where})" if where else ""
  if isinstance(expected, np.ndarray):
    assert isinstance(ours, np.ndarray), f"expected an ndarray, got {type(ours)}{ctx}"
    assert ours.dtype == expected.dtype, f"dtype {ours.dtype} != {expected.dtype}{ctx}"
    assert ours.shape == expected.shape, f"shape {ours.shape} != {expected.shape}{ctx}"
    if expected.dtype.kind == "f":
      assert _same_floats(ours, expected), f"values differ{ctx}:\n{ours!r}\n{expected!r}"
    elif expected.dtype == object:
      assert all(x == y for x, y in zip(ours.ravel(), expected.ravel())), f"protos differ{ctx}"
      assert all(type(x) is type(y) for x, y in zip(ours.ravel(), expected.ravel()))
    else:
      assert np.array_equal(ours, expected), f"values differ{ctx}:\n{ours!r}\n{expected!r}"
    if writeable is not None:
      assert ours.flags.writeable == writeable, (
          f"flags.writeable is {ours.flags.writeable}, expected {writeable}{ctx}")
  else:
    assert type(ours) is type(expected), f"type {type(ours)} != {type(expected)}{ctx}"
    if isinstance(expected, np.floating):
      assert _same_floats(np.asarray(ours), np.asarray(expected)), f"{ours!r} != {expected!r}{ctx}"
    else:
      assert ours == expected, f"{ours!r} != {expected!r}{ctx}"


def assert_same_map(ours: dict, expected: dict, where: str = ""):
  assert isinstance(ours, dict), f"expected a dict, got {type(ours)}"
  assert sorted(ours) == sorted(expected), f"keys {sorted(ours)} != {sorted(expected)} {where}"
  for key, value in expected.items():
    assert_same_decoded(ours[key], value, where=f"{where} key {key}")


def check_decode(call: Callable[[], Any], expected, compare: Callable[[Any, Any], None]):
  """Runs `call` and checks it against an expect_* result."""
  if isinstance(expected, Raises):
    try:
      got = call()
    except expected.types:
      return
    except Exception as e:  # the wrong exception type is itself the failure
      raise AssertionError(
          f"raised {type(e).__name__}: {e}; expected {expected.types} ({expected.why})") from e
    raise AssertionError(f"returned {got!r}; expected {expected.types} ({expected.why})")
  if isinstance(expected, RaisesStatus):
    from dm_env_rpc_fast.v1.error import DmEnvRpcError
    try:
      got = call()
    except DmEnvRpcError as e:
      assert (e.code, e.message) == (expected.code, expected.message)
      return
    raise AssertionError(f"returned {got!r}; expected DmEnvRpcError")
  try:
    got = call()
  except Exception as e:
    raise AssertionError(f"raised {type(e).__name__}: {e}; protobuf accepts it") from e
  compare(got, expected)


def compare_tensor(got, expected):
  assert_same_decoded(got, expected)


def compare_step_request(got, expected):
  actions, requested = got
  assert_same_map(actions, expected[0], "actions")
  assert list(requested) == expected[1]
  assert all(type(uid) is int for uid in requested)


def compare_step_response(got, expected):
  state, observations = got
  assert type(state) is int and state == expected[0], f"state {state!r} != {expected[0]}"
  assert_same_map(observations, expected[1], "observations")


DECODERS = {
    "tensor": (lambda c: c.decode_tensor, expect_tensor, compare_tensor),
    "request": (lambda c: c.decode_step_request, expect_step_request, compare_step_request),
    "response": (lambda c: c.decode_step_response, expect_step_response, compare_step_response),
}


def check(codec, kind, buf, zero_copy=False):
  """Compares one decode with protobuf; returns the expectation.  Raises Excluded."""
  decoder, expect, compare = DECODERS[kind]
  expected = expect(buf)
  check_decode(lambda: decoder(codec)(buf, zero_copy=zero_copy), expected, compare)
  return expected


def expected_writeable(name: str, count: int, shape, zero_copy: bool) -> Optional[bool]:
  """The spec's writability of a decoded array (None: the result is a scalar)."""
  if not shape:
    return None
  if count == 1:
    return True  # broadcast: a fresh np.full array
  if name in ("int8s", "uint8s"):
    return False  # always views of the buffer
  if name in ("floats", "doubles"):
    return not zero_copy
  return True


def check_against_upstream(codec, buf, zero_copy=False):
  """decode_tensor(buf) gives what protobuf + upstream's unpack give, incl. writability."""
  expected = expect_tensor(buf)
  check_decode(lambda: codec.decode_tensor(buf, zero_copy=zero_copy), expected, compare_tensor)
  object_path = {10, 11} & set(top_level_fields(buf))
  if isinstance(expected, np.ndarray) and not object_path:
    # (A tensor with a strings/protos field anywhere is decoded by protobuf, with
    # upstream's writability, whatever payload wins: see _common.decode_object_tensor.)
    tensor = pb.Tensor.FromString(bytes(buf))
    name = tensor.WhichOneof("payload")
    count = len(getattr(tensor, name).array)  # elements (bytes for int8s/uint8s)
    want = expected_writeable(name, count, list(tensor.shape), zero_copy)
    got = codec.decode_tensor(buf, zero_copy=zero_copy)
    assert got.flags.writeable == want, (
        f"{name} count={count} shape={list(tensor.shape)} zero_copy={zero_copy}: "
        f"writeable={got.flags.writeable}, expected {want}")
  return expected
