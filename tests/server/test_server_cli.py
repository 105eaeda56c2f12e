"""The command line: `python -m dm_env_rpc_fast serve MODULE:FACTORY ...` (the same as
`dm-env-rpc-fast serve`), and the top-level command's help and errors."""
import signal
import subprocess

import numpy as np
import pytest

from dm_env_rpc_fast import cli
from dm_env_rpc_fast.examples import large_observation
from dm_env_rpc_fast.server import _cli
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

from support import server_envs
from support import waiting
from support import server_helpers


class _Serving:
  """`python -m dm_env_rpc_fast serve ARGS --port-file F` in a child process."""

  def __init__(self, args, backend, tmp_path):
    self.port_file = tmp_path / "port"
    self.stderr_path = tmp_path / "stderr"
    with open(self.stderr_path, "w") as stderr:
      self.process = subprocess.Popen(
          [server_helpers.python(), "-m", "dm_env_rpc_fast", "serve", *args,
           "--port-file", str(self.port_file)],
          cwd=str(server_helpers.HERE), env=server_helpers.subprocess_env(backend),
          stdout=subprocess.DEVNULL, stderr=stderr)
    started = waiting.wait_until(
        lambda: self.port_file.exists() or self.process.poll() is not None, timeout=120)
    if not started or self.process.poll() is not None:
      self.kill()
      raise AssertionError(f"the server did not start: {self.stderr()}")
    self.address = f"127.0.0.1:{int(self.port_file.read_text())}"

  def stderr(self):
    return self.stderr_path.read_text()

  def stop(self, signum=signal.SIGTERM):
    self.process.send_signal(signum)
    return self.process.wait(timeout=60)

  def kill(self):
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait(timeout=60)


@pytest.fixture
def serving(backend, tmp_path):
  started = []

  def start(*args):
    started.append(_Serving(args, backend, tmp_path))
    return started[-1]

  yield start
  for s in started:
    s.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_a_factory_then_stop_on_a_signal(serving, tmp_path, signum):
  """A client steps a world of the served factory and sees the environment's observations;
  the signal stops the server with exit code 0, closing the environment it still held."""
  running = serving("server_envs:make_env")
  assert f"serving server_envs:make_env on {running.address}" in running.stderr()
  seed, close_file = server_envs.new_seed(), tmp_path / "closed"
  connection = dm_connection.create_secure_channel_and_connect(running.address, timeout=60)
  try:
    env, _ = dm_env_adaptor.create_and_join_world(
        connection, {"seed": seed, "episode_length": 4, "close_file": str(close_file)}, {})
    actions = server_helpers.schedule(seed, 12)
    got = [server_helpers.record(ts) for ts in
           server_helpers.drive(env, [server_envs.client_action(a) for a in actions])]
    server_helpers.assert_same_records(
        got, server_helpers.reference_records(seed, actions, episode_length=4))
    assert not close_file.exists()  # mid-episode, joined: nothing closed yet
    assert running.stop(signum) == 0
  finally:
    connection.close()
  assert close_file.read_text() == f"closed {seed}\n"


def test_the_default_factory_is_the_large_observation_env(serving):
  """With no MODULE:FACTORY, `serve` serves large_observation: settings choose dtype, shape and
  count, and the observations are its pattern."""
  running = serving()
  assert f"serving {_cli.DEFAULT_FACTORY}" in running.stderr()
  connection = dm_connection.create_secure_channel_and_connect(running.address, timeout=60)
  try:
    env, _ = dm_env_adaptor.create_and_join_world(
        connection, {"shape": [3, 4], "dtype": "uint8", "num_observations": 2}, {})
    timestep = env.step({"action": 7})
    assert sorted(timestep.observation) == ["obs_0", "obs_1"]
    for i in range(2):
      value = timestep.observation[f"obs_{i}"]
      assert value.dtype == np.uint8
      np.testing.assert_array_equal(value, large_observation.pattern("uint8", (3, 4), i))
  finally:
    connection.close()
  assert running.stop() == 0


def test_a_busy_port_exits_1(serving, backend):
  """A second `serve --port P` on a port another server holds exits 1 and says it could not listen.
  A second `serve --port P` on a port another server holds exits 1 and says it could not listen."""
  running = serving("server_envs:make_env")
  out = subprocess.run(
      [server_helpers.python(), "-m", "dm_env_rpc_fast", "serve", "server_envs:make_env",
       "--port", running.address.rsplit(":", 1)[1]],
      cwd=str(server_helpers.HERE), env=server_helpers.subprocess_env(backend),
      capture_output=True, text=True, timeout=120)
  assert out.returncode == 1, out.stderr
  assert "dm-env-rpc-fast serve: could not listen on 127.0.0.1:" in out.stderr
  assert running.stop() == 0


@pytest.mark.parametrize("spec, message", [
    ("server_envs", "expected MODULE:FACTORY"),
    (":make_env", "expected MODULE:FACTORY"),
    ("server_envs:", "expected MODULE:FACTORY"),
    ("no_such_module_anywhere:make_env", "No module named 'no_such_module_anywhere'"),
    ("support.server_envs:nothing", "module 'support.server_envs' has no 'nothing'"),
    ("support.server_envs:RichEnv.nothing", "has no 'RichEnv.nothing'"),
    ("support.server_envs:NOT_CALLABLE",
     "support.server_envs:NOT_CALLABLE is a int, not a callable"),
])
def test_a_bad_factory_prints_why_and_exits_2(capsys, spec, message):
  """A factory spec that is malformed, or names no module, no attribute or no callable, is
  explained on stderr with exit code 2."""
  assert cli.main(["serve", spec]) == 2
  err = capsys.readouterr().err
  assert err.startswith("dm-env-rpc-fast serve: ") and message in err, err


def test_a_bad_factory_exits_2_from_the_shell(backend):
  """The same from a real `python -m dm_env_rpc_fast serve` process: exit code 2 and the reason."""
  out = subprocess.run([server_helpers.python(), "-m", "dm_env_rpc_fast", "serve", "nocolon"],
                       env=server_helpers.subprocess_env(backend), capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 2
  assert "expected MODULE:FACTORY" in out.stderr and "'nocolon'" in out.stderr


def test_load_factory_takes_a_dotted_attribute():
  """MODULE:A.B resolves attributes one by one."""
  assert _cli.load_factory("support.server_envs:RichEnv.reset") is server_envs.RichEnv.reset
  assert _cli.load_factory("dm_env_rpc_fast.examples.treasure:make_env").__name__ == "make_env"


def test_help_lists_the_commands(backend):
  """`python -m dm_env_rpc_fast --help` prints the usage with both commands and exits 0."""
  out = subprocess.run([server_helpers.python(), "-m", "dm_env_rpc_fast", "--help"],
                       env=server_helpers.subprocess_env(backend), capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("usage: dm-env-rpc-fast COMMAND")
  assert "  serve" in out.stdout and "  bench" in out.stdout


def test_serve_help_describes_its_options(capsys):
  """`serve --help` names every option and the default factory, and exits 0."""
  with pytest.raises(SystemExit) as caught:
    cli.main(["serve", "--help"])
  assert caught.value.code == 0
  out = capsys.readouterr().out
  for option in ("MODULE:FACTORY", "--port", "--port-file", "--host", "--insecure",
                 "--max-streams", _cli.DEFAULT_FACTORY):
    assert option in out, option


def test_an_unknown_command_exits_2(capsys):
  """An unknown command is named on stderr, with the usage, and exits 2."""
  assert cli.main(["teleport"]) == 2
  err = capsys.readouterr().err
  assert "unknown command 'teleport'" in err and "usage: dm-env-rpc-fast COMMAND" in err


def test_no_command_prints_the_usage_and_exits_2(capsys):
  """No command at all prints the usage and exits 2."""
  assert cli.main([]) == 2
  assert "usage: dm-env-rpc-fast COMMAND" in capsys.readouterr().out


def test_version(capsys):
  """`--version` prints the package's version."""
  import dm_env_rpc_fast
  assert cli.main(["--version"]) == 0
  assert capsys.readouterr().out == f"dm-env-rpc-fast {dm_env_rpc_fast.__version__}\n"


def test_the_destroyed_world_of_a_cli_server_is_closed_at_once(serving, tmp_path):
  """DestroyWorld closes the environment in the server process, before the response."""
  running = serving("server_envs:make_env")
  close_file = tmp_path / "closed"
  connection = dm_connection.create_secure_channel_and_connect(running.address, timeout=60)
  try:
    world = dm_env_adaptor.create_world(connection, {"seed": 5, "close_file": str(close_file)})
    connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
    assert close_file.read_text() == "closed 5\n"
  finally:
    connection.close()
  assert running.stop() == 0
