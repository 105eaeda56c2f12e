"""dm-env-rpc's own client, from PyPI, in a process that never imports dm_env_rpc_fast,
drives our server through create, join, reset, many steps over several episodes, leave
and destroy; every observation must be what the environment made.

The reference is the same environment run directly in this process (dm_env calls,
no RPC) with the same actions.  The server runs in this process (on the backend
under test) or as `python -m dm_env_rpc_fast serve server_envs:make_env`.
"""
import pickle
import signal
import subprocess

import numpy as np
import pytest

from dm_env_rpc_fast import server

from support import server_envs
from support import waiting
from support import server_helpers

pytestmark = [pytest.mark.upstream, pytest.mark.usefixtures("upstream_installed")]

EPISODE_LENGTH = 6
STEPS = 45  # six episodes and then some
SCRIPT = str(server_helpers.HERE / "upstream_client.py")


def _run_upstream_client(address, seed, tmp_path, backend, close_file=None):
  actions = server_helpers.schedule(seed, STEPS)
  actions_file, out = tmp_path / "actions.pkl", tmp_path / "out.pkl"
  with open(actions_file, "wb") as f:
    pickle.dump([server_envs.client_action(a) for a in actions], f)
  command = [server_helpers.python(), SCRIPT, "--address", address, "--seed", str(seed),
             "--episode-length", str(EPISODE_LENGTH), "--actions", str(actions_file),
             "--out", str(out)]
  if close_file:
    command += ["--close-file", str(close_file)]
  result = subprocess.run(command, env=server_helpers.subprocess_env(backend),
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  with open(out, "rb") as f:
    return actions, pickle.load(f)


def _check(actions, seed, results):
  client = results["client"].replace("\\", "/")
  assert client.endswith("dm_env_rpc/v1/dm_env_adaptor.py") and "dm_env_rpc_fast" not in client
  want = server_helpers.reference_records(seed, actions, episode_length=EPISODE_LENGTH)
  server_helpers.assert_same_records(results["records"], want, "dm-env-rpc's client")
  step_types = [r[0] for r in results["records"]]
  assert step_types.count(2) == STEPS // (EPISODE_LENGTH + 1)  # several whole episodes
  props = results["properties"]
  assert props["listed"]["camera"] == (True, False, True)
  assert props["listed"]["gain"] == (True, True, False)
  assert props["listed"]["arm"] == (False, False, True)
  assert props["gain"] == np.float32(1.5) and props["gain"].dtype == np.float32
  assert props["counter"] == 4 and props["counter"].dtype == np.int32
  assert props["fov"].tolist() == [60.0, 45.0]
  assert props["camera_write"] == "PermissionError"


def test_their_client_against_our_server_in_this_process(rich_server, backend, tmp_path):
  """dm-env-rpc's client against the server in this process: every observation, properties, and the
  world closed at the end."""
  seed = server_envs.new_seed()
  actions, results = _run_upstream_client(rich_server.address, seed, tmp_path, backend)
  _check(actions, seed, results)
  # It left and destroyed its world: the environment is closed and gone.
  assert server_envs.instance(seed).closed
  assert server_envs.instance(seed).counter == 4
  assert rich_server.servicer.world_names == []


def test_their_client_against_our_server_as_a_command(backend, tmp_path):
  """dm-env-rpc's client against `python -m dm_env_rpc_fast serve`: every observation, and the
  environment closed by DestroyWorld."""
  port_file, close_file = tmp_path / "port", tmp_path / "closed"
  process = subprocess.Popen(
      [server_helpers.python(), "-m", "dm_env_rpc_fast", "serve", "server_envs:make_env",
       "--port-file", str(port_file)],
      cwd=str(server_helpers.HERE), env=server_helpers.subprocess_env(backend),
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    assert waiting.wait_until(lambda: port_file.exists() or process.poll() is not None,
                                  timeout=120)
    assert process.poll() is None, "the server exited"
    seed = server_envs.new_seed()
    actions, results = _run_upstream_client(f"127.0.0.1:{int(port_file.read_text())}", seed,
                                            tmp_path, backend, close_file=close_file)
    _check(actions, seed, results)
    assert close_file.read_text() == f"closed {seed}\n"  # destroyed, so closed
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
  finally:
    if process.poll() is None:
      process.kill()
      process.wait(timeout=60)


def test_the_server_in_this_process_is_ours():
  """Guards the guard: the in-process server is dm_env_rpc_fast's, and the client script
  names no dm_env_rpc_fast module (it checks sys.modules itself too)."""
  assert server.EnvironmentServicer.__module__ == "dm_env_rpc_fast.server._servicer"
  source = (server_helpers.HERE / "upstream_client.py").read_text()
  assert "import dm_env_rpc_fast" not in source and "from dm_env_rpc_fast" not in source
  assert "import server_envs" not in source
