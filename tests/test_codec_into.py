"""Encoding into and decoding out of caller-owned memory.

encode_step_response_into must write exactly the bytes encode_step_response
returns (or nothing, when they do not fit); decode_tensor / decode_step_response
with out= must give exactly the values they give without it, written into the
caller's arrays.  Both backends, and the two backends against each other.
"""

import mmap

import numpy as np
import pytest
from hypothesis import given, strategies as st

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.strategies import UIDS, action_values

SENTINEL = 0xA5
STATES = st.sampled_from([0, 1, 2, 3, -1, 99, 2**31 - 1])


def outcome(call):
  """('ok', result) or ('raises', type, text)."""
  try:
    return ("ok", call())
  except Exception as e:  # pylint: disable=broad-except
    return ("raises", type(e), str(e))


def observation_sets():
  """Observation maps of every value kind the step encoders take."""
  return st.dictionaries(UIDS, action_values(), max_size=5).map(
      lambda d: {k: pair[0] for k, pair in d.items()})


# ---------------------------------------------------------------------------
# encode_step_response_into

def _into_all_sizes(codec, state, observations, expected: bytes):
  """into() with buffers too small, exact and too big: the contract for each."""
  n = len(expected)
  for size in sorted({0, max(n - 1, 0), n, n + 7}):
    buf = bytearray([SENTINEL]) * size
    assert codec.encode_step_response_into(buf, state, observations) == n
    if n <= size:
      assert bytes(buf[:n]) == expected
      assert buf[n:] == bytearray([SENTINEL]) * (size - n), "wrote past n"
    else:
      assert buf == bytearray([SENTINEL]) * size, "wrote into a buffer too small"


@given(observations=observation_sets(), state=STATES)
def test_into_equals_encode(codec, observations, state):
  expected = outcome(lambda: codec.encode_step_response(state, observations))
  if expected[0] == "raises":
    buf = bytearray([SENTINEL]) * 4096
    got = outcome(lambda: codec.encode_step_response_into(buf, state, observations))
    assert got == expected
    assert buf == bytearray([SENTINEL]) * 4096
    return
  _into_all_sizes(codec, state, observations, expected[1])


@pytest.mark.parametrize("shape,dtype", [
    ((84, 84, 3), np.float32), ((300, 300), np.float64), ((70000,), np.int32),
    ((40000,), np.int64), ((100000,), np.uint8), ((65537,), bool), ((5, 17000), np.uint64)])
def test_into_large_arrays(codec, shape, dtype):
  """Above the GIL-release threshold, several tensors and a state."""
  rng = np.random.default_rng(7)
  if dtype is bool:
    big = rng.integers(0, 2, shape).astype(bool)
  elif np.issubdtype(dtype, np.integer):
    info = np.iinfo(dtype)
    big = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
  else:
    big = rng.standard_normal(shape).astype(dtype)
  observations = {3: big, 1: np.float32(0.5), 2**64 - 1: big[..., :1].copy(), 9: "text"}
  expected = codec.encode_step_response(2, observations)
  _into_all_sizes(codec, 2, observations, expected)


def _buffers(size):
  raw = bytearray(size)
  mapped = mmap.mmap(-1, size)
  return {
      "bytearray": (raw, lambda: bytes(raw)),
      "memoryview": (memoryview(raw), lambda: bytes(raw)),
      "memoryview_slice": (memoryview(raw)[1:], lambda: bytes(raw[1:])),
      "mmap": (mapped, lambda: bytes(mapped[:])),
      "memoryview_mmap": (memoryview(mapped), lambda: bytes(mapped[:])),
      "ndarray_uint8": (np.zeros(size, np.uint8), None),
      "ndarray_float64": (np.zeros(size // 8 + 1, np.float64), None),
  }


@pytest.mark.parametrize("kind", list(_buffers(8)))
def test_into_buffer_kinds(codec, kind):
  observations = {1: np.arange(30, dtype=np.float32).reshape(5, 6), 2: np.int64(-7)}
  expected = codec.encode_step_response(1, observations)
  out, read = _buffers(4096)[kind]
  assert codec.encode_step_response_into(out, 1, observations) == len(expected)
  written = read() if read else np.asarray(out).view(np.uint8).tobytes()
  assert written[:len(expected)] == expected


BAD_OUTS = {
    "bytes": lambda: b"\0" * 64,
    "readonly_memoryview": lambda: memoryview(bytearray(64)).toreadonly(),
    "strided_memoryview": lambda: memoryview(bytearray(64))[::2],
    "strided_ndarray": lambda: np.zeros(64, np.uint8)[::2],
    "readonly_ndarray": lambda: np.frombuffer(b"\0" * 64, np.uint8),
    "readonly_mmap": lambda: mmap.mmap(-1, 64, access=mmap.ACCESS_READ),
    "released": lambda: _released(),
    "int": lambda: 64,
    "none": lambda: None,
    "list": lambda: [0] * 64,
}


def _released():
  view = memoryview(bytearray(64))
  view.release()
  return view


@pytest.mark.parametrize("name", list(BAD_OUTS))
def test_into_refuses_bad_buffers(codec, name):
  out = BAD_OUTS[name]()
  with pytest.raises(TypeError, match="out must be a writable C-contiguous buffer, not "):
    codec.encode_step_response_into(out, 1, {1: np.float32(1)})


BAD_CALLS = {
    "state_bool": (True, {1: 1.0}),
    "state_str": ("1", {1: 1.0}),
    "state_big": (2**31, {1: 1.0}),
    "state_small": (np.int64(-(2**31) - 1), {1: 1.0}),
    "state_float": (1.5, {1: 1.0}),
    "state_np_float": (np.float32(1), {1: 1.0}),
    "uid_negative": (1, {-1: 1.0}),
    "uid_big": (1, {2**64: 1.0}),
    "uid_str": (1, {"a": 1.0}),
    "float16": (1, {1: np.zeros(3, np.float16)}),
    "jagged": (1, {1: [[1, 2], [3]]}),
    "not_a_mapping": (1, [1, 2]),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_into_errors_equal_encode_errors(codec, name):
  state, observations = BAD_CALLS[name]
  expected = outcome(lambda: codec.encode_step_response(state, observations))
  assert expected[0] == "raises"
  buf = bytearray([SENTINEL]) * 256
  got = outcome(lambda: codec.encode_step_response_into(buf, state, observations))
  assert got[:2] == expected[:2] and got[2] == expected[2]
  assert buf == bytearray([SENTINEL]) * 256


def test_into_backends_agree(both_backends):
  """Same sizes, bytes and error texts from both backends."""
  native, pure = both_backends
  cases = [(BAD_OUTS[name](), 1, {1: 1.0}) for name in BAD_OUTS]
  cases += [(bytearray(256), *BAD_CALLS[name]) for name in BAD_CALLS]
  cases += [(bytearray(n), 3, {7: np.arange(20, dtype=np.int32), 2: "x", 4: pb.Tensor()})
            for n in (0, 10, 200)]
  for out, state, observations in cases:
    copy = bytearray(out) if isinstance(out, bytearray) else out
    got_native = outcome(lambda: native.encode_step_response_into(out, state, observations))
    got_pure = outcome(lambda: pure.encode_step_response_into(copy, state, observations))
    assert got_native == got_pure, (out, state, observations)
    if isinstance(out, bytearray):
      assert out == copy


# ---------------------------------------------------------------------------
# decode_tensor(out=...) / decode_step_response(out=...)

from hypothesis.extra import numpy as hnp  # noqa: E402
from support.agreement import assert_same_value  # noqa: E402
from support.strategies import NUMERIC  # noqa: E402


def _sentinel_like(value, rows=2, row=1):
  """A row of a (rows, ...) batch filled with a sentinel, shaped to take `value`."""
  value = np.asarray(value)
  batch = np.empty((rows,) + value.shape, value.dtype)
  batch.view(np.uint8)[...] = SENTINEL
  return batch, batch[row, ...]  # (a 0-d view for a scalar, not a numpy scalar)


def _assert_into_equals(value, target, result):
  assert result is target
  expected = np.asarray(value)
  assert target.dtype == expected.dtype and target.shape == expected.shape
  assert target.tobytes() == expected.tobytes()  # bit-exact, NaNs included


@given(value=hnp.arrays(st.sampled_from(NUMERIC), hnp.array_shapes(min_dims=0, max_dims=3)),
       zero_copy=st.booleans(), compress=st.booleans())
def test_decode_tensor_into_equals_decode(codec, value, zero_copy, compress):
  buf = codec.encode_tensor(value, try_compress=compress)
  plain = codec.decode_tensor(buf, zero_copy=zero_copy)
  batch, target = _sentinel_like(plain)
  result = codec.decode_tensor(buf, zero_copy=zero_copy, out=target)
  _assert_into_equals(plain, target, result)
  assert (np.frombuffer(batch[0, ...].tobytes(), np.uint8) == SENTINEL).all(), "wrote outside the row"


@given(observations=observation_sets(), state=STATES, data=st.data())
def test_decode_step_response_into_equals_decode(codec, observations, state, data):
  try:
    buf = codec.encode_step_response(state, observations)
  except (TypeError, ValueError):
    return
  zero_copy = data.draw(st.booleans())
  plain = outcome(lambda: codec.decode_step_response(buf, zero_copy=zero_copy))
  if plain[0] == "raises":  # (e.g. an empty Tensor): out= cannot make it decode
    # With several faults (an empty Tensor and a target that does not fit),
    # the first met in wire order is raised, so the error may be the target's;
    # tests/test_backends_agree.py holds both backends to the same one.
    got = outcome(lambda: codec.decode_step_response(buf, out={1: np.zeros(1)}))
    assert got[0] == "raises" and got[1] in (TypeError, ValueError), got
    if got != plain:
      assert got[2].startswith("out[1] (observation 1)"), got
    return
  plain_state, plain = plain[1]
  numeric = sorted(uid for uid, v in plain.items()
                   if isinstance(v, (np.ndarray, np.generic)) and np.asarray(v).dtype.kind not in "UO")
  chosen = data.draw(st.lists(st.sampled_from(numeric), unique=True) if numeric else st.just([]))
  batches, out = {}, {}
  for uid in chosen:
    batches[uid], out[uid] = _sentinel_like(plain[uid], rows=3, row=data.draw(st.integers(0, 2)))
  absent = np.full(4, 7.0)
  out[2**64 + 5] = None  # (None counts as absent; so does a uid the response lacks)
  got_state, got = codec.decode_step_response(buf, zero_copy=zero_copy,
                                              out={**out, 12345678901: absent})
  assert got_state == plain_state
  assert sorted(got) == sorted(plain)
  for uid in chosen:
    _assert_into_equals(plain[uid], out[uid], got[uid])
  for uid in set(plain) - set(chosen):
    assert_same_value(got[uid], plain[uid], None, f"[{uid}]")
  assert (absent == 7.0).all()


def _batch_case():
  image = np.arange(84 * 84 * 3, dtype=np.float32).reshape(84, 84, 3)
  return {1: image, 2: np.float64(0.5), 3: np.arange(5, dtype=np.int32) - 2,
          4: np.frombuffer(b"abcdef", np.uint8), 5: np.zeros((2, 0), np.int64), 6: True,
          7: np.array(["s"])}


def test_batched_client_pattern(codec):
  """N responses decoded into rows of (N, ...) batches; int8/uint8 copied, not viewed."""
  n = 4
  images = np.zeros((n, 84, 84, 3), np.float32)
  rewards = np.zeros(n, np.float64)
  ints = np.zeros((n, 5), np.int32)
  raw = np.zeros((n, 6), np.uint8)
  for i in range(n):
    obs = _batch_case()
    obs[1] = obs[1] + i
    obs[2] = np.float64(i)
    buf = bytearray(codec.encode_step_response(1, obs))
    out = {1: images[i], 2: rewards[i:i + 1].reshape(()), 3: ints[i], 4: raw[i]}
    _, got = codec.decode_step_response(buf, out=out)
    assert all(got[uid] is target for uid, target in out.items())
    assert got[7] == np.array(["s"])
    buf[:] = b"\0" * len(buf)  # the targets are copies, not views of buf
  for i in range(n):
    assert (images[i] == _batch_case()[1] + i).all()
  assert list(rewards) == [0.0, 1.0, 2.0, 3.0]
  assert (ints == np.arange(5) - 2).all() and (raw == np.frombuffer(b"abcdef", np.uint8)).all()


@pytest.mark.parametrize("value", [
    np.arange(300 * 300, dtype=np.float64).reshape(300, 300),
    np.arange(70000, dtype=np.int32) * 1000 - 5,
    np.arange(70000, dtype=np.uint64) << np.uint64(40),
    (np.arange(100000) % 3 == 0),
    np.arange(100000, dtype=np.uint8)], ids=lambda v: f"{v.dtype}{v.shape}")
def test_into_large_and_unaligned(codec, value):
  """Above the GIL-release threshold, into an aligned and an unaligned target."""
  buf = codec.encode_tensor(value)
  aligned = np.empty_like(value)
  assert codec.decode_tensor(buf, out=aligned) is aligned
  assert aligned.tobytes() == value.tobytes()
  raw = bytearray(value.nbytes + 1)
  unaligned = np.frombuffer(raw, value.dtype, value.size, 1).reshape(value.shape)
  assert codec.decode_tensor(memoryview(buf), out=unaligned) is unaligned
  assert unaligned.tobytes() == value.tobytes()


def test_broadcast_and_scalars_into(codec):
  one = codec.encode_tensor(np.float32(2.5))
  target = np.zeros((), np.float32)
  assert codec.decode_tensor(one, out=target) is target and target[()] == 2.5
  filled = pb.Tensor(floats=pb.Tensor.FloatArray(array=[3.0]), shape=[4, -1, 2]).SerializeToString()
  target = np.zeros((4, 1, 2), np.float32)
  assert codec.decode_tensor(filled, out=target) is target and (target == 3.0).all()
  inferred = pb.Tensor(int64s=pb.Tensor.Int64Array(array=range(6)), shape=[-1, 3]).SerializeToString()
  target = np.zeros((2, 3), np.int64)
  assert (codec.decode_tensor(inferred, out=target) == np.arange(6).reshape(2, 3)).all()
  split = (pb.Tensor(floats=pb.Tensor.FloatArray(array=[1, 2]), shape=[3]).SerializeToString() +
           pb.Tensor(floats=pb.Tensor.FloatArray(array=[3])).SerializeToString())
  target = np.zeros(3, np.float32)
  assert list(codec.decode_tensor(split, out=target)) == [1, 2, 3]


def _two_float_response():
  return {2: np.arange(6, dtype=np.float32).reshape(2, 3), 1: np.arange(4, dtype=np.float32)}


def _mismatches():
  """(name, out for decode_step_response of _two_float_response, error type, text)."""
  overlap_buf = bytearray(4096)
  good2 = np.zeros((2, 3), np.float32)
  readonly = np.zeros(4, np.float32)
  readonly.flags.writeable = False
  return [
      ("dtype", {1: np.zeros(4, np.float64)}, ValueError,
       "out[1] (observation 1) is float64 (4,) but the payload decodes to float32 (4,)"),
      ("shape", {2: np.zeros((3, 2), np.float32)}, ValueError,
       "out[2] (observation 2) is float32 (3, 2) but the payload decodes to float32 (2, 3)"),
      ("byte_order", {1: np.zeros(4, ">f4")}, ValueError,
       "out[1] (observation 1) is >f4 (4,) but the payload decodes to float32 (4,)"),
      ("scalar_target", {1: np.zeros((), np.float32)}, ValueError,
       "out[1] (observation 1) is float32 () but the payload decodes to float32 (4,)"),
      ("readonly", {1: readonly}, ValueError, "out[1] (observation 1) is read-only"),
      ("strided", {1: np.zeros(8, np.float32)[::2]}, ValueError,
       "out[1] (observation 1) is not C-contiguous"),
      ("list", {1: [0.0] * 4}, TypeError,
       "out[1] (observation 1) must be a numpy ndarray, not list"),
      ("not_a_mapping", [np.zeros(4, np.float32)], TypeError,
       "out must be a mapping {uid: array}, not list"),
      # A good target for the entry written first, a bad one for the second:
      ("second_bad", {2: good2, 1: np.zeros(5, np.float32)}, ValueError,
       "out[1] (observation 1) is float32 (5,) but the payload decodes to float32 (4,)"),
      ("overlap", {1: np.frombuffer(overlap_buf, np.float32, 4, 8)}, ValueError,
       "out[1] (observation 1) overlaps the buffer being decoded"),
  ], overlap_buf


@pytest.mark.parametrize("case", range(10))
def test_into_mismatch_writes_nothing(codec, case):
  cases, overlap_buf = _mismatches()
  name, out, error, text = cases[case]
  wire = codec.encode_step_response(1, _two_float_response())
  buf = wire
  if name == "overlap":
    overlap_buf[-len(wire):] = wire
    buf = memoryview(overlap_buf)[-len(wire):]
    out = {1: np.frombuffer(overlap_buf, np.float32, 4, len(overlap_buf) - len(wire) + 4)}
  targets = out if isinstance(out, dict) else dict(enumerate(out))
  before = {uid: np.array(t, copy=True) for uid, t in targets.items() if isinstance(t, np.ndarray)}
  with pytest.raises(error) as raised:
    codec.decode_step_response(buf, out=out)
  assert str(raised.value) == text
  for uid, copy in before.items():
    assert targets[uid].tobytes() == copy.tobytes(), f"{name}: out[{uid}] was written"


def test_into_errors_before_writing(codec):
  """Another observation's shape error or missing payload: no target written."""
  good = np.zeros(4, np.float32)
  for bad in (pb.Tensor(floats=pb.Tensor.FloatArray(array=[1, 2, 3]), shape=[2, 2]), pb.Tensor()):
    response = pb.EnvironmentResponse(step=pb.StepResponse(state=1))
    response.step.observations[1].CopyFrom(
        pb.Tensor(floats=pb.Tensor.FloatArray(array=[1, 2, 3, 4])))
    response.step.observations[9].CopyFrom(bad)
    buf = response.SerializeToString(deterministic=True)  # 9 first, then 1
    with pytest.raises((ValueError, TypeError)):
      codec.decode_step_response(buf, out={1: good})
    with pytest.raises((ValueError, TypeError)):
      codec.decode_step_response(buf[::-1][::-1], out={1: good})
    assert not good.any()


def test_decode_tensor_into_errors(codec):
  buf = codec.encode_tensor(np.arange(4, dtype=np.int32))
  with pytest.raises(ValueError, match=r"^out is int64 \(4,\) but the payload decodes to int32 \(4,\)$"):
    codec.decode_tensor(buf, out=np.zeros(4, np.int64))
  with pytest.raises(TypeError, match=r"^out must be a numpy ndarray, not dict$"):
    codec.decode_tensor(buf, out={})
  strings = codec.encode_tensor(np.array(["a", "b"]))
  with pytest.raises(ValueError, match=r"^out: a strings payload cannot be decoded"):
    codec.decode_tensor(strings, out=np.zeros(2, np.float32))
  with pytest.raises(TypeError, match="no payload"):
    codec.decode_tensor(b"", out=np.zeros(2, np.float32))


def test_into_with_object_field_overridden(codec):
  """A numeric payload after a string one: protobuf decodes it, then it is copied."""
  buf = (pb.Tensor(strings=pb.Tensor.StringArray(array=["x"])).SerializeToString() +
         pb.Tensor(int32s=pb.Tensor.Int32Array(array=[5, -6]), shape=[2]).SerializeToString())
  target = np.zeros(2, np.int32)
  assert codec.decode_tensor(buf, out=target) is target and list(target) == [5, -6]
  with pytest.raises(ValueError, match="is int64"):
    codec.decode_tensor(buf, out=np.zeros(2, np.int64))


def test_into_backends_agree_on_errors(both_backends):
  native, pure = both_backends
  wire = native.encode_step_response(1, {**_two_float_response(), 3: np.array(["a"])})
  cases = [out for _, out, _, _ in _mismatches()[0][:-1]]
  cases += [{3: np.zeros(1, np.float32)}, {3: np.zeros(1, object)}, {1: None, 7: 3},
            {1: np.zeros(4, np.float32)}]
  for out in cases:
    got = [outcome(lambda: m.decode_step_response(wire, out=out)) for m in (native, pure)]
    assert got[0][0] == got[1][0], (out, got)
    if got[0][0] == "raises":
      assert got[0] == got[1], (out, got)
  bufs = [native.encode_tensor(v) for v in (np.float32(1), np.arange(3), np.array(["a"]),
                                            np.zeros((2, 2), np.uint8))]
  targets = [np.zeros(()), np.zeros((), np.float32), np.zeros(3, np.int64), np.zeros(3),
             np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.int8), "x", None]
  for buf in bufs:
    for target in targets:
      got = [outcome(lambda: m.decode_tensor(buf, out=target)) for m in (native, pure)]
      assert got[0][0] == got[1][0], (buf, target, got)
      if got[0][0] == "raises":
        assert got[0] == got[1], (buf, target, got)
