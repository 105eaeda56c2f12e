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
from test_step_codec import UIDS, action_values

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
