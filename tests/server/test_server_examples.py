"""The example environments behave as their docstrings say, directly and through the server."""
import dm_env
from dm_env import specs
import numpy as np
import pytest
from google.rpc import code_pb2

from dm_env_rpc_fast.examples import large_observation
from dm_env_rpc_fast.examples import treasure
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils
from dm_env_rpc_fast.v1.extensions import properties

UP, RIGHT, DOWN, LEFT = range(4)


# --------------------------------------------------------------------------
# Treasure.

def _treasure_at(env):
  board = env.reset().observation["board"]
  (row,), (column,) = np.nonzero(board == 2)
  return int(row), int(column)


def test_the_treasure_is_placed_by_the_seed_and_never_at_the_start():
  """The seed places the treasure, always on the grid and never on the start square."""
  places = {seed: _treasure_at(treasure.Treasure(seed=seed)) for seed in range(40)}
  assert all(place != (0, 0) and 0 <= place[0] < 5 and 0 <= place[1] < 5
             for place in places.values())
  assert len(set(places.values())) > 5  # seeds spread it around
  assert _treasure_at(treasure.Treasure(seed=7)) == places[7]  # the same seed, the same place
  assert _treasure_at(treasure.Treasure(height=1, width=2, seed=3)) == (0, 1)


def test_the_first_observation():
  """The first observation: the explorer at (0, 0) on the board with the treasure, and max_steps
  steps left, all within the specs."""
  env = treasure.Treasure(height=3, width=4, seed=1, max_steps=9)
  timestep = env.reset()
  assert timestep.first() and timestep.reward is None
  observation = timestep.observation
  assert observation["board"].shape == (3, 4) and observation["board"].dtype == np.uint8
  assert observation["board"][0, 0] == 1
  assert sorted(observation["board"].ravel().tolist()) == [0] * 10 + [1, 2]
  assert observation["explorer"]["position"].tolist() == [0, 0]
  assert observation["explorer"]["position"].dtype == np.int32
  assert observation["explorer"]["steps_left"] == 9
  for spec, value in zip(dm_env_flatten(env.observation_spec()), dm_env_flatten(observation)):
    spec.validate(value)


def dm_env_flatten(nest):
  return [nest["board"], nest["explorer"]["position"], nest["explorer"]["steps_left"]]


def test_moves_and_walls():
  """0 up, 1 right, 2 down, 3 left; a move into a wall stays put; each step costs 0.01."""
  env = treasure.Treasure(height=5, width=5, seed=0, max_steps=50)
  target = _treasure_at(env)
  env.reset()
  positions = []
  for move in (UP, LEFT, RIGHT, DOWN, LEFT):
    timestep = env.step(move)
    if timestep.last():
      break
    positions.append(timestep.observation["explorer"]["position"].tolist())
    assert timestep.reward == pytest.approx(-0.01) and timestep.discount == 1.0
  expected = [[0, 0], [0, 0], [0, 1], [1, 1], [1, 0]]
  assert positions == expected[:len(positions)]
  assert target not in [tuple(p) for p in positions]


def _path_to(target):
  return [DOWN] * target[0] + [RIGHT] * target[1]


def test_reaching_the_treasure_pays_and_terminates():
  """Reaching the treasure pays 0.99 net and ends the episode with discount 0; the next step starts
  again."""
  env = treasure.Treasure(seed=11, max_steps=50)
  target = _treasure_at(env)
  env.reset()
  path = _path_to(target)
  for move in path[:-1]:
    assert env.step(move).mid()
  timestep = env.step(path[-1])
  assert timestep.last() and timestep.discount == 0.0
  assert timestep.reward == pytest.approx(0.99)
  assert timestep.observation["explorer"]["position"].tolist() == list(target)
  assert timestep.observation["explorer"]["steps_left"] == 50 - len(path)
  assert env.step(UP).first()  # a step after the end starts again


def test_max_steps_cuts_an_episode_off():
  """After max_steps steps the episode is cut off (LAST with discount 1)."""
  env = treasure.Treasure(height=4, width=4, seed=2, max_steps=3)
  assert _treasure_at(env) != (0, 0)
  env.reset()
  steps_left = [env.step(UP) for _ in range(3)]
  assert [t.step_type for t in steps_left] == [dm_env.StepType.MID, dm_env.StepType.MID,
                                                dm_env.StepType.LAST]
  last = steps_left[-1]
  assert last.discount == 1.0 and last.reward == pytest.approx(-0.01)  # a truncation
  assert [int(t.observation["explorer"]["steps_left"]) for t in steps_left] == [2, 1, 0]


@pytest.mark.parametrize("settings, message", [
    ({"height": 1, "width": 1}, "room for two squares"),
    ({"height": 0}, "room for two squares"),
    ({"max_steps": 0}, "max_steps must be at least 1"),
])
def test_treasure_settings_are_checked(settings, message):
  """A grid without room for two squares, or max_steps below 1, is a ValueError."""
  with pytest.raises(ValueError, match=message):
    treasure.make_env(**settings)


def test_treasure_specs():
  """The specs carry the grid's size in the board's shape and the position's bounds; the move is a
  DiscreteArray of 4."""
  env = treasure.Treasure(height=3, width=6)
  board = env.observation_spec()["board"]
  assert (board.shape, board.dtype, board.minimum, board.maximum) == ((3, 6), np.uint8, 0, 2)
  position = env.observation_spec()["explorer"]["position"]
  assert position.maximum.tolist() == [2, 5]
  action = env.action_spec()
  assert isinstance(action, specs.DiscreteArray) and action.num_values == 4


def test_treasure_through_the_server(start_server, connect):
  """The adaptor walks to the treasure; properties read and write; max_steps applies from the
  next episode; seed is read-only; a refused value is a ValueError."""
  running = start_server(treasure.make_env)
  connection = connect(running.address)
  props = properties.PropertiesExtension(connection)
  env, _ = dm_env_adaptor.create_and_join_world(
      connection, {"seed": 11, "max_steps": 50}, {}, extensions={"props": props})
  target = _treasure_at(treasure.Treasure(seed=11))
  assert sorted(env.observation_spec()) == ["board", "explorer"]
  assert sorted(env.observation_spec()["explorer"]) == ["position", "steps_left"]
  timestep = env.reset()
  assert timestep.observation["explorer"]["steps_left"] == 50
  for move in _path_to(target):
    timestep = env.step({"move": move})
  assert timestep.last() and timestep.reward == pytest.approx(0.99) and timestep.discount == 0.0
  assert env.props["seed"] == 11 and env.props["max_steps"] == 50
  env.props["max_steps"] = 5
  assert env.props["max_steps"] == 5
  with pytest.raises(PermissionError):
    env.props["seed"] = 3
  with pytest.raises(ValueError) as caught:
    env.props["max_steps"] = 0
  assert "max_steps must be at least 1" in caught.value.__cause__.message
  timestep = env.reset()
  assert timestep.observation["explorer"]["steps_left"] == 5


def test_bad_treasure_settings_through_the_server(start_server, connect):
  """Bad settings through the server are INVALID_ARGUMENT with the environment's ValueError."""
  connection = connect(start_server(treasure.make_env).address)
  with pytest.raises(error.DmEnvRpcError) as caught:
    connection.send(dm_env_rpc_pb2.CreateWorldRequest(
        settings={"height": tensor_utils.pack_tensor(1), "width": tensor_utils.pack_tensor(1)}))
  assert caught.value.code == code_pb2.INVALID_ARGUMENT
  assert "ValueError" in caught.value.message and "room for two squares" in caught.value.message


# --------------------------------------------------------------------------
# LargeObservation.

def test_pattern_is_arange_plus_index_modulo_251():
  """pattern(dtype, shape, i) is (arange + i) % 251 in the dtype (odd values True for bool)."""
  values = large_observation.pattern("int64", (2, 200), 3)
  assert values.dtype == np.int64 and values.shape == (2, 200)
  assert values.ravel().tolist() == [(i + 3) % 251 for i in range(400)]
  assert large_observation.pattern(np.float32, (4,)).tolist() == [0.0, 1.0, 2.0, 3.0]
  # bool: the odd values are True.
  assert large_observation.pattern("bool", (4,)).tolist() == [False, True, False, True]
  assert large_observation.pattern("bool", (4,), 1).tolist() == [True, False, True, False]
  assert large_observation.pattern("uint8", (0, 3)).shape == (0, 3)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "int32", "int64", "uint8",
                                   "uint32", "uint64", "bool"])
def test_observations_are_the_pattern_on_every_step(dtype):
  """Every observation is its read-only pattern on every step, in every dtype; episode_length 0
  never ends."""
  env = large_observation.make_env(dtype=dtype, shape=(3, 5), num_observations=3,
                                   episode_length=0)
  spec = env.observation_spec()
  assert sorted(spec) == ["obs_0", "obs_1", "obs_2"]
  assert all(s.dtype == np.dtype(dtype) and s.shape == (3, 5) for s in spec.values())
  timesteps = [env.reset()] + [env.step(np.int32(7)) for _ in range(60)]
  assert not any(t.last() for t in timesteps)  # episode_length 0 never ends
  for timestep in timesteps:
    for i in range(3):
      value = timestep.observation[f"obs_{i}"]
      np.testing.assert_array_equal(value, large_observation.pattern(dtype, (3, 5), i))
      assert value.dtype == np.dtype(dtype) and not value.flags.writeable
  assert all(t.reward == 0.0 and t.discount == 1.0 for t in timesteps[1:])


def test_episodes_last_episode_length_steps():
  """An episode ends (LAST) episode_length steps after its first."""
  env = large_observation.make_env(shape=(2,), episode_length=3)
  env.reset()
  assert [env.step(0).step_type for _ in range(3)] == [
      dm_env.StepType.MID, dm_env.StepType.MID, dm_env.StepType.LAST]
  assert env.reset().first()


def test_the_action_and_default_settings():
  """The action is an int32 in [0, 255]; the defaults are one (256, 256, 3) float32 observation; a
  shape may be an int."""
  env = large_observation.make_env()
  spec = env.action_spec()
  assert (spec.shape, spec.dtype, spec.minimum, spec.maximum) == ((), np.int32, 0, 255)
  assert env.observation_spec()["obs_0"].shape == (256, 256, 3)
  assert env.observation_spec()["obs_0"].dtype == np.float32
  assert large_observation.make_env(shape=7).observation_spec()["obs_0"].shape == (7,)
  assert large_observation.make_env(shape=np.array([2, 3])).observation_spec()["obs_0"].shape == (
      2, 3)


@pytest.mark.parametrize("settings, message", [
    ({"dtype": "str"}, "dtype must be a numeric or bool dtype"),
    ({"dtype": "complex64"}, None),
    ({"dtype": "object"}, "numeric or bool"),
    ({"shape": (2, -1)}, "negative dimensions"),
    ({"num_observations": 0}, "num_observations must be at least 1"),
    ({"episode_length": -1}, "episode_length must be >= 0"),
    ({"colour": 1}, "colour"),
])
def test_large_observation_settings_are_checked(settings, message):
  """Non-numeric dtypes, negative dimensions, no observations, negative episode lengths and unknown
  settings are refused."""
  with pytest.raises((ValueError, TypeError)) as caught:
    large_observation.make_env(**settings)
  if message:
    assert message in str(caught.value)


def test_large_observation_through_the_server(start_server, connect):
  """Through the server: the pattern on every step, LAST after episode_length steps, and bad
  settings INVALID_ARGUMENT."""
  running = start_server(large_observation.make_env)
  connection = connect(running.address)
  env, _ = dm_env_adaptor.create_and_join_world(
      connection, {"dtype": "int32", "shape": [4, 3], "episode_length": 2}, {})
  steps = [env.reset(), env.step({"action": 1}), env.step({"action": 2})]
  assert [t.step_type for t in steps] == [dm_env.StepType.FIRST, dm_env.StepType.MID,
                                          dm_env.StepType.LAST]
  for timestep in steps:
    np.testing.assert_array_equal(timestep.observation["obs_0"],
                                  large_observation.pattern("int32", (4, 3)))
  with pytest.raises(error.DmEnvRpcError) as caught:
    dm_env_adaptor.create_world(connection, {"dtype": "str"})
  assert caught.value.code == code_pb2.INVALID_ARGUMENT
  assert "dtype must be a numeric or bool dtype" in caught.value.message
