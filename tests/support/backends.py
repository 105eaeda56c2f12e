"""The codec backends under test: which ones, and importing one.

DM_ENV_RPC_FAST_PURE=1 restricts the tests to the pure backend (the same switch
the package honours).  Otherwise a native backend that does not import fails
whatever loads it, never a silent skip: a missing extension must not pass for a
green run.
"""

import importlib
import os
import pathlib
import subprocess
import sys

import pytest

import dm_env_rpc_fast
from dm_env_rpc_fast.codec import BACKEND_MODULES


def pure_only() -> bool:
  """True when the user forced the pure backend with DM_ENV_RPC_FAST_PURE."""
  return os.environ.get("DM_ENV_RPC_FAST_PURE", "") not in ("", "0")


def backend_names():
  return ["pure"] if pure_only() else ["native", "pure"]


_NATIVE_HELP = (
    "the native codec backend does not import ({error}). Build the extension "
    "(e.g. `pip install -e .` or build dm_env_rpc_fast/_native*.so in place), "
    "or set DM_ENV_RPC_FAST_PURE=1 to test the pure backend alone.")


def load_backend(name: str):
  """Imports a backend module; a native backend that fails to import fails the test."""
  try:
    module = importlib.import_module(BACKEND_MODULES[name])
  except ImportError as e:
    if name != "native":
      raise
    failure = _NATIVE_HELP.format(error=repr(e))
  else:
    failure = None
  if failure:
    pytest.fail(failure, pytrace=False)
  assert module.NAME == name, f"{BACKEND_MODULES[name]}.NAME is {module.NAME!r}"
  return module


# The directory holding the package under test: the checkout in development,
# site-packages when CI tests an installed wheel.  Subprocesses import from
# there, so they see the same package (and extension) as this process.
PACKAGE_PARENT = pathlib.Path(dm_env_rpc_fast.__file__).resolve().parent.parent


def run(code: str, pure=None) -> str:
  """Runs `code` in a fresh interpreter (DM_ENV_RPC_FAST_PURE set to `pure`, or unset)
  and returns its stdout; warnings are errors there, and a failure fails the test."""
  env = dict(os.environ)
  env.pop("DM_ENV_RPC_FAST_PURE", None)
  if pure is not None:
    env["DM_ENV_RPC_FAST_PURE"] = pure
  env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_PARENT), env.get("PYTHONPATH", "")])
  done = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=PACKAGE_PARENT, env=env,
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  return done.stdout.strip()
