"""Memory: long encode/decode runs keep a stable resident set, and nothing leaks references.

- 100,000 encode/decode cycles of every dtype on the native backend (20,000
  on the pure one, which is all Python and numpy), and mixed runs with strings,
  protos, step messages and malformed input (error paths are where leaks hide):
  the resident set after each run is within a generous bound of where it was
  after a warm-up.
- The input buffer's reference count is unchanged by decodes whose results
  are dropped; zero-copy views (of tensors and inside step messages) release
  the buffer, and a bytearray's export, when the last view is dropped.

(10,000 loopback steps through a Connection are left to the connection's tests.)
"""

import gc
import sys
import weakref

import numpy as np
import pytest

from support.leak_workload import MALFORMED, VALUES

CYCLES = 100_000
WARMUP = 10_000
# A leak of one small object per cycle is 5+ MB over the run; allocator noise is far less.
RSS_BOUND = 16 << 20


def _under_asan() -> bool:
  with open("/proc/self/maps") as f:
    return "asan" in f.read()


# AddressSanitizer's quarantine holds freed memory (256 MB by default), so the
# resident set grows by design there: only the reference checks apply.
UNDER_ASAN = _under_asan()


def assert_rss_growth_below(grown: int, bound: int, what: str):
  if not UNDER_ASAN:
    assert grown < bound, f"{what}: RSS grew by {grown / 2**20:.1f} MiB"


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096  # resident pages


def _cycle(codec, name, value, zero_copy):
  buf = codec.encode_tensor(value)
  return codec.decode_tensor(buf, zero_copy=zero_copy)


def _run(codec, n):
  items = list(VALUES.items())
  for i in range(n):
    name, value = items[i % len(items)]
    _cycle(codec, name, value, i & 1)
    if i % 8 == 0:
      try:
        codec.decode_tensor(MALFORMED[i % len(MALFORMED)])
      except ValueError:
        pass


def test_mixed_cycles_keep_a_stable_rss(codec):
  """Every dtype, strings, protos and malformed input, interleaved."""
  _run(codec, WARMUP)
  gc.collect()
  before = rss_bytes()
  _run(codec, 5 * WARMUP)
  gc.collect()
  grown = rss_bytes() - before
  assert_rss_growth_below(grown, RSS_BOUND, "run")


@pytest.mark.parametrize("dtype", [k for k in VALUES if k not in ("str", "proto")])
def test_each_dtype_does_not_leak(codec, dtype):
  """CYCLES encode/decode cycles (a fifth of them on the slower pure backend)."""
  cycles = CYCLES if codec.NAME == "native" else CYCLES // 5
  value = VALUES[dtype]
  buf = codec.encode_tensor(value)
  for i in range(WARMUP):
    codec.decode_tensor(codec.encode_tensor(value), zero_copy=i & 1)
  gc.collect()
  before = rss_bytes()
  refs = sys.getrefcount(buf)
  for i in range(cycles):
    codec.decode_tensor(codec.encode_tensor(value), zero_copy=i & 1)
    if i % 10 == 0:
      codec.decode_tensor(buf, zero_copy=True)
  gc.collect()
  assert sys.getrefcount(buf) == refs, "decodes left references to their input"
  grown = rss_bytes() - before
  assert_rss_growth_below(grown, RSS_BOUND, f"{dtype}, {cycles} cycles")


def test_step_cycles_keep_a_stable_rss(codec):
  actions = {1: VALUES["float32"], 2: VALUES["int64"], 3: VALUES["str"], 4: VALUES["uint8"]}
  def run(n):
    for i in range(n):
      request = codec.encode_step_request(actions, [1, 2])
      got, requested = codec.decode_step_request(request, zero_copy=i & 1)
      response = codec.encode_step_response(1, got)
      codec.decode_step_response(response, zero_copy=i & 1)
  run(2000)
  gc.collect()
  before = rss_bytes()
  run(20_000)
  gc.collect()
  grown = rss_bytes() - before
  assert_rss_growth_below(grown, RSS_BOUND, "run")


def test_error_paths_do_not_hold_the_input(codec):
  for buf in MALFORMED:
    refs = sys.getrefcount(buf)
    for _ in range(1000):
      for decode in (codec.decode_tensor, codec.decode_step_request, codec.decode_step_response):
        try:
          decode(buf)
        except ValueError:
          pass
    assert sys.getrefcount(buf) == refs, buf.hex()


class Owned(bytearray):
  """A bytearray that can be weakly referenced."""


@pytest.mark.parametrize("which", ["request", "response"])
def test_step_views_release_the_message(codec, which):
  actions = {1: VALUES["float32"], 2: VALUES["uint8"], 3: VALUES["int8"], 4: VALUES["float64"]}
  if which == "request":
    raw = codec.encode_step_request(actions, [])
    decode = lambda b: codec.decode_step_request(b, zero_copy=True)[0]
  else:
    raw = codec.encode_step_response(1, actions)
    decode = lambda b: codec.decode_step_response(b, zero_copy=True)[1]
  buf = Owned(raw)
  alive = weakref.ref(buf)
  values = decode(buf)
  assert any(np.shares_memory(v, np.frombuffer(buf, np.uint8)) for v in values.values())
  with pytest.raises(BufferError):  # a live view pins the bytearray's memory
    buf.extend(b"x")
  del buf
  gc.collect()
  assert alive() is not None
  keep = values[3]
  del values
  gc.collect()
  assert alive() is not None, "the message died while a view of it is alive"
  assert keep.tolist() == VALUES["int8"].tolist()
  del keep
  gc.collect()
  assert alive() is None, "the message outlived every view of it"


def test_dropping_views_releases_the_export(codec):
  buf = bytearray(codec.encode_tensor(VALUES["float32"]))
  refs = sys.getrefcount(buf)
  views = [codec.decode_tensor(buf, zero_copy=True) for _ in range(100)]
  with pytest.raises(BufferError):
    buf.extend(b"x")
  del views
  gc.collect()
  assert sys.getrefcount(buf) == refs
  buf.extend(b"x")  # no export left: the bytearray may resize again
