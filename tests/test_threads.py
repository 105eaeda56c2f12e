"""Threads: 8 threads encoding and decoding at once give exactly the single-thread results.

The native backend releases the GIL around bulk copies and varint loops above
64 KiB, so these payloads (about 400 KB each) run truly in parallel there.
"""

import threading

import numpy as np

from support.agreement import assert_same_value

THREADS = 8
ROUNDS = 6


def _inputs():
  rng = np.random.default_rng(7)
  n = 100_000
  values = [
      rng.standard_normal(n).astype(np.float32).reshape(100, -1),
      rng.standard_normal(n // 2),
      rng.integers(-2**31, 2**31, n, dtype=np.int32),      # 10-byte varints for negatives
      rng.integers(-2**63, 2**63 - 1, n // 2, dtype=np.int64),
      rng.integers(0, 2**64 - 1, n // 2, dtype=np.uint64),
      rng.integers(0, 2**32, n, dtype=np.uint32),
      rng.integers(0, 256, 4 * n, dtype=np.uint8).reshape(400, -1),
      rng.integers(-128, 128, 4 * n, dtype=np.int8),
      rng.integers(0, 2, 4 * n).astype(bool),
  ]
  return values


def _work(codec, values):
  """Everything one thread does: tensors both ways, and step messages."""
  out = []
  for v in values:
    buf = codec.encode_tensor(v)
    out.append(buf)
    out.append(codec.decode_tensor(buf))
    out.append(codec.decode_tensor(bytearray(buf), zero_copy=True).copy())
  observations = dict(enumerate(values))
  response = codec.encode_step_response(1, observations)
  out.append(response)
  out.append(codec.decode_step_response(response))
  request = codec.encode_step_request(observations, [1, 2, 3])
  out.append(request)
  out.append(codec.decode_step_request(request, zero_copy=True))
  return out


def test_concurrent_results_match_a_single_thread(codec):
  values = _inputs()
  expected = _work(codec, values)
  results = [[] for _ in range(THREADS)]
  errors = []
  start = threading.Barrier(THREADS)

  def run(slot):
    try:
      start.wait()
      for _ in range(ROUNDS):
        results[slot].append(_work(codec, values))
    except BaseException as e:  # reported below, with the thread's slot
      errors.append((slot, e))

  threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  for slot, rounds in enumerate(results):
    assert len(rounds) == ROUNDS
    for got in rounds:
      assert len(got) == len(expected)
      for i, (a, b) in enumerate(zip(got, expected)):
        if isinstance(a, bytes):
          assert a == b, f"thread {slot}: encoded bytes {i} differ"
        else:
          assert_same_value(a, b, where=f"thread {slot} result {i}")


def test_inputs_are_not_written_by_concurrent_encoders(codec):
  values = _inputs()
  snapshot = [v.copy() for v in values]
  threads = [threading.Thread(target=_work, args=(codec, values)) for _ in range(THREADS)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  for v, s in zip(values, snapshot):
    assert np.array_equal(v, s)
