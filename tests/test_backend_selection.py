"""Which backend `dm_env_rpc_fast.codec` picks, decided at import time (so: in subprocesses)."""

import pytest

from support.backends import pure_only, run

PROBE = ("import dm_env_rpc_fast.codec as c, sys; "
         "print(c.BACKEND, c.encode_tensor is c._backend.encode_tensor, "
         "sys.modules[c._backend.__name__].NAME)")



@pytest.mark.parametrize("value", ["1", "yes", "true"])
def test_pure_when_forced(value):
  assert run(PROBE, pure=value) == "pure True pure"


def native_importable() -> bool:
  return run("import importlib.util as u; "
             "print(u.find_spec('dm_env_rpc_fast._native') is not None)") == "True"


@pytest.mark.parametrize("value", [None, "", "0"], ids=["unset", "empty", "zero"])
def test_native_by_default(value):
  if pure_only():
    pytest.skip("DM_ENV_RPC_FAST_PURE is set: the native backend is deliberately not tested")
  assert native_importable(), (
      "dm_env_rpc_fast._native is not built: build it, or set DM_ENV_RPC_FAST_PURE=1")
  assert run(PROBE, pure=value) == "native True native"


def test_both_backends_export_the_same_api():
  code = ("import dm_env_rpc_fast.codec._pure as p, inspect; "
          "names = ['encode_tensor', 'decode_tensor', 'encode_step_request', "
          "'decode_step_request', 'encode_step_response', 'decode_step_response']; "
          "print(p.NAME, all(callable(getattr(p, n)) and getattr(p, n).__doc__ for n in names))")
  assert run(code, pure="1") == "pure True"
  if not pure_only():
    native = code.replace("_pure as p", "_native_backend as p")
    assert run(native) == "native True"


@pytest.mark.parametrize("pure", ["0", "1"], ids=["default", "pure"])
def test_backend_modules_name_the_live_backend(pure):
  """The tests and the benchmark import backends by codec.BACKEND_MODULES."""
  code = ("import dm_env_rpc_fast.codec as c; "
          "print(sorted(c.BACKEND_MODULES), c.BACKEND_MODULES[c.BACKEND] == c._backend.__name__)")
  assert run(code, pure=pure) == "['native', 'pure'] True"


def test_pure_backend_never_loads_the_extension():
  code = ("import sys, dm_env_rpc_fast.codec as c; c.decode_tensor(c.encode_tensor([1.0])); "
          "print(c.BACKEND, 'dm_env_rpc_fast._native' in sys.modules)")
  assert run(code, pure="1") == "pure False"
