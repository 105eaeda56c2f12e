"""Native decoding from memory that changes while it is read (shared memory).

A shared-memory transport lets the native decoder read straight from a region
another, untrusted process may write at the same time.  Here a thread keeps
flipping bytes of a bytearray / mmap while the native backend decodes from it:
every call must return a result or raise ValueError / TypeError (or the
DmEnvRpcError of an error payload), never crash or touch memory out of bounds.
tools/sanitizer_tests.sh runs this under ASan + UBSan, which turns any
out-of-bounds access into a failure.

The flipper works through numpy ufuncs on >= 1 KB slices, which run without
the GIL, as does the native decoder on messages above 64 KiB: the two really
run at once.  Each flip is undone by the next one on the same slice, so the
buffer keeps returning to a valid message and the decoder gets deep into it.
The pure backend is not tested here: it assumes an unchanging buffer (a
transport copies the bytes out for it).
"""

import mmap
import os
import threading
import time

import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from dm_env_rpc_fast.v1.error import DmEnvRpcError
from support.backends import load_backend, pure_only

pytestmark = pytest.mark.skipif(pure_only(), reason="the native backend is not under test")

SECONDS = float(os.environ.get("DMRF_CONCURRENT_SECONDS", "2"))
MIN_CALLS = 200
ALLOWED = (ValueError, TypeError, DmEnvRpcError)


def _observations():
  rng = np.random.default_rng(3)
  return {
      # Varints of every length (negatives are 10 bytes) and plenty of them.
      1: rng.integers(-(2**31), 2**31, 30000, dtype=np.int64).astype(np.int32),
      2: rng.integers(0, 2**63, 4000, dtype=np.int64),
      3: rng.integers(0, 300, 20000).astype(np.uint32),
      4: rng.integers(0, 2, 5000).astype(bool),
      5: rng.standard_normal((64, 64, 3)).astype(np.float32),
      6: np.frombuffer(rng.bytes(3000), np.uint8),
      7: np.array(["a", "bc"]),
      8: np.float64(0.25),
  }


def _split_tensor() -> bytes:
  """An int64 tensor sent as several packed runs and unpacked elements."""
  parts = [pb.Tensor(int64s=pb.Tensor.Int64Array(array=range(i * 997, i * 997 + 900)))
           for i in range(30)]
  parts.append(pb.Tensor(int64s=pb.Tensor.Int64Array(array=[-1]), shape=[-1]))
  return b"".join(p.SerializeToString() for p in parts)


def _messages(native):
  obs = _observations()
  response = native.encode_step_response(1, obs)
  targets = {uid: np.empty(np.shape(v), np.asarray(v).dtype)
             for uid, v in obs.items() if uid != 7}
  assert len(response) > 64 << 10  # (so that the decoder releases the GIL)
  return [
      ("step_response", response, lambda buf: native.decode_step_response(buf)),
      ("step_response_zero_copy", response,
       lambda buf: native.decode_step_response(buf, zero_copy=True)),
      ("step_response_out", response, lambda buf: native.decode_step_response(buf, out=targets)),
      ("tensor_int32", native.encode_tensor(obs[1]), lambda buf: native.decode_tensor(buf)),
      ("tensor_int32_out", native.encode_tensor(obs[1]),
       lambda buf: native.decode_tensor(buf, out=targets[1])),
      ("tensor_split", _split_tensor(), lambda buf: native.decode_tensor(buf)),
      ("step_request", native.encode_step_request(obs, list(range(5000))),
       lambda buf: native.decode_step_request(buf)),
  ]


class Flipper(threading.Thread):
  """Flips bytes of `region` (a writable uint8 array) until stopped."""

  def __init__(self, region: np.ndarray, seed: int):
    super().__init__(daemon=True)
    self.region = region
    self.rng = np.random.default_rng(seed)
    self.stop = threading.Event()
    self.flips = 0

  def run(self):
    n = self.region.size
    masks = [np.uint8(0x80), np.uint8(0xFF), np.uint8(0x01), np.uint8(0x7F)]
    while not self.stop.is_set():
      size = int(self.rng.integers(1024, 8192))
      start = int(self.rng.integers(0, max(n - size, 1)))
      piece = self.region[start:start + size]
      mask = masks[self.flips % len(masks)]
      for _ in range(2):  # flip, then flip back: the message keeps coming back whole
        np.bitwise_xor(piece, mask, out=piece)  # (a ufunc: runs without the GIL)
      self.flips += 1
      if self.flips % 64 == 0:
        # Now and then a lasting change of a few scattered bytes, undone later.
        idx = self.rng.integers(0, n, 8)
        self.region[idx] ^= np.uint8(0x80)
        time.sleep(0)
        self.region[idx] ^= np.uint8(0x80)


def _buffers(message: bytes):
  raw = bytearray(message)
  mapped = mmap.mmap(-1, len(message))
  mapped[:] = message
  return [("bytearray", raw, raw), ("mmap", mapped, mapped)]


def _hammer(decode, buf, region_owner, seed):
  region = np.frombuffer(region_owner, np.uint8)
  flipper = Flipper(region, seed)
  outcomes = {"ok": 0, "error": 0}
  flipper.start()
  try:
    deadline = time.monotonic() + SECONDS
    calls = 0
    while calls < MIN_CALLS or time.monotonic() < deadline:
      try:
        decode(buf)
        outcomes["ok"] += 1
      except ALLOWED:
        outcomes["error"] += 1
      calls += 1
  finally:
    flipper.stop.set()
    flipper.join()
  del region
  return outcomes, flipper.flips


@pytest.mark.parametrize("case", range(7))
def test_decode_while_bytes_change(case):
  native = load_backend("native")
  name, message, decode = _messages(native)[case]
  for kind, buf, owner in _buffers(message):
    outcomes, flips = _hammer(decode, buf, owner, seed=case)
    assert flips > 0, f"{name}/{kind}: the flipper never ran"
    assert outcomes["ok"] + outcomes["error"] >= MIN_CALLS
    # The buffer is whole again once the flipper stops: it decodes as before.
    expected = decode(message)
    again = decode(buf)
    assert type(again) is type(expected), f"{name}/{kind}"
