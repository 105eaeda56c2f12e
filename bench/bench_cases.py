"""The pytest side of the codec benchmarks: the harness's cases, plus what pytest needs.

The cases (dtypes, sizes, data, reference bytes, checks) and the
implementations (native, pure, upstream, protobuf, memcpy) are the ones
`dm-env-rpc-fast bench` measures: they live in the package
(`dm_env_rpc_fast.benchmark.cases` and `.impls`), and this module adds the
pytest glue: skipping or failing on a missing implementation, recording what
`summarise.py` reads back, counting page faults.

- ``native`` / ``pure``: the two codec backends, imported directly so that both
  run in the same process (skipped, with the reason, when one does not import);
- ``upstream``: dm-env-rpc's own ``tensor_utils`` (a test fails when dm-env-rpc
  is missing: ``pip install ".[test]"`` installs it);
- ``protobuf``: protobuf alone, on a message that is already built;
- ``memcpy``: ``np.copyto`` of the same number of bytes between preallocated,
  page-aligned buffers: the bandwidth ceiling for anything that moves the bytes.
"""

import resource

import pytest

from dm_env_rpc_fast.benchmark import impls
from dm_env_rpc_fast.benchmark.cases import (  # re-exported to the test modules (__all__)
    COPIED_FIXED_WIDTH, DATA_KINDS, FIXED_WIDTH, SIZES, VARINT, Case, aligned_buffer, check_bytes,
    get_case, kind_label, shape_of)

BACKENDS = impls.BACKENDS
BASELINES = ("upstream", "protobuf")
IMPLS = BACKENDS + BASELINES


def backend(name):
  """(module, None) for a codec backend, or (None, why it did not import)."""
  return impls.backend(name)


def require_backend(name):
  """The backend module, or skip the test saying why it is missing."""
  module, why = impls.backend(name)
  if module is None:
    pytest.skip(f"backend {name!r} unavailable ({why})")
  return module


def call_for(op, impl, case):
  """The harness's call and check for (op, impl, case); skips or fails like the suite should.

  A backend that does not import skips (the summary then says NOT MEASURED); a
  missing dm-env-rpc fails, as it is part of the test extra.
  """
  try:
    return impls.make_call(op, impl, case)
  except impls.Unavailable as e:
    if impl in BACKENDS:
      pytest.skip(f"backend {impl!r} unavailable ({e.reason})")
    if impl == "upstream" and e.status == "not installed":
      pytest.fail(f"{e.reason}: `pip install \".[test]\"` installs it", pytrace=False)
    pytest.skip(e.reason)
    raise  # unreachable: pytest.skip raises


def record(benchmark, **info):
  """Names the benchmark's group and stores what summarise.py needs to read it back.

  `correct` starts False and the test sets it True once its result checks out:
  a timing whose result was wrong still lands in the JSON (the check runs after
  the timing), and summarise.py must not credit it.
  """
  benchmark.group = info.pop("group")
  benchmark.extra_info.update(info, correct=False)


def count_faults(benchmark, fn, *args, calls=3, **kwargs):
  """Records the minor page faults per call of fn, in steady state.

  Warmup and steady sizes should make this 0 for every case (malloc reusing
  mapped memory); where it is not, the time includes first-touch page faults,
  which run at ~1 GB/s on these VMs, and the summary shows it.  One call first,
  uncounted: the result checks in between may have moved the heap around.
  """
  fn(*args, **kwargs)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    fn(*args, **kwargs)
  after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  benchmark.extra_info["faults_per_call"] = (after - before) / calls


def checked(benchmark):
  """Marks the benchmark's result as verified (call after the last assertion)."""
  benchmark.extra_info["correct"] = True


__all__ = [
    "BACKENDS", "BASELINES", "IMPLS", "COPIED_FIXED_WIDTH", "DATA_KINDS", "FIXED_WIDTH", "SIZES",
    "VARINT", "Case", "aligned_buffer", "backend", "call_for", "check_bytes", "checked",
    "count_faults", "get_case", "kind_label", "record", "require_backend", "shape_of",
]
