"""Replays the kept fuzzer inputs (fuzz/regressions/<target>/*) on both Python backends.

tools/fuzz.sh replays them through the C++ targets under ASan/UBSan; here each
file is decoded as a Tensor, an EnvironmentRequest and an EnvironmentResponse
by each backend and compared with protobuf's reading (a ValueError where
protobuf rejects it).  A crashing input found by a fuzzer goes into the
directory of its target, and so becomes a test here too.
"""

import glob
import os

import pytest

from support.codec_reference import Excluded, check

REGRESSIONS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fuzz",
                           "regressions")
FILES = sorted(glob.glob(os.path.join(REGRESSIONS, "*", "*")))


def test_there_are_kept_inputs():
  assert len(FILES) > 50, f"no kept fuzzer inputs found under {REGRESSIONS}"


@pytest.mark.parametrize("path", FILES, ids=[os.path.relpath(p, REGRESSIONS) for p in FILES])
def test_kept_input(codec, path):
  with open(path, "rb") as f:
    buf = f.read()
  for kind in ("tensor", "request", "response"):
    for zero_copy in (False, True):
      try:
        check(codec, kind, buf, zero_copy=zero_copy)
      except Excluded:
        pass
