"""The batched client against dm-env-rpc's own server, and over dm-env-rpc's own connections.

The server is tests/support/interop_world.py run with dm-env-rpc 1.1.7 in another
process (it never imports dm_env_rpc_fast).  Its world has every dtype,
strings and a variable-shape observation, so the batch takes both routes: rows
decoded in place and observations stacked after decoding.  Each batched step
is compared with one DmEnvAdaptor per world.
"""
import importlib.util
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

import dm_env_rpc_fast
from dm_env_rpc_fast import vector
from dm_env_rpc_fast.v1 import connection
from dm_env_rpc_fast.v1 import dm_env_adaptor
from support import interop_world

pytestmark = pytest.mark.upstream

SCRIPT = interop_world.__file__
PACKAGE_PARENT = str(pathlib.Path(dm_env_rpc_fast.__file__).resolve().parent.parent)

NAMES = [name for name, _, _ in interop_world.OBSERVATIONS]


@pytest.fixture(scope="module")
def upstream_servers(tmp_path_factory):
  if importlib.util.find_spec("dm_env_rpc") is None:
    pytest.fail("dm-env-rpc is not installed: `pip install .[test]` installs it", pytrace=False)
  tmp = tmp_path_factory.mktemp("upstream_vector")
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
  procs, addresses = [], []
  try:
    for k in range(2):
      port_file = tmp / f"port{k}"
      procs.append(subprocess.Popen([sys.executable, SCRIPT, "serve", "--package", "dm_env_rpc",
                                     "--port-file", str(port_file)], env=env))
      deadline = time.monotonic() + 60
      while not port_file.exists():
        assert procs[-1].poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
      addresses.append(f"127.0.0.1:{int(port_file.read_text())}")
    yield addresses
  finally:
    for proc in procs:
      proc.kill()
      proc.wait(30)


def _check(batch, timesteps):
  for k, ts in enumerate(timesteps):
    assert batch.step_type[k] == int(ts.step_type)
    assert batch.reward[k] == (0.0 if ts.first() else ts.reward)
    assert batch.discount[k] == ts.discount
    for name in NAMES:
      got, want = batch.observation[name][k], ts.observation[name]
      assert np.asarray(got).dtype == np.asarray(want).dtype, name
      np.testing.assert_array_equal(got, want, err_msg=name)


def _drive(envs, addresses, make_connection):
  refs = [make_connection(a) for a in addresses]
  adaptors = [dm_env_adaptor.create_and_join_world(c, {}, {}, requested_observations=NAMES)[0]
              for c in refs]
  try:
    _check(envs.reset(), [a.reset() for a in adaptors])
    seen = set()
    for i in range(13):  # several episodes of interop_world.EPISODE_LENGTH
      action = interop_world.action_for(i)
      batch = envs.step({"move": np.full(2, action["move"]), "force": np.array([action["force"]] * 2)})
      _check(batch, [a.step(action) for a in adaptors])
      assert batch.observation["words"].shape == (2, 2)
      assert batch.observation["var"].shape[0] == 2  # variable shape: stacked
      seen.update(int(t) for t in batch.step_type)
    assert seen == {0, 1, 2}  # episodes ended and restarted
  finally:
    for a, c in zip(adaptors, refs):
      a.close()
      c.close()


@pytest.mark.parametrize("transport", ["grpc", "auto"])
def test_batched_client_against_dm_env_rpc_server(upstream_servers, transport):
  with vector.create_and_join_world(upstream_servers, {}, {}, transport=transport,
                                    requested_observations=NAMES) as envs:
    _drive(envs, upstream_servers, connection.create_secure_channel_and_connect)


def test_over_dm_env_rpc_connections(upstream_servers):
  from dm_env_rpc.v1 import connection as up_connection  # pylint: disable=import-outside-toplevel
  conns = [up_connection.create_secure_channel_and_connect(a) for a in upstream_servers]
  try:
    with vector.create_and_join_world(conns, {}, {}, requested_observations=NAMES) as envs:
      assert not any(envs._pipelined)  # pylint: disable=protected-access
      _drive(envs, upstream_servers, connection.create_secure_channel_and_connect)
  finally:
    for conn in conns:
      conn.close()
