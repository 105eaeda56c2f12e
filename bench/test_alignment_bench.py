"""Source alignment of fixed-width encode, and the memcpy baselines.

glibc's memcpy on some hosts runs ~13x slower when (dst - src) mod 4096 is small
and positive (4K aliasing), so the native encoder is measured with its source
array at several byte offsets from a 4096-aligned address.  The destination is
the encoder's own fresh bytes object, so its address is malloc's choice.

memcpy baselines (np.copyto between preallocated uint8 buffers):

- `memcpy-<N>B-off<k>`: N bytes from (page + k) to a page-aligned destination.
  off0 exists for every size a codec case moves: it is the reference that
  summarise.py's "% of memcpy" divides by.
- `memcpy-<N>B-alias16`: source page-aligned, destination at page + 16: the case
  that exposes the 4K-aliasing slowdown, if this host's memcpy has it.
"""

import numpy as np
import pytest

from bench_cases import (DATA_KINDS, FIXED_WIDTH, SIZES, aligned_buffer, check_bytes, checked,
                         count_faults, get_case, record, require_backend, shape_of)

OFFSETS = (0, 4, 8, 16, 32, 48)
OFFSET_SIZES = ("64KB", "84x84x3", "1MB")


@pytest.mark.parametrize("dtype, size, offset", [
    pytest.param(dtype, size, offset, id=f"encode-{dtype}-{size}-off{offset}-native")
    for dtype in FIXED_WIDTH for size in OFFSET_SIZES for offset in OFFSETS])
def test_encode_offset(benchmark, dtype, size, offset):
  encode_tensor = require_backend("native").encode_tensor
  case = get_case(dtype, "", size)
  # A slice of a larger uint8 buffer, viewed as the dtype: how an unaligned
  # array arises in practice (a field of a packed record, a sliced frame).
  source = aligned_buffer(case.nbytes, offset).view(case.array.dtype).reshape(case.shape)
  source[...] = case.array
  record(benchmark, group=f"offsets-{dtype}-{size}", op="encode", dtype=dtype, variant="",
         size=size, impl="native", nbytes=case.nbytes, offset=offset)
  check_bytes(benchmark(encode_tensor, source), case.wire)
  checked(benchmark)
  if benchmark.enabled:
    count_faults(benchmark, encode_tensor, source)


def _memcpy_params():
  sizes = {}  # nbytes -> does an offset case move it
  for dtype, _ in DATA_KINDS:
    for size in SIZES:
      shape = shape_of(dtype, size)
      if shape:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        sizes[nbytes] = sizes.get(nbytes, False) or (size in OFFSET_SIZES and dtype in FIXED_WIDTH)
  params = []
  for nbytes in sorted(sizes):
    layouts = ([(off, 0) for off in OFFSETS] + [(0, 16)]) if sizes[nbytes] else [(0, 0)]
    for src_off, dst_off in layouts:
      name = f"alias{dst_off}" if dst_off else f"off{src_off}"
      params.append(pytest.param(nbytes, src_off, dst_off, id=f"memcpy-{nbytes}B-{name}"))
  return params


@pytest.mark.parametrize("nbytes, src_off, dst_off", _memcpy_params())
def test_memcpy(benchmark, nbytes, src_off, dst_off):
  src = aligned_buffer(nbytes, src_off)
  src[:] = np.random.default_rng(nbytes).integers(0, 256, nbytes, dtype=np.uint8)
  dst = aligned_buffer(nbytes, dst_off)
  dst[:] = 0  # fault the pages in before timing
  record(benchmark, group=f"memcpy-{nbytes}B", op="memcpy", dtype="uint8", variant="",
         size=f"{nbytes}B", impl="memcpy", nbytes=nbytes,
         offset=src_off if not dst_off else None, dst_offset=dst_off)
  benchmark(np.copyto, dst, src)
  assert np.array_equal(dst, src)
  checked(benchmark)
