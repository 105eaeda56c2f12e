"""Tensor encode / decode: every implementation, dtype and size, side by side.

Ids read `<op>-<dtype>[_<variant>]-<size>-<impl>`, e.g. `encode-float32-1MB-native`,
`decode_zc-float64-84x84x3-pure`, `decode-int64_small-64KB-upstream`.  Each group
(`<op>-<dtype>-<size>`) holds the implementations of one case, run back to back.

Every benchmark also checks its result: encoders must return protobuf's exact
bytes, decoders the original array (dtype and shape included).
"""

import numpy as np
import pytest

from bench_cases import (BACKENDS, COPIED_FIXED_WIDTH, DATA_KINDS, FIXED_WIDTH, IMPLS, SIZES,
                         assert_same_bytes, check_decoded, check_parsed, checked, count_faults, get_case,
                         kind_label, protobuf_decode, record, require_backend, upstream_decode,
                         upstream_encode)


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


@pytest.mark.parametrize("op, dtype, variant, size, impl", _params(["encode"]))
def test_encode(benchmark, op, dtype, variant, size, impl):
  case = get_case(dtype, variant, size)
  if impl in BACKENDS:
    fn, args = require_backend(impl).encode_tensor, (case.value,)
  elif impl == "upstream":
    fn, args = upstream_encode, (case.value,)
  else:  # protobuf: serialising a message that is already built
    fn, args = case.message.SerializeToString, ()
  record(benchmark, group=f"{op}-{case.label}", op=op, dtype=dtype, variant=variant,
         size=size, impl=impl, nbytes=case.nbytes, offset=None)
  assert_same_bytes(benchmark(fn, *args), case.wire)
  checked(benchmark)
  if benchmark.enabled:
    count_faults(benchmark, fn, *args)


@pytest.mark.parametrize("op, dtype, variant, size, impl", _params(["decode", "decode_zc"]))
def test_decode(benchmark, op, dtype, variant, size, impl):
  case = get_case(dtype, variant, size)
  kwargs = {}
  if impl in BACKENDS:
    fn = require_backend(impl).decode_tensor
    if op == "decode_zc":
      kwargs = {"zero_copy": True}
  elif impl == "upstream":
    fn = upstream_decode
  else:  # protobuf: parsing into a message, no numpy at all
    fn = protobuf_decode
  record(benchmark, group=f"{op}-{case.label}", op=op, dtype=dtype, variant=variant,
         size=size, impl=impl, nbytes=case.nbytes, offset=None)
  result = benchmark(fn, case.wire, **kwargs)
  if impl == "protobuf":
    check_parsed(result, case)
  else:
    check_decoded(result, case)
  # Make sure each op measures what its name says: a view of the wire bytes
  # or a fresh copy.
  if impl in BACKENDS and dtype in COPIED_FIXED_WIDTH and size != "scalar":
    shares = np.shares_memory(result, np.frombuffer(case.wire, np.uint8))
    if op == "decode_zc":
      assert shares and not result.flags.writeable, "zero_copy decode did not return a view"
    else:
      assert not shares and result.flags.writeable, "copying decode returned a view"
  checked(benchmark)
  if benchmark.enabled:
    count_faults(benchmark, fn, case.wire, **kwargs)
