"""The codec implementations measured side by side, as (call, check) pairs per case.

- `native`, `pure`: the two codec backends, imported directly (their modules
  are `dm_env_rpc_fast.codec.BACKEND_MODULES`), so both run in one process
  whichever one the package picked;
- `upstream`: dm-env-rpc itself, when it is importable:
  `tensor_utils.pack_tensor(value).SerializeToString()` to encode,
  `tensor_utils.unpack_tensor(Tensor.FromString(buf))` to decode;
- `protobuf`: protobuf alone: `SerializeToString()` of a message that is
  already built, `Tensor.FromString(buf)`; the floor under any
  protobuf-object path;
- `memcpy`: `np.copyto` of the same number of bytes between preallocated,
  page-aligned buffers: the ceiling for anything that moves the bytes.

Operations: `encode` (value -> wire bytes), `decode` (wire bytes -> array,
copying, the default) and `decode_zc` (`zero_copy=True`, our backends only).
"""

import functools
import importlib
from typing import Any, Callable, NamedTuple, Optional, Tuple

import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.benchmark import cases as cases_lib
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

BACKENDS = ("native", "pure")
IMPLS = ("native", "pure", "upstream", "protobuf", "memcpy")
OPS = ("encode", "decode", "decode_zc")


class Unavailable(Exception):
  """An implementation cannot run a case.

  Attributes:
    status: "not installed" (a module that does not import) or "n/a" (the
      operation means nothing for this implementation or case).
    reason: why, for the reader.
  """

  def __init__(self, status: str, reason: str):
    super().__init__(f"{status}: {reason}")
    self.status, self.reason = status, reason


class Call(NamedTuple):
  """What to time (`fn()`), and how to check what it returned (raises CheckFailed)."""
  fn: Callable[[], Any]
  check: Callable[[Any], None]


@functools.lru_cache(maxsize=None)
def backend(name: str) -> Tuple[Optional[Any], Optional[str]]:
  """(module, None) for a codec backend, or (None, why it did not import)."""
  try:
    return importlib.import_module(codec.BACKEND_MODULES[name]), None
  except ImportError as e:
    return None, f"{type(e).__name__}: {e}"


@functools.lru_cache(maxsize=None)
def upstream() -> Tuple[Optional[Any], Optional[str]]:
  """(dm_env_rpc.v1.tensor_utils, None), or (None, why it did not import)."""
  try:
    return importlib.import_module("dm_env_rpc.v1.tensor_utils"), None
  except ImportError as e:
    return None, f"{type(e).__name__}: {e}"


def upstream_version() -> Optional[str]:
  """The installed dm-env-rpc's version, or None when it is not installed."""
  from importlib import metadata
  try:
    return metadata.version("dm-env-rpc")
  except metadata.PackageNotFoundError:
    return None


def availability(impl: str) -> Tuple[bool, Optional[str]]:
  """(True, None), or (False, why) for an implementation that cannot run at all."""
  if impl in BACKENDS:
    module, why = backend(impl)
  elif impl == "upstream":
    module, why = upstream()
    if module is None:
      why = f"dm-env-rpc not installed ({why})"
  else:
    return True, None
  return module is not None, why


def make_call(op: str, impl: str, case: cases_lib.Case) -> Call:
  """The call that runs `impl`'s `op` on `case`, and its check.

  Raises:
    Unavailable: the implementation is not installed, or the operation does not
      apply (memcpy of a scalar, zero-copy decode outside our backends).
  """
  if op not in OPS:
    raise ValueError(f"unknown operation {op!r}")
  if impl == "memcpy":
    if case.shape == ():
      raise Unavailable("n/a", "a scalar has no array bytes to copy")
    return _memcpy(case.nbytes, case.array)
  if op == "decode_zc" and impl not in BACKENDS:
    raise Unavailable("n/a", "zero_copy is an option of dm_env_rpc_fast's codec only")
  ok, why = availability(impl)
  if not ok:
    raise Unavailable("not installed", why)
  if impl in BACKENDS:
    module, _ = backend(impl)
    if op == "encode":
      return Call(functools.partial(module.encode_tensor, case.value),
                  functools.partial(_check_encoded, case=case))
    zero_copy = op == "decode_zc"
    return Call(functools.partial(module.decode_tensor, case.wire, zero_copy=zero_copy),
                functools.partial(_check_decoded, case=case, zero_copy=zero_copy))
  if impl == "upstream":
    tensor_utils, _ = upstream()
    from_string = tensor_utils.dm_env_rpc_pb2.Tensor.FromString
    if op == "encode":
      pack = tensor_utils.pack_tensor
      return Call(lambda: pack(case.value).SerializeToString(),
                  functools.partial(_check_encoded, case=case))
    unpack = tensor_utils.unpack_tensor
    return Call(lambda: unpack(from_string(case.wire)),
                functools.partial(_check_decoded, case=case, zero_copy=None))
  if impl == "protobuf":
    if op == "encode":
      return Call(case.message.SerializeToString, functools.partial(_check_encoded, case=case))
    # A fresh message per call: re-parsing into one message would grow its upb
    # arena on every call (Clear does not free it), which is not what users see.
    return Call(functools.partial(dm_env_rpc_pb2.Tensor.FromString, case.wire),
                functools.partial(cases_lib.check_parsed, case=case))
  raise ValueError(f"unknown implementation {impl!r}")


def _check_encoded(result, case):
  cases_lib.check_bytes(result, case.wire)


def _check_decoded(result, case, zero_copy):
  cases_lib.check_array(result, case.array)
  if zero_copy is not None:  # our backends: a copy or a view, as the option says
    cases_lib.check_ownership(result, case, zero_copy)


def _memcpy(nbytes: int, array: np.ndarray) -> Call:
  src = cases_lib.aligned_buffer(nbytes)
  src[:] = np.frombuffer(array.tobytes(), np.uint8)
  dst = cases_lib.aligned_buffer(nbytes)
  dst[:] = 0  # fault the pages in before timing

  def check(_):
    if not np.array_equal(dst, src):
      raise cases_lib.CheckFailed("the copy differs from its source")

  return Call(functools.partial(np.copyto, dst, src), check)
