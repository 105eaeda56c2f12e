"""Errors answer on the stream as google.rpc.Status, with a fitting code and a message
naming the problem; the stream (and the world) go on working after each one."""
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
expect_error = server_helpers.expect_error


def assert_still_steps(j):
  """The stream works: a valid step runs and reports the environment's step count."""
  before = len(j.env.calls)
  response = j.step({"arm.grip": 1}, requested=["counters.t"])
  assert response.state == RUNNING
  assert len(j.env.calls) == before + 1
  return int(j.observations(response)["counters.t"])


def _pack(value, dtype=None):
  return tensor_utils.pack_tensor(value, dtype=dtype)


# (actions {name: Tensor}, fragments of the message).  UIDs: arm.force 1, arm.grip 2,
# command 3, flags 4, offset 5, pedals.0 6, pedals.1 7.
BAD_ACTIONS = {
    "wrong dtype": ({"arm.force": _pack(np.zeros(3, np.float64))},
                    ["'arm.force' (uid 1)", "dtype float64", "float32"]),
    "wrong integer dtype": ({"arm.grip": _pack(np.int64(3))},
                            ["'arm.grip' (uid 2)", "int64", "int32"]),
    "wrong shape": ({"arm.force": _pack(np.zeros(2, np.float32))},
                    ["'arm.force' (uid 1)", "shape [2]", "[3]"]),
    "scalar for an array": ({"offset": _pack(np.float32(1))}, ["'offset' (uid 5)", "shape []"]),
    "extra dimension": ({"flags": _pack(np.zeros((2, 1), bool))}, ["'flags' (uid 4)", "[2, 1]"]),
    "below an array minimum": ({"arm.force": _pack(np.array([0, -2.5, 0], np.float32))},
                               ["'arm.force' (uid 1)", "below its minimum", "element [1]", "-2.5",
                                "-2.0"]),
    "above a scalar maximum": ({"arm.grip": _pack(np.int32(11))},
                               ["'arm.grip' (uid 2)", "above its maximum", "11", "10"]),
    "below a scalar minimum": ({"arm.grip": _pack(np.int32(-1))},
                               ["'arm.grip' (uid 2)", "below its minimum", "-1", "0"]),
    "above a uint8 maximum": ({"pedals.1": _pack(np.uint8(201))},
                              ["'pedals.1' (uid 7)", "above its maximum", "201", "200"]),
    "above a float maximum": ({"pedals.0": _pack(np.float64(1.5))},
                              ["'pedals.0' (uid 6)", "above its maximum", "1.5"]),
    "a number for a string": ({"command": _pack(np.int32(3))},
                              ["'command' (uid 3)", "must be strings", "int32"]),
    "a string for a bool": ({"flags": _pack(np.array(["a", "b"]))}, ["'flags' (uid 4)", "dtype"]),
}


@pytest.mark.parametrize("name", list(BAD_ACTIONS))
def test_a_bad_action_is_invalid_argument(joined, name):
  """An action of the wrong dtype, shape or kind, or out of bounds, is INVALID_ARGUMENT naming the
  action, its uid and the problem; the environment is not stepped."""
  actions, fragments = BAD_ACTIONS[name]
  j = joined()
  j.step()
  assert assert_still_steps(j) == 1
  expect_error(j.step, actions, code_pb2.INVALID_ARGUMENT, "action", *fragments)
  assert assert_still_steps(j) == 2  # the refused step did not count


def test_an_unknown_action_uid_is_invalid_argument(joined):
  """An action UID the specs lack is INVALID_ARGUMENT naming the UID."""
  j = joined()
  j.step()
  request = dm_env_rpc_pb2.StepRequest(actions={99: _pack(np.int32(1))})
  expect_error(j.send, request, code_pb2.INVALID_ARGUMENT, "action uid 99", "not in the specs")
  assert_still_steps(j)


def test_an_unknown_observation_uid_is_invalid_argument(joined):
  """Requesting an observation UID the specs lack is INVALID_ARGUMENT naming the UID, before the
  environment is touched."""
  j = joined()
  request = dm_env_rpc_pb2.StepRequest(requested_observations=[1, 77])
  expect_error(j.send, request, code_pb2.INVALID_ARGUMENT, "observation uid 77", "not in the specs")
  # Refused before the environment saw it: the next step is still the episode's first.
  assert_still_steps(j)
  assert [c[0] for c in j.env.calls] == ["reset"]


@pytest.mark.parametrize("request_", [
    dm_env_rpc_pb2.StepRequest(),
    dm_env_rpc_pb2.ResetRequest(),
], ids=["step", "reset"])
def test_requests_before_join_are_failed_precondition(rich_server, connect, request_):
  """Step and Reset before JoinWorld are FAILED_PRECONDITION; the stream can then create, join and
  step."""
  connection = connect(rich_server.address)
  what = type(request_).__name__.replace("Request", "")
  expect_error(connection.send, request_, code_pb2.FAILED_PRECONDITION,
               f"{what} before JoinWorld")
  world = connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={"seed": _pack(server_envs.new_seed())})).world_name
  connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
  assert connection.send(dm_env_rpc_pb2.StepRequest()).state == RUNNING


@pytest.mark.parametrize("request_", [
    dm_env_rpc_pb2.JoinWorldRequest(world_name="nope"),
    dm_env_rpc_pb2.ResetWorldRequest(world_name="nope"),
    dm_env_rpc_pb2.DestroyWorldRequest(world_name="nope"),
], ids=["join", "reset_world", "destroy"])
def test_an_unknown_world_is_not_found(joined, request_):
  """JoinWorld, ResetWorld and DestroyWorld of a world that does not exist are NOT_FOUND naming it.
  JoinWorld, ResetWorld and DestroyWorld of a world that does not exist are NOT_FOUND naming it."""
  j = joined()
  if isinstance(request_, dm_env_rpc_pb2.JoinWorldRequest):
    j.send(dm_env_rpc_pb2.LeaveWorldRequest())
  expect_error(j.send, request_, code_pb2.NOT_FOUND, "no world named 'nope'")
  if isinstance(request_, dm_env_rpc_pb2.JoinWorldRequest):
    j.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=j.world))
  assert_still_steps(j)


def test_a_destroyed_world_is_not_found(rich_server, connect):
  """A world destroyed is gone: joining or destroying it again is NOT_FOUND."""
  connection = connect(rich_server.address)
  world = connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={"seed": _pack(server_envs.new_seed())})).world_name
  connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
  for request_ in (dm_env_rpc_pb2.JoinWorldRequest(world_name=world),
                   dm_env_rpc_pb2.DestroyWorldRequest(world_name=world)):
    expect_error(connection.send, request_, code_pb2.NOT_FOUND, repr(world))


def test_joining_twice_is_failed_precondition(joined):
  """JoinWorld while joined is FAILED_PRECONDITION naming the joined world."""
  j = joined()
  expect_error(j.send, dm_env_rpc_pb2.JoinWorldRequest(world_name=j.world),
               code_pb2.FAILED_PRECONDITION, "already joined", repr(j.world))
  assert_still_steps(j)


def test_a_world_joined_by_another_stream_cannot_be_joined(joined, rich_server, connect):
  """A world is joined by one stream at a time; it is free again once that stream leaves."""
  j = joined()
  other = connect(rich_server.address)
  expect_error(other.send, dm_env_rpc_pb2.JoinWorldRequest(world_name=j.world),
               code_pb2.FAILED_PRECONDITION, "joined by another stream")
  assert_still_steps(j)
  j.send(dm_env_rpc_pb2.LeaveWorldRequest())
  other.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=j.world))  # free now


@pytest.mark.parametrize("by", ["this stream", "another stream"])
def test_destroying_a_joined_world_is_failed_precondition(joined, rich_server, connect, by):
  """A joined world cannot be destroyed, by its stream or another, until it is left."""
  j = joined()
  destroyer = j.connection if by == "this stream" else connect(rich_server.address)
  expect_error(destroyer.send, dm_env_rpc_pb2.DestroyWorldRequest(world_name=j.world),
               code_pb2.FAILED_PRECONDITION, repr(j.world), "leave it")
  assert not j.env.closed
  assert_still_steps(j)
  j.send(dm_env_rpc_pb2.LeaveWorldRequest())
  destroyer.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=j.world))
  assert j.env.closed
  assert rich_server.servicer.world_names == []


@pytest.mark.parametrize("kind", ["join", "reset", "reset_world"])
def test_settings_where_none_are_taken_are_invalid_argument(joined, kind):
  """JoinWorld, Reset and ResetWorld take no settings: INVALID_ARGUMENT naming them."""
  j = joined()
  settings = {"agent": _pack("bob"), "speed": _pack(2.0)}
  if kind == "join":
    j.send(dm_env_rpc_pb2.LeaveWorldRequest())
    request_ = dm_env_rpc_pb2.JoinWorldRequest(world_name=j.world, settings=settings)
    expect_error(j.send, request_, code_pb2.INVALID_ARGUMENT, "JoinWorld takes no settings",
                 "agent, speed")
    j.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=j.world))
  elif kind == "reset":
    expect_error(j.send, dm_env_rpc_pb2.ResetRequest(settings=settings),
                 code_pb2.INVALID_ARGUMENT, "Reset takes no settings", "agent, speed")
  else:
    request_ = dm_env_rpc_pb2.ResetWorldRequest(world_name=j.world, settings=settings)
    expect_error(j.send, request_, code_pb2.INVALID_ARGUMENT, "ResetWorld takes no settings",
                 "agent, speed")
  assert_still_steps(j)


@pytest.mark.parametrize("settings, fragments", [
    ({"colour": _pack(3)}, ["TypeError", "colour"]),
    ({}, ["TypeError", "seed"]),
    ({"seed": _pack(1.5)}, ["TypeError", "seed must be an int"]),
    ({"episode_length": _pack(0)}, ["ValueError", "episode_length must be at least 1"]),
], ids=["unknown", "missing", "wrong type", "refused value"])
def test_bad_create_world_settings_are_invalid_argument(rich_server, connect, settings, fragments):
  """make_env raising (TypeError, ValueError, ...) is the client's bad settings."""
  connection = connect(rich_server.address)
  seed = server_envs.new_seed()
  if "episode_length" in settings:
    settings = {"seed": _pack(seed), **settings}
  expect_error(connection.send, dm_env_rpc_pb2.CreateWorldRequest(settings=settings),
               code_pb2.INVALID_ARGUMENT, "could not create the environment", *fragments)
  assert rich_server.servicer.world_names == []
  world = connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={"seed": _pack(server_envs.new_seed())})).world_name
  assert rich_server.servicer.world_names == [world]


def test_a_malformed_settings_tensor_is_invalid_argument(rich_server, connect):
  """A settings Tensor that does not unpack is INVALID_ARGUMENT, and no world is made."""
  connection = connect(rich_server.address)
  tensor = _pack([1.0, 2.0, 3.0])
  tensor.shape[:] = [2]  # three values for two places
  expect_error(connection.send, dm_env_rpc_pb2.CreateWorldRequest(settings={"seed": tensor}),
               code_pb2.INVALID_ARGUMENT, "malformed settings")
  assert rich_server.servicer.world_names == []


def test_settings_arrive_as_python_values(start_server, connect):
  """Numpy scalars become int, float, bool and str; arrays stay arrays."""
  received = []

  def make_env(**settings):
    received.append(settings)
    return server_envs.PlainEnv(server_envs.new_seed())

  running = start_server(make_env)
  connect(running.address).send(dm_env_rpc_pb2.CreateWorldRequest(settings={
      "i": _pack(3), "f": _pack(0.5), "b": _pack(True), "s": _pack("x"),
      "a": _pack(np.arange(3, dtype=np.int32))}))
  (settings,) = received
  assert {k: type(v) for k, v in settings.items() if k != "a"} == {
      "i": int, "f": float, "b": bool, "s": str}
  assert settings["i"] == 3 and settings["f"] == 0.5 and settings["b"] is True
  assert settings["s"] == "x"
  assert settings["a"].dtype == np.int32 and settings["a"].tolist() == [0, 1, 2]


def test_an_exception_in_step_is_internal_with_its_type_and_message(joined):
  """An environment raising in step() is INTERNAL with the exception's type and message; the
  episode goes on."""
  j = joined()
  j.step()
  assert assert_still_steps(j) == 1
  expect_error(j.step, {"command": "boom"}, code_pb2.INTERNAL, "step()", "RuntimeError", "boom")
  # The episode goes on from where it was (the step that raised did not count).
  assert assert_still_steps(j) == 2
  response = j.step({"command": "fine"}, requested=["counters.t", "echo"])
  assert j.observations(response)["echo"] == "fine"


def test_an_exception_in_reset_is_internal_and_the_next_step_resets_again(joined):
  """An environment raising in reset() is INTERNAL; the next step tries the reset again."""
  j = joined(fail_reset=True)
  expect_error(j.step, None, code_pb2.INTERNAL, "reset()", "ValueError", "reset refused")
  expect_error(j.step, {"arm.grip": 1}, code_pb2.INTERNAL, "reset()", "reset refused")
  assert [c[0] for c in j.env.calls] == ["reset", "reset"]
  # The stream still answers other requests.
  assert j.send(dm_env_rpc_pb2.ResetRequest()).specs == j.specs


def test_a_failing_close_does_not_fail_destroy(rich_server, connect):
  """An environment whose close() raises is still destroyed, and the stream goes on."""
  connection = connect(rich_server.address)
  seed = server_envs.new_seed()
  world = connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={"seed": _pack(seed), "fail_close": _pack(True)})).world_name
  connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
  assert server_envs.closed_count(seed) == 1
  assert rich_server.servicer.world_names == []
  assert connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={"seed": _pack(server_envs.new_seed())})).world_name


# --------------------------------------------------------------------------
# Environments that break their own specs: INTERNAL, naming what is wrong.

class _Broken(dm_env.Environment):
  """Observations `a` (int32 (2,)) and `b.c` (float32 ()), made wrong on purpose by `how`."""

  def __init__(self, how="fine"):
    self.how = how
    self.closed = False

  def _observation(self):
    if self.how == "missing":
      return {"a": np.zeros(2, np.int32), "b": {}}
    if self.how == "dtype":
      return {"a": np.zeros(2, np.float64), "b": {"c": np.float32(0)}}
    if self.how == "shape":
      return {"a": np.zeros(3, np.int32), "b": {"c": np.float32(0)}}
    if self.how == "overflow":
      return {"a": np.zeros(2, np.int32), "b": {"c": 2 ** 200}}
    # A Python scalar and a safe cast (int16 into int32) are fine.
    return {"a": np.array([1, 2], np.int16), "b": {"c": 0.5}}

  def reset(self):
    return dm_env.restart(self._observation())

  def step(self, action):
    return dm_env.transition(0.0, self._observation())

  def observation_spec(self):
    if self.how == "reserved name":
      return {"reward": specs.Array((), np.float32)}
    if self.how == "bad dtype":
      return {"a": specs.Array((), np.float16)}
    return {"a": specs.Array((2,), np.int32), "b": {"c": specs.Array((), np.float32)}}

  def action_spec(self):
    return specs.Array((), np.int32, name="a")

  def close(self):
    self.closed = True


@pytest.mark.parametrize("how, fragments", [
    ("missing", ["has no 'b.c' (uid 2)"]),
    ("dtype", ["'a' (uid 1)", "dtype float64", "int32"]),
    ("shape", ["'a' (uid 1)", "shape [3]", "[2]"]),
    ("overflow", ["'b.c' (uid 2)", str(2 ** 200), "float32"]),
])
def test_an_observation_that_breaks_its_spec_is_internal(start_server, connect, how, fragments):
  """An observation missing, or of the wrong dtype, shape or range, is INTERNAL naming it; the
  others still come through."""
  running = start_server(lambda how: _Broken(how))
  connection = connect(running.address)
  world = connection.send(
      dm_env_rpc_pb2.CreateWorldRequest(settings={"how": _pack(how)})).world_name
  connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
  expect_error(connection.send, dm_env_rpc_pb2.StepRequest(requested_observations=[1, 2]),
               code_pb2.INTERNAL, *fragments)
  # The observations that are fine still come through.
  fine = {"missing": [1], "dtype": [2], "shape": [2], "overflow": [1]}[how]
  response = connection.send(dm_env_rpc_pb2.StepRequest(requested_observations=fine))
  assert list(response.observations) == fine


def test_python_scalars_and_safe_casts_are_converted(start_server, connect):
  """A Python scalar and a safely castable array are sent in their specs' dtypes."""
  running = start_server(lambda: _Broken("fine"))
  connection = connect(running.address)
  world = connection.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name
  connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
  response = connection.send(dm_env_rpc_pb2.StepRequest(requested_observations=[1, 2]))
  a = tensor_utils.unpack_tensor(response.observations[1])
  c = tensor_utils.unpack_tensor(response.observations[2])
  assert a.dtype == np.int32 and a.tolist() == [1, 2]
  assert type(c) is np.float32 and c == 0.5


@pytest.mark.parametrize("how, fragments", [
    ("reserved name", ["an observation is named 'reward'"]),
    ("bad dtype", ["'a'", "float16"]),
])
def test_specs_that_cannot_be_served_are_internal_and_close_the_env(start_server, connect, how,
                                                                     fragments):
  """CreateWorld of an environment whose specs dm_env_rpc cannot express is INTERNAL naming why,
  and the environment is closed."""
  made = []

  def make_env():
    made.append(_Broken(how))
    return made[-1]

  running = start_server(make_env)
  connection = connect(running.address)
  expect_error(connection.send, dm_env_rpc_pb2.CreateWorldRequest(), code_pb2.INTERNAL,
               "specs cannot be served", "SpecError", *fragments)
  assert made[0].closed
  assert running.servicer.world_names == []
