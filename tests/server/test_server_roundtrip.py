"""Our DmEnvAdaptor against the server: every observation as the environment made it.

The reference is the same environment run directly in this process (dm_env
calls, no RPC) with the same actions; the client must see every TimeStep's
step type, reward, discount and every observation with the same type, dtype,
shape and values, over several episodes.
"""
import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

from support import server_envs
from support import server_helpers

EPISODE_LENGTH = 7
STEPS = 40  # five episodes and then some


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copies", "zero_copy"])
def test_adaptor_sees_what_the_environment_made(rich_server, connect, zero_copy):
  """Our adaptor, with copies or zero-copy views, receives every TimeStep as the environment made
  it, over several episodes; the world is then destroyed and closed."""
  seed = server_envs.new_seed()
  connection = connect(rich_server.address)
  env, world = dm_env_adaptor.create_and_join_world(
      connection, {"seed": seed, "episode_length": EPISODE_LENGTH}, {}, zero_copy=zero_copy)
  actions = server_helpers.schedule(seed, STEPS)
  # Recorded as they arrive: zero-copy views are valid until the next step
  # (over the shared-memory channel the next response overwrites them).
  timesteps, got = [], []
  for ts in server_helpers.drive_lazily(env, [server_envs.client_action(a) for a in actions]):
    timesteps.append(ts)
    got.append(server_helpers.record(ts, copy=zero_copy))
  want = server_helpers.reference_records(seed, actions, episode_length=EPISODE_LENGTH)
  server_helpers.assert_same_records(got, want)
  # Several whole episodes, each ending in a termination.
  assert [r[0] for r in got].count(2) == STEPS // (EPISODE_LENGTH + 1)
  if zero_copy:
    # Fixed-width arrays are read-only views of the response; the rest are copies.
    assert not timesteps[-1].observation["camera"]["rgb"].flags.writeable
  else:
    assert timesteps[-1].observation["camera"]["rgb"].flags.writeable
  env.close()
  connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
  assert rich_server.servicer.world_names == []
  assert server_envs.instance(seed).closed


def test_adaptor_specs_are_the_environments(rich_server, connect):
  """The adaptor rebuilds the environment's specs from the flattened ones (names by path)."""
  seed = server_envs.new_seed()
  env, _ = dm_env_adaptor.create_and_join_world(connect(rich_server.address), {"seed": seed}, {})
  served = server_envs.flatten(env.observation_spec())
  made = server_envs.flatten(server_envs.observation_spec())
  assert sorted(served) == sorted(made) == server_envs.OBSERVATION_NAMES
  for name, spec in made.items():
    assert served[name].shape == spec.shape, name
    assert served[name].dtype == spec.dtype or spec.dtype == object, name
  actions = server_envs.flatten(env.action_spec())
  assert sorted(actions) == server_envs.ACTION_NAMES
  np.testing.assert_array_equal(actions["arm.force"].minimum, [-1, -2, -3])
  np.testing.assert_array_equal(actions["arm.force"].maximum, [1, 2, 3])
  assert (actions["pedals.1"].minimum, actions["pedals.1"].maximum) == (0, 200)
  assert actions["pedals.1"].dtype == np.uint8
  assert env.reward_spec().dtype == np.float32
  assert env.discount_spec().dtype == np.float64
