"""Hostile sizes and shapes: each is a clear ValueError, raised promptly, with bounded memory.

Lengths near 2^63, shapes whose product overflows int64, a billion-element
broadcast of a one-element payload (refused by the MAX_BROADCAST_BYTES cap),
10-byte varints in the shape, deep nesting, strings that are not UTF-8.
`test_hostile_inputs_in_bounded_memory` runs them all again in a child process
whose address space is capped, so an unbounded allocation anywhere fails it.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from dm_env_rpc_fast import codec as live_codec
from support.codec_reference import (
    check, check_decode, compare_tensor, expect_tensor, lfield, nested_groups, padded_varint,
    tensor_bytes, varint, vfield)
from support.hostile import HOSTILE, NUMERIC, run_case
from support.malformed import FLOAT_RUN


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_is_a_value_error(codec, name):
  kind, buf = HOSTILE[name]
  for message in run_case(codec, kind, buf):
    assert message  # says something
  if "broadcast" in name and "string" not in name and "proto" not in name:
    assert "MAX_BROADCAST_BYTES" in message and "would broadcast" in message


def test_broadcast_errors_are_worded_alike(both_backends):
  native, pure = both_backends
  for name, (kind, buf) in HOSTILE.items():
    if "broadcast" in name:
      assert run_case(native, kind, buf) == run_case(pure, kind, buf), name


def test_the_limits_are_shared(both_backends):
  """The broadcast cap and the nesting budget, each defined once per backend, agree."""
  from dm_env_rpc_fast import _native
  from dm_env_rpc_fast.codec import _common
  assert live_codec.MAX_BROADCAST_BYTES == 1 << 28
  assert _native.DEFAULT_MAX_BROADCAST_BYTES == 1 << 28
  assert (_native.MAX_DEPTH, _native.NESTING_ERROR) == (_common.MAX_DEPTH, _common.NESTING_ERROR)
  too_deep = nested_groups(_common.MAX_DEPTH + 1) + tensor_bytes("floats", [1.0])
  for backend in both_backends:
    with pytest.raises(ValueError, match=_common.NESTING_ERROR):
      backend.decode_tensor(too_deep)


def test_broadcasts_under_the_cap_still_work(codec):
  for kind in NUMERIC:
    one = [True] if kind == "bools" else [7]
    got = codec.decode_tensor(tensor_bytes(kind, one, [64, -1, 0, 32]))
    assert got.shape == (64, 1, 1, 32) and got.flags.writeable
    check(codec, "tensor", tensor_bytes(kind, one, [64, -1, 0, 32]))


_BOUNDARY_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from support.codec_reference import tensor_bytes
from dm_env_rpc_fast import codec
from dm_env_rpc_fast.codec import _native_backend, _pure
assert codec.MAX_BROADCAST_BYTES == 4096, codec.MAX_BROADCAST_BYTES
for backend in (_native_backend, _pure):
  for kind, size in (("doubles", 8), ("floats", 4), ("uint8s", 1), ("bools", 1)):
    one = [True] if kind == "bools" else [3]
    fits = backend.decode_tensor(tensor_bytes(kind, one, [4096 // size]))
    assert fits.nbytes == 4096, (backend.NAME, kind)
    try:
      backend.decode_tensor(tensor_bytes(kind, one, [4096 // size + 1]))
    except ValueError as e:
      assert "more than 4096 bytes" in str(e), e
    else:
      raise AssertionError((backend.NAME, kind, "not refused"))
  s = backend.decode_tensor(b"R\x05\n\x03abc" + b"z\x02\xd5\x02")  # '<U3': 12 bytes x 341
  assert s.shape == (341,)
  try:
    backend.decode_tensor(b"R\x05\n\x03abc" + b"z\x02\xd6\x02")  # 342 x 12 > 4096
  except ValueError:
    pass
  else:
    raise AssertionError("string broadcast not refused")
print("ok")
"""


def _subprocess_env(**extra):
  """The environment for a child that must import the same dm_env_rpc_fast as we do.

  The children run in tests/ (so the checkout's source package, which may lack
  the extension, is not on their path) with our package's parent on PYTHONPATH.
  """
  import dm_env_rpc_fast
  parent = os.path.dirname(os.path.dirname(os.path.abspath(dm_env_rpc_fast.__file__)))
  env = dict(os.environ, **extra)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [parent, env.get("PYTHONPATH")]))
  env.pop("DM_ENV_RPC_FAST_PURE", None)
  return env


_TESTS = os.path.dirname(os.path.abspath(__file__))


def test_the_cap_can_be_set_and_is_exact_on_both_backends(both_backends):
  env = _subprocess_env(DM_ENV_RPC_FAST_MAX_BROADCAST_BYTES="4096")
  out = subprocess.run([sys.executable, "-c", _BOUNDARY_SCRIPT, _TESTS], cwd=_TESTS,
                       env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_bad_cap_setting_is_refused():
  env = _subprocess_env(DM_ENV_RPC_FAST_MAX_BROADCAST_BYTES="lots")
  out = subprocess.run([sys.executable, "-c", "import dm_env_rpc_fast.codec"], cwd=_TESTS,
                       env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode != 0 and "DM_ENV_RPC_FAST_MAX_BROADCAST_BYTES" in out.stderr


@pytest.mark.parametrize("dims", [
    [-1], [-1, 2], [2, -1], [-2**31, 1], [2**31 - 1], [-5, 1],
])
def test_ten_byte_varints_in_the_shape(codec, dims):
  """Negative int32 dimensions arrive as 10-byte varints; protobuf takes them, so do we."""
  encoded = b"".join(varint(d) for d in dims)  # negatives: 10 bytes, sign-extended
  payloads = [FLOAT_RUN]  # one element: broadcast
  if min(dims) >= -1:  # (a reshape with a dimension below -1: see codec_reference.Excluded)
    payloads.append(lfield(1, np.zeros(2, "<f4").tobytes()))
  for payload in payloads:
    buf = lfield(1, payload) + lfield(15, encoded)
    check(codec, "tensor", buf)
    unpacked = lfield(1, payload) + b"".join(vfield(15, d) for d in dims)
    check(codec, "tensor", unpacked)
  # A padded 10-byte varint of a small dimension, and one whose high bits are dropped.
  for raw in (padded_varint(2, 10), b"\x82\x80\x80\x80\x80\x80\x80\x80\x80\x7f"):
    buf = lfield(1, lfield(1, np.zeros(2, "<f4").tobytes())) + lfield(15, raw)
    check_decode(lambda: codec.decode_tensor(buf), expect_tensor(buf), compare_tensor)


_BOUNDED_SCRIPT = r"""
import resource, sys
sys.path.insert(0, sys.argv[1])
from support import hostile
from dm_env_rpc_fast.codec import _native_backend, _pure
import pytest
# Everything is imported: from here on at most 512 MiB more address space.
with open("/proc/self/statm") as f:
  pages = int(f.read().split()[0])
vm = pages * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), resource.RLIM_INFINITY))
for backend in (_native_backend, _pure):
  for name, (kind, buf) in sorted(hostile.HOSTILE.items()):
    try:
      hostile.run_case(backend, kind, buf)
    except BaseException as e:
      print(f"{backend.NAME}: {name}: {type(e).__name__}: {e}", file=sys.stderr)
      raise
print("ok")
"""


def _under_asan() -> bool:
  with open("/proc/self/maps") as f:
    return "asan" in f.read()


def test_hostile_inputs_in_bounded_memory(both_backends):
  if _under_asan():
    pytest.skip("AddressSanitizer reserves terabytes of address space: RLIMIT_AS cannot apply")
  out = subprocess.run([sys.executable, "-c", _BOUNDED_SCRIPT, _TESTS], cwd=_TESTS,
                       env=_subprocess_env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]
