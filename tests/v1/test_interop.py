"""Real interoperability with dm-env-rpc 1.1.7 from PyPI, across processes.

Every dm-env-rpc side runs in its own process that never imports
dm_env_rpc_fast; servers listen on 127.0.0.1 with ephemeral ports; loops are
bounded.  The reference is dm-env-rpc's client against dm-env-rpc's server:
each of our pairings must reproduce it observation for observation (type,
dtype, shape, values and writability).

These tests need the `dm-env-rpc` package (it is in the `test` extra).  They
are marked `upstream`; a run that cannot install dm-env-rpc (the dependency
floors: its generated code needs protobuf >= 5.29) deselects them with
`-m "not upstream"`.
"""
import importlib.util
import os
import pathlib
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

import dm_env_rpc_fast
from support import interop_world

pytestmark = pytest.mark.upstream

SCRIPT = interop_world.__file__
PACKAGE_PARENT = str(pathlib.Path(dm_env_rpc_fast.__file__).resolve().parent.parent)


def _env(backend="native"):
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
  env.pop("DM_ENV_RPC_FAST_PURE", None)
  if backend == "pure":
    env["DM_ENV_RPC_FAST_PURE"] = "1"
  return env


@pytest.fixture(scope="module", autouse=True)
def _upstream_installed():
  if importlib.util.find_spec("dm_env_rpc") is None:
    pytest.fail("dm-env-rpc is not installed: `pip install .[test]` installs it "
                "(or deselect these tests with -m 'not upstream')", pytrace=False)


class _Server:

  def __init__(self, package, tmp_path, backend="native"):
    port_file = tmp_path / f"port_{package}_{backend}"
    self.proc = subprocess.Popen(
        [sys.executable, SCRIPT, "serve", "--package", package, "--port-file", str(port_file)],
        env=_env(backend))
    deadline = time.monotonic() + 60
    while not port_file.exists():
      if self.proc.poll() is not None or time.monotonic() > deadline:
        self.stop()
        raise RuntimeError(f"{package} server did not start")
      time.sleep(0.05)
    self.address = f"127.0.0.1:{int(port_file.read_text())}"

  def stop(self):
    self.proc.kill()
    self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory):
  server = _Server("dm_env_rpc", tmp_path_factory.mktemp("up"))
  yield server.address
  server.stop()


def _client_in_subprocess(package, address, tmp_path, backend="native", zero_copy=False):
  out = tmp_path / f"records_{package}_{backend}_{zero_copy}.pkl"
  args = [sys.executable, SCRIPT, "client", "--package", package, "--address", address, "--out", str(out)]
  if zero_copy:
    args.append("--zero-copy")
  subprocess.run(args, env=_env(backend), check=True, timeout=300)
  with open(out, "rb") as f:
    return pickle.load(f)


@pytest.fixture(scope="module")
def reference(upstream_server, tmp_path_factory):
  """dm-env-rpc's client against dm-env-rpc's server."""
  return _client_in_subprocess("dm_env_rpc", upstream_server, tmp_path_factory.mktemp("ref"))


def test_reference_matches_the_world_definition(reference):
  # Guards the guard: dm-env-rpc's own client sees what the world defines.
  # reset() sends an empty step, so a FIRST step is t=1 with no action.
  assert len(reference) == interop_world.STEPS
  t = 0
  for i, (step_type, _, discount, observations) in enumerate(reference):
    if step_type == 0:
      t, action = 1, {"move": 0, "force": [0.0, 0.0]}
    else:
      t, action = t + 1, interop_world.action_for(i - 1)
    values = interop_world.observations(t, action["move"], action["force"])
    assert sorted(observations) == sorted(values)
    for name, described in observations.items():
      # Scalars come back as numpy scalars (a str as np.str_).
      assert described[:4] == interop_world.describe(np.asarray(values[name])[()])[:4], (i, name)
    assert (step_type == 2) == (t > interop_world.EPISODE_LENGTH)
    if step_type == 2:
      assert discount[3] == 0.0
  assert {r[0] for r in reference} == {0, 1, 2}


_VIEWABLE = {np.dtype(t).str for t in (np.float32, np.float64, np.int8, np.uint8)}


def _compare(records, reference, zero_copy=False):
  assert len(records) == len(reference)
  for i, (got, want) in enumerate(zip(records, reference)):
    assert got[:3] == want[:3], f"step {i}"
    assert sorted(got[3]) == sorted(want[3])
    for name, w in want[3].items():
      g = got[3][name]
      if zero_copy and w[0] == "ndarray" and w[1] in _VIEWABLE:
        # zero_copy=True: fixed-width arrays are read-only views.
        assert g[:4] == w[:4] and g[4] is False, (i, name)
      else:
        assert g == w, (i, name)


def test_our_client_against_their_server(upstream_server, reference, backend):
  transports = []
  records = interop_world.run_client("dm_env_rpc_fast", upstream_server, transports=transports)
  _compare(records, reference)
  # Their server refused our extension request (an error answer, as the
  # protocol requires), so every step went over gRPC.
  assert transports == ["grpc"]


def test_our_client_with_zero_copy_against_their_server(upstream_server, reference, backend):
  records = interop_world.run_client("dm_env_rpc_fast", upstream_server, zero_copy=True)
  _compare(records, reference, zero_copy=True)


def _against_our_server(client_package, backend, tmp_path):
  """The records of `client_package`'s client in one process against our server in another."""
  server = _Server("dm_env_rpc_fast", tmp_path, backend)
  try:
    return _client_in_subprocess(client_package, server.address, tmp_path, backend)
  finally:
    server.stop()


def test_their_client_against_our_server(reference, backend, tmp_path):
  _compare(_against_our_server("dm_env_rpc", backend, tmp_path), reference)


def test_our_client_in_another_process_against_our_server(reference, backend, tmp_path):
  _compare(_against_our_server("dm_env_rpc_fast", backend, tmp_path), reference)


# --------------------------------------------------------------------------
# One process, both packages.

_SIDE_BY_SIDE = """
import sys
order = sys.argv[1].split(",")
mods = {}
for name in order:
    if name == "up":
        from dm_env_rpc.v1 import dm_env_rpc_pb2 as pb2, tensor_utils as tu
    else:
        from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb2, tensor_utils as tu
    mods[name] = (pb2, tu)
import numpy as np
(up_pb2, up_tu), (fast_pb2, fast_tu) = mods["up"], mods["fast"]
assert up_pb2.Tensor is fast_pb2.Tensor, "one message class per message"
assert up_pb2.DESCRIPTOR.serialized_pb == fast_pb2.DESCRIPTOR.serialized_pb
value = np.arange(6, dtype=np.float32).reshape(2, 3)
np.testing.assert_array_equal(fast_tu.unpack_tensor(up_tu.pack_tensor(value)), value)
np.testing.assert_array_equal(up_tu.unpack_tensor(fast_tu.pack_tensor(value)), value)
from dm_env_rpc.v1.extensions import properties_pb2 as a
from dm_env_rpc_fast.v1.extensions import properties_pb2 as b
assert a.PropertyRequest is b.PropertyRequest
print("ok")
"""


@pytest.mark.parametrize("order", ["up,fast", "fast,up"])
def test_both_packages_import_in_one_process(order, backend):
  result = subprocess.run([sys.executable, "-c", _SIDE_BY_SIDE, order], env=_env(backend),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


_ALIAS = """
import sys
import dm_env_rpc_fast
dm_env_rpc_fast.install_as_dm_env_rpc()
dm_env_rpc_fast.install_as_dm_env_rpc()  # twice is harmless
from dm_env_rpc.v1 import connection, dm_env_adaptor, tensor_utils
import dm_env_rpc.v1.compliance
from dm_env_rpc.v1.extensions import properties
assert connection is sys.modules["dm_env_rpc_fast.v1.connection"]
assert dm_env_adaptor.DmEnvAdaptor.__module__ == "dm_env_rpc_fast.v1.dm_env_adaptor"
assert dm_env_rpc.v1.compliance.Step is sys.modules["dm_env_rpc_fast.v1.compliance"].Step
import importlib.util, os
assert not any(m.startswith("dm_env_rpc.") and not getattr(sys.modules[m], "__name__", "").startswith("dm_env_rpc_fast")
               for m in sys.modules if m.startswith("dm_env_rpc."))
print("ok")
"""

_ALIAS_TOO_LATE = """
import dm_env_rpc.v1.tensor_utils
import dm_env_rpc_fast
try:
    dm_env_rpc_fast.install_as_dm_env_rpc()
except RuntimeError as e:
    print("refused:", e)
"""


def test_install_as_dm_env_rpc_serves_our_modules(backend):
  result = subprocess.run([sys.executable, "-c", _ALIAS], env=_env(backend),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "ok"


def test_install_as_dm_env_rpc_refuses_after_dm_env_rpc_was_imported(backend):
  result = subprocess.run([sys.executable, "-c", _ALIAS_TOO_LATE], env=_env(backend),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  assert "refused: install_as_dm_env_rpc() must run before dm_env_rpc is imported" in result.stdout
  assert "dm_env_rpc.v1.tensor_utils" in result.stdout
