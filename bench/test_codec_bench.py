"""Tensor encode / decode: every implementation, dtype and size, side by side.

The same cases and implementations as `dm-env-rpc-fast bench`'s codec section
(`dm_env_rpc_fast.benchmark.cases` / `.impls`), with more of them: every
numeric dtype, both data sets of the varint dtypes, the (84,84,3) shape, and
the zero-copy decode.

Ids read `<op>-<dtype>[_<variant>]-<size>-<impl>`, e.g. `encode-float32-1MB-native`,
`decode_zc-float64-84x84x3-pure`, `decode-int64_small-64KB-upstream`.  Each group
(`<op>-<dtype>-<size>`) holds the implementations of one case, run back to back.

Every benchmark also checks its result, with the harness's checks: encoders
must return protobuf's exact bytes, decoders the original array (dtype and
shape included), our copying decode a writable copy and our zero-copy decode a
read-only view of the wire bytes (float32/float64).
"""

import pytest

from bench_cases import (BACKENDS, DATA_KINDS, FIXED_WIDTH, IMPLS, SIZES, call_for, checked,
                         count_faults, get_case, kind_label, record)


def _params(ops):
  # Implementation innermost, so the implementations of a case run one after
  # another (same data, same moment on a noisy machine).
  params = []
  for op in ops:
    for dtype, variant in DATA_KINDS:
      for size in SIZES:
        for impl in IMPLS:
          if op == "decode_zc" and (impl not in BACKENDS or dtype not in FIXED_WIDTH
                                    or size == "scalar"):
            continue  # zero_copy only changes fixed-width arrays, and only in our codec
          params.append(pytest.param(
              op, dtype, variant, size, impl,
              id=f"{op}-{kind_label(dtype, variant)}-{size}-{impl}"))
  return params


@pytest.mark.parametrize("op, dtype, variant, size, impl",
                         _params(["encode", "decode", "decode_zc"]))
def test_codec(benchmark, op, dtype, variant, size, impl):
  case = get_case(dtype, variant, size)
  call = call_for(op, impl, case)
  record(benchmark, group=f"{op}-{case.label}", op=op, dtype=dtype, variant=variant,
         size=size, impl=impl, nbytes=case.nbytes, offset=None)
  call.check(benchmark(call.fn))
  checked(benchmark)
  if benchmark.enabled:
    count_faults(benchmark, call.fn)
