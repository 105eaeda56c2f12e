"""A client that goes away mid-episode, without LeaveWorld or DestroyWorld, gets its
environments closed: its stream's end destroys the worlds it created.

The closes are asynchronous (the server learns of the end from gRPC), so the
tests poll with a deadline.
"""
import signal
import subprocess

import pytest
from google.rpc import code_pb2

from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils

from support import server_envs
from support import waiting
from support import server_helpers

RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING


def _closed(seed, server_):
  return lambda: server_envs.closed_count(seed) == 1 and server_.servicer.world_names == []


def _create(connection, seed):
  return connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={"seed": tensor_utils.pack_tensor(seed)})).world_name


def _join_and_step(connection, world, steps=3):
  connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
  for _ in range(steps):
    assert connection.send(dm_env_rpc_pb2.StepRequest(requested_observations=[1])).state == RUNNING


@pytest.mark.parametrize("how", ["channel closed", "stream closed"])
def test_a_client_that_vanishes_mid_episode_gets_its_environment_closed(
    rich_server, open_channel, how):
  """A channel closed (or a stream cancelled) mid-episode, without LeaveWorld or DestroyWorld: the
  environment is closed and its world gone."""
  channel = open_channel(rich_server.address)
  connection = dm_connection.Connection(channel)
  seed = server_envs.new_seed()
  world = _create(connection, seed)
  _join_and_step(connection, world)
  assert rich_server.servicer.world_names == [world]
  assert not server_envs.instance(seed).closed
  try:
    if how == "channel closed":
      channel.close()  # no LeaveWorld, no DestroyWorld, no end of stream
    else:
      connection.close()  # ends the request stream and cancels the call
    assert waiting.wait_until(_closed(seed, rich_server)), rich_server.servicer.world_names
  finally:
    connection.close()
  assert server_envs.instance(seed).closed


def test_every_world_the_stream_created_is_destroyed(rich_server, connect):
  """All the worlds a stream created go when it ends, joined or not."""
  connection = connect(rich_server.address)
  seeds = [server_envs.new_seed() for _ in range(3)]
  worlds = [_create(connection, seed) for seed in seeds]
  _join_and_step(connection, worlds[1])
  assert rich_server.servicer.world_names == sorted(worlds)
  connection.close()
  assert waiting.wait_until(lambda: all(server_envs.closed_count(s) == 1 for s in seeds))
  assert rich_server.servicer.world_names == []


def test_a_world_joined_by_another_stream_lives_until_that_stream_leaves(rich_server, connect):
  """A creator that goes away leaves a world another stream plays in; the world goes when that
  stream leaves it."""
  creator, player = connect(rich_server.address), connect(rich_server.address)
  seed = server_envs.new_seed()
  world = _create(creator, seed)
  _join_and_step(player, world)
  creator.close()
  # The server learns of the creator's end asynchronously: wait until it has (the
  # servicer's own record), so that the world surviving it means something.
  assert waiting.wait_until(
      lambda: rich_server.servicer._get(world) is not None and
      rich_server.servicer._get(world).creator is None)
  assert not server_envs.instance(seed).closed
  assert player.send(dm_env_rpc_pb2.StepRequest()).state == RUNNING
  player.send(dm_env_rpc_pb2.LeaveWorldRequest())  # the last user leaves: destroyed
  assert server_envs.closed_count(seed) == 1
  assert rich_server.servicer.world_names == []


def test_a_joined_world_outlives_the_stream_of_a_player_that_vanishes(rich_server, connect):
  """A player that vanishes leaves the world; its creator can join it again."""
  creator, player = connect(rich_server.address), connect(rich_server.address)
  seed = server_envs.new_seed()
  world = _create(creator, seed)
  _join_and_step(player, world)
  player.close()

  def creator_joins():
    try:
      creator.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
      return True
    except error.DmEnvRpcError as e:  # until the server has seen the player go
      assert e.code == code_pb2.FAILED_PRECONDITION, e
      return False

  assert waiting.wait_until(creator_joins)
  assert not server_envs.instance(seed).closed
  assert creator.send(dm_env_rpc_pb2.StepRequest()).state == RUNNING
  assert [c[0] for c in server_envs.instance(seed).calls] == ["reset", "step", "step", "reset"]
  creator.close()
  assert waiting.wait_until(_closed(seed, rich_server))


_CLIENT = """
import os
import sys
import time
from dm_env_rpc_fast.v1 import connection, dm_env_adaptor
address, seed, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conn = connection.create_secure_channel_and_connect(address, timeout=60)
env, world = dm_env_adaptor.create_and_join_world(conn, {"seed": seed}, {})
env.reset()
for i in range(5):
  env.step({"arm": {"grip": i}})
with open(ready + ".tmp", "w") as f:
  f.write(world)
os.replace(ready + ".tmp", ready)  # whole when it appears
time.sleep(600)
"""


def test_a_client_process_killed_mid_episode_gets_its_environment_closed(
    rich_server, backend, tmp_path):
  """A client process killed with SIGKILL mid-episode: the server closes its environment and
  forgets its world."""
  seed = server_envs.new_seed()
  ready = tmp_path / "ready"
  process = subprocess.Popen(
      [server_helpers.python(), "-c", _CLIENT, rich_server.address, str(seed), str(ready)],
      env=server_helpers.subprocess_env(backend))
  try:
    assert waiting.wait_until(lambda: ready.exists() or process.poll() is not None,
                                  timeout=120)
    assert process.poll() is None, "the client exited before it was killed"
    world = ready.read_text()
    assert rich_server.servicer.world_names == [world]
    env = server_envs.instance(seed)
    assert not env.closed and len(env.calls) == 6  # mid-episode
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert waiting.wait_until(_closed(seed, rich_server), timeout=60), (
        rich_server.servicer.world_names)
  finally:
    if process.poll() is None:
      process.kill()
      process.wait(timeout=60)
