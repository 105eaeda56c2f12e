"""Many clients at once: 32 streams x 500 steps, each receiving exactly its own
environment's observations.

Each client is a thread with its own channel, stream and world (a distinct
seed, so every world's observations differ), stepping through several
episodes; it checks every TimeStep against the same environment run directly
in its thread.  A response meant for another stream, or a step applied to the
wrong world, shows as a mismatch.
"""
import concurrent.futures
import threading

import pytest

from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

from support import server_envs
from support import server_helpers

CLIENTS = 32
STEPS = 500
EPISODE_LENGTH = 97  # five episodes and a bit, ending at different steps


def _client(address, open_channel, seed, start):
  connection = dm_connection.Connection(open_channel(address))
  try:
    env, world = dm_env_adaptor.create_and_join_world(
        connection, {"seed": seed, "episode_length": EPISODE_LENGTH}, {})
    reference = server_envs.RichEnv(seed, episode_length=EPISODE_LENGTH, register=False)
    start.wait(timeout=60)  # all streams open before anyone steps
    timestep, expected = env.reset(), reference.reset()
    server_helpers.assert_same_records([server_helpers.record(timestep)],
                                       [server_helpers.expected_record(expected)], f"seed {seed}")
    lasts = 0
    for i, action in enumerate(server_helpers.schedule(seed, STEPS)):
      if timestep.last():
        lasts += 1
        timestep, expected = env.reset(), reference.reset()
      else:
        timestep = env.step(server_envs.client_action(action))
        expected = reference.step(action)
      server_helpers.assert_same_records([server_helpers.record(timestep)],
                                         [server_helpers.expected_record(expected)],
                                         f"seed {seed}, step {i}")
    env.close()
    connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
    return world, lasts
  finally:
    connection.close()


def test_concurrent_clients_each_see_their_own_world(rich_server, open_channel):
  """32 clients x 500 steps at once: every TimeStep is its own world's, each environment got
  exactly its own client's requests, and all were closed."""
  seeds = [server_envs.new_seed() for _ in range(CLIENTS)]
  start = threading.Barrier(CLIENTS)
  with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
    futures = [pool.submit(_client, rich_server.address, open_channel, seed, start)
               for seed in seeds]
    results = [future.result(timeout=600) for future in futures]
  worlds = [world for world, _ in results]
  assert len(set(worlds)) == CLIENTS  # each stream its own world
  assert all(lasts == STEPS // (EPISODE_LENGTH + 1) for _, lasts in results)
  # Each environment was stepped by its own client only: one call per request it sent.
  for seed in seeds:
    env = server_envs.instance(seed)
    assert len(env.calls) == STEPS + 1
    assert env.closed
  assert rich_server.servicer.world_names == []


@pytest.fixture
def open_channel(open_channel):
  """The conftest's `open_channel`, safe to call from many threads."""
  lock = threading.Lock()

  def open_(address):
    with lock:
      return open_channel(address)

  return open_
