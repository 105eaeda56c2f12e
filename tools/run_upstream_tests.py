#!/usr/bin/env python3
"""Runs dm-env-rpc's own unit tests against dm_env_rpc_fast.

The dm-env-rpc wheel ships its tests beside its modules.  This copies them into
a temporary directory (nothing of theirs enters this repository), installs
dm_env_rpc_fast under the `dm_env_rpc` names with `install_as_dm_env_rpc()`
before any test module imports, and runs them with pytest.  Every test then
exercises our modules through the names and seams that dm-env-rpc's own
suite uses: the strictest drop-in check we have.

    python tools/run_upstream_tests.py [--partial] [pytest args...]

Needs dm-env-rpc (and absl-py, which its tests use) installed; exits with
pytest's code.
"""
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

_CONFTEST = '''\
import dm_env_rpc_fast
dm_env_rpc_fast.install_as_dm_env_rpc()
'''

# --partial (while modules are being written): alias what imports, skip the rest.
_PARTIAL_CONFTEST = '''\
import importlib, sys
from dm_env_rpc_fast import _alias
for suffix in _alias.MODULES:
  try:
    sys.modules["dm_env_rpc" + suffix] = importlib.import_module("dm_env_rpc_fast" + suffix)
  except ImportError as e:
    print("not aliased:", suffix, e)
'''


def upstream_root() -> pathlib.Path:
  spec = importlib.util.find_spec("dm_env_rpc")  # finds without importing
  if spec is None or not spec.submodule_search_locations:
    sys.exit("dm-env-rpc is not installed: pip install dm-env-rpc==1.1.7 absl-py")
  return pathlib.Path(list(spec.submodule_search_locations)[0])


def main(argv) -> int:
  root = upstream_root()
  with tempfile.TemporaryDirectory(prefix="upstream_tests_") as tmp:
    tmp = pathlib.Path(tmp)
    for test in sorted(root.rglob("*_test.py")):
      rel = test.relative_to(root)
      # Flat, unique names: the directory is not a package, so the tests can
      # only reach dm_env_rpc through sys.modules, i.e. through us.
      shutil.copy(test, tmp / ("upstream_" + "_".join(rel.parts)))
    partial = "--partial" in argv
    argv = [a for a in argv if a != "--partial"]
    (tmp / "conftest.py").write_text(_PARTIAL_CONFTEST if partial else _CONFTEST)
    (tmp / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return subprocess.call(
        [sys.executable, "-m", "pytest", "-q", "--rootdir", str(tmp), str(tmp), *argv],
        cwd=tmp, env=dict(os.environ))


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
