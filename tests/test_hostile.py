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
    LEN, SGROUP, U64, as_action, as_observation, check, check_decode, compare_tensor,
    expect_tensor, lfield, nested_groups, padded_varint, tag, tensor_bytes, varint, vfield)

FLOAT_RUN = lfield(1, np.float32(1).tobytes())
NUMERIC = ["floats", "doubles", "int8s", "int32s", "int64s", "uint8s", "uint32s", "uint64s",
           "bools"]


def huge_lengths():
  """Length prefixes of 2^63 - 1, 2^63, 2^64 - 1 (10 bytes) and 2^35 - 1 (5 bytes), everywhere."""
  cases = {}
  for name, n in (("2^63-1", 2**63 - 1), ("2^63", 2**63), ("2^64-1", U64),
                  ("2^35-1", 2**35 - 1), ("2^31", 2**31)):
    prefix = varint(n)
    cases[f"payload {name}"] = tag(1, LEN) + prefix + FLOAT_RUN
    cases[f"array {name}"] = lfield(1, tag(1, LEN) + prefix + b"\0" * 8)
    cases[f"shape {name}"] = tag(15, LEN) + prefix + b"\x01"
    cases[f"unknown {name}"] = tag(20, LEN) + prefix + FLOAT_RUN
    cases[f"bytes {name}"] = lfield(6, tag(1, LEN) + prefix + b"\x01")
  return cases


# name -> (decoder kind, bytes).  Every one must raise ValueError.
def hostile_cases():
  cases = {}
  for name, buf in huge_lengths().items():
    cases[f"tensor: {name}"] = ("tensor", buf)
    cases[f"action: {name}"] = ("request", as_action(buf))
    cases[f"observation: {name}"] = ("response", as_observation(buf))
  for name, prefix in (("2^63", varint(2**63)), ("2^64-1", varint(U64))):
    cases[f"step length {name}"] = ("request", tag(3, LEN) + prefix + b"\x00")
    cases[f"entry length {name}"] = ("response", lfield(3, tag(2, LEN) + prefix))
  big = 2**31 - 1
  for kind in NUMERIC:
    values = [True, False] if kind == "bools" else [1, 2]
    cases[f"{kind}: shape product beyond int64"] = ("tensor", tensor_bytes(kind, values, [big] * 3))
    cases[f"{kind}: -1 and product beyond int64"] = (
        "tensor", tensor_bytes(kind, values, [-1, big, big, big]))
    one = [True] if kind == "bools" else [7]
    cases[f"{kind}: broadcast to 10^9"] = ("tensor", tensor_bytes(kind, one, [1000, 1000, 1000]))
    cases[f"{kind}: broadcast to 10^9 (flat)"] = ("tensor", tensor_bytes(kind, one, [10**9]))
    cases[f"{kind}: broadcast beyond int64"] = ("tensor", tensor_bytes(kind, one, [big] * 4))
    cases[f"{kind}: broadcast action"] = ("request", as_action(tensor_bytes(kind, one, [10**9])))
    cases[f"{kind}: broadcast observation"] = (
        "response", as_observation(tensor_bytes(kind, one, [10**9])))
  cases["string broadcast to 10^9"] = (
      "tensor", lfield(10, lfield(1, b"abc")) + lfield(15, varint(10**9)))
  cases["proto broadcast to 10^9"] = (
      "tensor", lfield(11, lfield(1, lfield(1, b"type.googleapis.com/x"))) + lfield(15, varint(10**9)))
  # 11-byte varints in the shape, packed and unpacked.
  cases["shape varint of 11 bytes"] = (
      "tensor", lfield(1, FLOAT_RUN) + lfield(15, padded_varint(1, 11)))
  cases["unpacked shape varint of 11 bytes"] = (
      "tensor", lfield(1, FLOAT_RUN) + tag(15, 0) + padded_varint(1, 11))
  # Deep nesting: a million unknown groups (3 MB), and 200 000 nested inside a step.
  cases["a million nested groups"] = ("tensor", nested_groups(10**6) + lfield(1, FLOAT_RUN))
  cases["nested groups in a step"] = ("request", lfield(3, nested_groups(200_000)))
  cases["unterminated nested groups"] = ("tensor", tag(20, SGROUP) * 10**6)
  # Strings that are not UTF-8, in a tensor and inside step messages.
  for i, bad in enumerate((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\xf8ok")):
    strings = lfield(10, lfield(1, b"fine") + lfield(1, bad))
    cases[f"bad utf-8 {i}"] = ("tensor", strings)
    cases[f"bad utf-8 action {i}"] = ("request", as_action(strings))
    cases[f"bad utf-8 observation {i}"] = ("response", as_observation(strings))
  return cases


HOSTILE = hostile_cases()
DECODER = {"tensor": "decode_tensor", "request": "decode_step_request",
           "response": "decode_step_response"}


def run_case(backend, kind, buf):
  """Decodes buf with both zero_copy settings; returns the ValueError messages."""
  messages = []
  for zero_copy in (False, True):
    with pytest.raises(ValueError) as info:
      getattr(backend, DECODER[kind])(buf, zero_copy=zero_copy)
    messages.append(str(info.value))
  return messages


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


def test_the_cap_is_shared(both_backends):
  from dm_env_rpc_fast import _native
  assert live_codec.MAX_BROADCAST_BYTES == 1 << 28
  assert _native.DEFAULT_MAX_BROADCAST_BYTES == 1 << 28


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
import test_hostile
from dm_env_rpc_fast.codec import _native_backend, _pure
import pytest
# Everything is imported: from here on at most 512 MiB more address space.
with open("/proc/self/statm") as f:
  pages = int(f.read().split()[0])
vm = pages * resource.getpagesize()
resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), resource.RLIM_INFINITY))
for backend in (_native_backend, _pure):
  for name, (kind, buf) in sorted(test_hostile.HOSTILE.items()):
    try:
      test_hostile.run_case(backend, kind, buf)
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
