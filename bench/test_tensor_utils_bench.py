"""tensor_utils.pack_tensor / unpack_tensor: ours (native, pure) against dm-env-rpc's.

Ids read `<op>-<dtype>-84x84x3-<impl>`; each group holds one case's
implementations, run back to back.  Unlike test_codec_bench.py these measure
the drop-in API that returns and takes protobuf `Tensor` messages, so a
message is built (pack) or serialised (unpack) around the codec.  The
"upstream" implementation is the dm-env-rpc package itself, imported in the
same process (the two share their message classes).

Every benchmark checks its result against the input array.
"""
import numpy as np
import pytest

from bench_cases import checked, record, require_backend

import dm_env_rpc_fast.codec as live_codec
from dm_env_rpc_fast.v1 import tensor_utils

try:
  from dm_env_rpc.v1 import tensor_utils as upstream_tensor_utils
except ImportError:
  upstream_tensor_utils = None

SHAPE = (84, 84, 3)
DTYPES = ("float32", "float64", "int32", "int64", "uint8", "bool")
IMPLS = ("native", "pure", "upstream")
_SWAPPED = ("encode_tensor", "decode_tensor")


def _array(dtype):
  rng = np.random.default_rng(84)
  if dtype == "bool":
    return rng.integers(0, 2, SHAPE).astype(bool)
  if np.dtype(dtype).kind == "f":
    return rng.standard_normal(SHAPE).astype(dtype)
  return rng.integers(0, 100, SHAPE).astype(dtype)


@pytest.fixture
def module_for(monkeypatch):
  def pick(impl):
    if impl == "upstream":
      if upstream_tensor_utils is None:
        pytest.fail("dm-env-rpc is not installed: `pip install .[test]` installs it", pytrace=False)
      return upstream_tensor_utils
    backend = require_backend(impl)
    for name in _SWAPPED:
      monkeypatch.setattr(live_codec, name, getattr(backend, name))
    return tensor_utils
  return pick


def _params():
  return [pytest.param(dtype, impl, id=f"{dtype}-84x84x3-{impl}") for dtype in DTYPES for impl in IMPLS]


@pytest.mark.parametrize("dtype, impl", _params())
def test_pack_tensor(benchmark, module_for, dtype, impl):
  module = module_for(impl)
  value = _array(dtype)
  record(benchmark, group=f"pack_tensor-{dtype}-84x84x3", op="pack_tensor", dtype=dtype, impl=impl,
         nbytes=value.nbytes)
  tensor = benchmark(module.pack_tensor, value)
  np.testing.assert_array_equal(upstream_or_ours_unpack(tensor), value)
  checked(benchmark)


@pytest.mark.parametrize("dtype, impl", _params())
def test_unpack_tensor(benchmark, module_for, dtype, impl):
  value = _array(dtype)
  tensor = tensor_utils.pack_tensor(value)
  module = module_for(impl)
  record(benchmark, group=f"unpack_tensor-{dtype}-84x84x3", op="unpack_tensor", dtype=dtype,
         impl=impl, nbytes=value.nbytes)
  result = benchmark(module.unpack_tensor, tensor)
  assert result.dtype == value.dtype and result.shape == value.shape
  np.testing.assert_array_equal(result, value)
  checked(benchmark)


def upstream_or_ours_unpack(tensor):
  # The check must not depend on the implementation under test.
  return (upstream_tensor_utils or tensor_utils).unpack_tensor(tensor)
