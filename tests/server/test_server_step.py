"""Step semantics: when the environment is reset, what each step sends it and what comes back."""
import dm_env
from dm_env import specs
import numpy as np
import pytest
from google.rpc import code_pb2

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

from support import server_envs
from support import server_helpers

RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING
TERMINATED = dm_env_rpc_pb2.EnvironmentStateType.TERMINATED
ALL = server_envs.OBSERVATION_NAMES + ["reward", "discount"]


def full_action(seed, i):
  """{flat name: value} of the schedule's i-th action."""
  return server_envs.flatten(server_envs.action_for(seed, i))


def kinds(env):
  return [call[0] for call in env.calls]


def test_first_step_after_join_resets_and_ignores_its_actions(joined):
  """The first step after JoinWorld calls reset() and ignores its actions, even ones the
  server would refuse."""
  j = joined()
  assert j.env.calls == []
  response = j.connection.send(dm_env_rpc_pb2.StepRequest(
      actions={999: tensor_utils.pack_tensor(1.5),
               j.action_uids["arm.grip"]: tensor_utils.pack_tensor(np.int32(99))},
      requested_observations=[j.observation_uids["counters.t"]]))
  assert response.state == RUNNING
  assert kinds(j.env) == ["reset"]
  assert j.observations(response) == {"counters.t": 0}


@pytest.mark.parametrize("how", ["reset", "reset_world", "reset_world_from_another_stream",
                                 "leave_and_join"])
def test_a_step_after_a_reset_starts_an_episode(joined, rich_server, connect, how):
  """Reset, ResetWorld (from any stream) and joining again each make the next step a reset."""
  j = joined()
  j.step()
  j.step(full_action(j.seed, 0))
  assert kinds(j.env) == ["reset", "step"]
  if how == "reset":
    response = j.send(dm_env_rpc_pb2.ResetRequest())
    assert response.specs == j.specs
  elif how == "reset_world":
    j.send(dm_env_rpc_pb2.ResetWorldRequest(world_name=j.world))
  elif how == "reset_world_from_another_stream":
    connect(rich_server.address).send(dm_env_rpc_pb2.ResetWorldRequest(world_name=j.world))
  else:
    j.send(dm_env_rpc_pb2.LeaveWorldRequest())
    j.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=j.world))
  assert kinds(j.env) == ["reset", "step"]  # nothing happens until the next step
  response = j.step({"arm.grip": 99}, requested=["counters.episode", "counters.t"])
  assert response.state == RUNNING
  assert kinds(j.env) == ["reset", "step", "reset"]
  assert j.observations(response) == {"counters.episode": 2, "counters.t": 0}
  j.step(full_action(j.seed, 1))
  assert kinds(j.env) == ["reset", "step", "reset", "step"]


def test_episodes_end_with_terminated_and_restart(joined):
  """StepType LAST is TERMINATED; the step after it resets the environment, ignoring its actions."""
  j = joined(episode_length=2)
  states, episodes, ts = [], [], []
  for i in range(7):
    response = j.step(full_action(j.seed, i), requested=["counters.episode", "counters.t"])
    observations = j.observations(response)
    states.append(response.state)
    episodes.append(int(observations["counters.episode"]))
    ts.append(int(observations["counters.t"]))
  assert states == [RUNNING, RUNNING, TERMINATED, RUNNING, RUNNING, TERMINATED, RUNNING]
  assert episodes == [1, 1, 1, 2, 2, 2, 3]
  assert ts == [0, 1, 2, 0, 1, 2, 0]
  assert kinds(j.env) == ["reset", "step", "step", "reset", "step", "step", "reset"]
  # The steps that ran got the schedule's actions 1, 2, 4 and 5 (0, 3 and 6 were resets).
  sent = [call[1]["arm"]["grip"] for call in j.env.calls if call[0] == "step"]
  assert sent == [full_action(j.seed, i)["arm.grip"] for i in (1, 2, 4, 5)]


class _Truncating(dm_env.Environment):
  """Episodes of two steps, cut off (LAST with discount 1)."""

  def __init__(self):
    self._t = 0

  def reset(self):
    self._t = 0
    return dm_env.restart(np.int32(0))

  def step(self, action):
    self._t += 1
    if self._t == 2:
      return dm_env.truncation(2.5, np.int32(self._t))
    return dm_env.transition(0.5, np.int32(self._t), discount=0.25)

  def observation_spec(self):
    return specs.Array((), np.int32, name="t")

  def action_spec(self):
    return specs.Array((), np.int32, name="a")


def test_a_truncation_is_terminated_with_its_discount(start_server, connect):
  """A truncation (LAST with discount 1) is TERMINATED carrying discount 1; a first step's reward
  is the default reward spec's 0."""
  running = start_server(_Truncating)
  connection = connect(running.address)
  world = connection.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name
  specs_ = connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world)).specs
  uids = {spec.name: uid for uid, spec in specs_.observations.items()}
  assert sorted(uids) == ["discount", "reward", "t"]  # a lone spec keeps its name
  got = []
  for _ in range(4):
    response = connection.send(dm_env_rpc_pb2.StepRequest(
        actions={1: tensor_utils.pack_tensor(np.int32(0))},
        requested_observations=[uids["t"], uids["reward"], uids["discount"]]))
    values = {name: tensor_utils.unpack_tensor(response.observations[uid])
              for name, uid in uids.items()}
    got.append((response.state, values["t"], values["reward"], values["discount"]))
  # dm_env's default reward spec is float64: a first step's reward is its generate_value(), 0.
  assert got == [(RUNNING, 0, 0.0, 1.0), (RUNNING, 1, 0.5, 0.25), (TERMINATED, 2, 2.5, 1.0),
                 (RUNNING, 0, 0.0, 1.0)]
  assert all(isinstance(row[2], np.float64) for row in got)


def test_only_the_requested_observations_come_back(joined):
  """A step returns exactly the observations requested, each once."""
  j = joined()
  assert dict(j.step().observations) == {}
  response = j.step(full_action(j.seed, 0), requested=["echo", "reward", "echo", "camera.rgb"])
  assert sorted(j.observations(response)) == ["camera.rgb", "echo", "reward"]
  response = j.step(full_action(j.seed, 1), requested=ALL)
  assert sorted(j.observations(response)) == sorted(ALL)
  response = j.step(full_action(j.seed, 2))
  assert dict(response.observations) == {}


def test_reward_and_discount_are_the_environments(joined):
  """A first step has reward 0 (the float32 reward spec's value) and discount 1; then the
  environment's own reward and discount, in their specs' dtypes."""
  j = joined(episode_length=3)
  response = j.step(requested=["reward", "discount"])
  first = j.observations(response)
  assert first == {"reward": 0.0, "discount": 1.0}
  assert type(first["reward"]) is np.float32 and type(first["discount"]) is np.float64
  for i in range(3):
    values = j.observations(j.step(full_action(j.seed, i), requested=["reward", "discount"]))
    grip = int(full_action(j.seed, i)["arm.grip"])
    assert values["reward"] == np.float32(grip * 0.5 + (i + 1) + j.seed * 0.001)
    assert values["discount"] == (0.0 if i == 2 else 1.0 / (i + 2))
    assert type(values["reward"]) is np.float32 and type(values["discount"]) is np.float64


def test_the_action_nest_is_rebuilt_with_the_specs_dtypes(joined):
  """env.step gets the action nest of the spec (dicts, a list) with every leaf in its spec's dtype
  and shape."""
  j = joined()
  j.step()
  action = full_action(j.seed, 3)
  j.step(action)
  received = j.env.calls[-1][1]
  assert type(received) is dict and type(received["arm"]) is dict
  assert type(received["pedals"]) is list and len(received["pedals"]) == 2
  flat = server_envs.flatten(received)
  spec = server_envs.flatten(server_envs.action_spec())
  assert sorted(flat) == server_envs.ACTION_NAMES
  for name, value in flat.items():
    if name == "command":
      assert str(np.asarray(value).item()) == str(action[name])
      continue
    assert np.asarray(value).dtype == spec[name].dtype, name
    assert np.asarray(value).shape == spec[name].shape, name
    np.testing.assert_array_equal(value, action[name], err_msg=name)


def test_an_action_left_out_keeps_its_last_value(joined):
  """Within an episode a missing action repeats the last one sent; a new episode starts
  from each spec's generate_value()."""
  j = joined()
  j.step()
  j.step({"arm.grip": 3})  # only the grip: the rest are the specs' values
  first = server_envs.flatten(j.env.calls[-1][1])
  for name, spec in server_envs.flatten(server_envs.action_spec()).items():
    if name == "arm.grip":
      assert first[name] == 3
    else:
      np.testing.assert_array_equal(first[name], spec.generate_value(), err_msg=name)
  np.testing.assert_array_equal(first["arm.force"], [-1, -2, -3])  # BoundedArray: its minimum
  everything = full_action(j.seed, 1)
  j.step(everything)
  j.step({"arm.grip": 9, "command": "again"})
  third = server_envs.flatten(j.env.calls[-1][1])
  for name in server_envs.ACTION_NAMES:
    if name == "arm.grip":
      assert third[name] == 9
    elif name == "command":
      assert str(np.asarray(third[name]).item()) == "again"
    else:
      np.testing.assert_array_equal(third[name], everything[name], err_msg=name)
  j.send(dm_env_rpc_pb2.ResetRequest())
  j.step()
  j.step({"arm.grip": 4})
  after_reset = server_envs.flatten(j.env.calls[-1][1])
  np.testing.assert_array_equal(after_reset["arm.force"], [-1, -2, -3])
  np.testing.assert_array_equal(after_reset["offset"], np.zeros((2, 2)))
  assert str(np.asarray(after_reset["command"]).item()) == ""


def test_a_refused_action_changes_nothing(joined):
  """A step with one bad action is refused as a whole: the environment is not stepped and
  the good actions sent with it are not kept."""
  j = joined()
  j.step()
  j.step({"arm.grip": 5})
  server_helpers.expect_error(j.step, {"arm.grip": 6, "pedals.1": 201},
                              code_pb2.INVALID_ARGUMENT, "pedals.1")
  assert len(j.env.calls) == 2
  j.step({"command": "x"})
  assert j.env.calls[-1][1]["arm"]["grip"] == 5
