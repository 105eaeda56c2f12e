"""DmEnvAdaptor: the byte-level step path and the protobuf path give the same TimeSteps."""
from unittest import mock

import dm_env
import numpy as np
import pytest
from google.rpc import status_pb2

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils

_Req = dm_env_rpc_pb2.EnvironmentRequest
_Resp = dm_env_rpc_pb2.EnvironmentResponse
DT = dm_env_rpc_pb2.DataType


def _spec(name, dtype, shape=()):
  return dm_env_rpc_pb2.TensorSpec(name=name, dtype=dtype, shape=list(shape))


SPECS = dm_env_rpc_pb2.ActionObservationSpecs(
    actions={
        1: _spec("move", DT.INT32),
        2: _spec("arm.torque", DT.FLOAT, (2,)),
    },
    observations={
        1: _spec("image", DT.FLOAT, (2, 3)),
        2: _spec("reward", DT.DOUBLE),
        3: _spec("discount", DT.DOUBLE),
        4: _spec("arm.bytes", DT.UINT8, (-1,)),
        5: _spec("label", DT.STRING),
        6: _spec("counts", DT.INT64, (3,)),
    })

EPISODE_LENGTH = 4


class _World:
  """A scripted world: observations follow from the step count and the actions."""

  def __init__(self, specs=SPECS):
    self.specs = specs
    self.t = 0
    self.leaves = 0
    self.destroyed = []
    self.override = None  # {uid: Tensor} forced into the next step answer

  def answer(self, request: _Req) -> _Resp:
    kind = request.WhichOneof("payload")
    if kind == "reset":
      self.t = 0
      return _Resp(reset=dm_env_rpc_pb2.ResetResponse(specs=self.specs))
    if kind == "leave_world":
      self.leaves += 1
      return _Resp(leave_world=dm_env_rpc_pb2.LeaveWorldResponse())
    if kind == "create_world":
      return _Resp(create_world=dm_env_rpc_pb2.CreateWorldResponse(world_name="w"))
    if kind == "join_world":
      if "fail" in request.join_world.settings:
        return _Resp(error=status_pb2.Status(code=3, message="join refused"))
      return _Resp(join_world=dm_env_rpc_pb2.JoinWorldResponse(specs=self.specs))
    if kind == "destroy_world":
      self.destroyed.append(request.destroy_world.world_name)
      return _Resp(destroy_world=dm_env_rpc_pb2.DestroyWorldResponse())
    assert kind == "step", kind
    step = request.step
    move = int(tensor_utils.unpack_tensor(step.actions[1])) if 1 in step.actions else 0
    torque = tensor_utils.unpack_tensor(step.actions[2]) if 2 in step.actions else np.zeros(2, np.float32)
    self.t += 1
    values = {
        1: (np.arange(6, dtype=np.float32).reshape(2, 3) + self.t + torque.sum()),
        2: np.float64(move * 0.5),
        3: np.float64(0.0 if self.t > EPISODE_LENGTH else 0.9),
        4: np.arange(self.t, dtype=np.uint8),
        5: f"t={self.t}",
        6: np.array([self.t, move, -move], np.int64),
    }
    observations = {uid: tensor_utils.pack_tensor(values[uid]) for uid in step.requested_observations}
    if self.override:
      observations.update(self.override)
      self.override = None
    state = dm_env_rpc_pb2.TERMINATED if self.t > EPISODE_LENGTH else dm_env_rpc_pb2.RUNNING
    if self.t > EPISODE_LENGTH:
      self.t = 0
    return _Resp(step=dm_env_rpc_pb2.StepResponse(state=state, observations=observations))


class MessageConnection:
  """Only `send`: like dm-env-rpc's own Connection, so the adaptor uses protobuf."""

  def __init__(self, world):
    self.world = world
    self.sent = []

  def send(self, request):
    from dm_env_rpc_fast.v1 import message_utils
    envelope, field = message_utils.pack_environment_request(request)
    self.sent.append(envelope.WhichOneof("payload"))
    return message_utils.unpack_environment_response(self.world.answer(envelope), field)


class BytesConnection(MessageConnection):
  """Adds `send_step`, going through real wire bytes both ways."""

  def send_step(self, actions, requested_observations, *, zero_copy=False):
    data = codec.encode_step_request(actions, requested_observations)
    self.sent.append("step_bytes")
    response = self.world.answer(_Req.FromString(data)).SerializeToString()
    return codec.decode_step_response(response, zero_copy=zero_copy)


def _episode(env, nested=True):
  """reset, then steps up to and including the LAST one."""
  steps = [env.reset()]
  for i in range(EPISODE_LENGTH):
    torque = [0.25 * i, 1.0]
    steps.append(env.step({"move": i, "arm": {"torque": torque}} if nested else
                          {"move": i, "arm.torque": torque}))
  return steps


def _assert_same(a, b):
  """Two nested observation structures hold equal values of equal types."""
  if isinstance(a, dict):
    assert isinstance(b, dict) and sorted(a) == sorted(b)
    for key in a:
      _assert_same(a[key], b[key])
  else:
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
      assert a.dtype == b.dtype and a.shape == b.shape
      assert a.flags.writeable == b.flags.writeable
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs", [
    {},
    {"nested_tensors": False},
    {"requested_observations": ["image", "label"]},
    {"requested_observations": dm_env_adaptor.AutoObservations.REQUEST_ALL_OBSERVATIONS},
    {"requested_observations": dm_env_adaptor.AutoObservations.REQUEST_REWARD},
], ids=["default", "flat", "subset", "auto_all", "auto_reward"])
def test_byte_path_and_protobuf_path_agree(kwargs):
  fast_conn, slow_conn = BytesConnection(_World()), MessageConnection(_World())
  fast = dm_env_adaptor.DmEnvAdaptor(fast_conn, SPECS, **kwargs)
  slow = dm_env_adaptor.DmEnvAdaptor(slow_conn, SPECS, **kwargs)
  nested = kwargs.get("nested_tensors", True)
  for got, want in zip(_episode(fast, nested), _episode(slow, nested), strict=True):
    assert got.step_type == want.step_type
    _assert_same(got.reward, want.reward)
    _assert_same(got.discount, want.discount)
    _assert_same(got.observation, want.observation)
  assert "step_bytes" in fast_conn.sent and "step" not in fast_conn.sent
  assert "step" in slow_conn.sent
  assert fast.observation_spec() == slow.observation_spec()
  assert fast.action_spec() == slow.action_spec()


def test_an_episode_reads_as_dm_env_expects():
  env = dm_env_adaptor.DmEnvAdaptor(BytesConnection(_World()), SPECS)
  steps = _episode(env)
  assert [s.step_type for s in steps] == (
      [dm_env.StepType.FIRST] + [dm_env.StepType.MID] * (EPISODE_LENGTH - 1) + [dm_env.StepType.LAST])
  assert steps[0].reward is None
  assert steps[2].reward == 0.5  # move=1 -> reward 0.5
  assert steps[-1].discount == 0.0 and steps[1].discount == 0.9
  assert set(steps[1].observation) == {"image", "arm", "label", "counts"}  # reward/discount not requested
  np.testing.assert_array_equal(steps[3].observation["arm"]["bytes"], np.arange(4, dtype=np.uint8))
  np.testing.assert_array_equal(
      steps[2].observation["image"], np.arange(6, dtype=np.float32).reshape(2, 3) + 3 + 1.25)
  assert steps[4].observation["label"] == "t=5"


def test_writability_default_and_zero_copy():
  default = dm_env_adaptor.DmEnvAdaptor(BytesConnection(_World()), SPECS)
  viewing = dm_env_adaptor.DmEnvAdaptor(BytesConnection(_World()), SPECS, zero_copy=True)
  default.reset()
  viewing.reset()
  # The second step: arm.bytes has two elements (one element would broadcast).
  a = default.step({}).observation
  b = viewing.step({}).observation
  assert a["image"].flags.writeable and not b["image"].flags.writeable
  assert not a["arm"]["bytes"].flags.writeable  # uint8 is a view either way, as upstream
  assert a["counts"].flags.writeable and b["counts"].flags.writeable  # varints are always decoded
  np.testing.assert_array_equal(a["image"], b["image"])


def test_a_mock_connection_takes_the_protobuf_path():
  conn = mock.MagicMock()
  conn.send.return_value = dm_env_rpc_pb2.StepResponse(
      state=dm_env_rpc_pb2.RUNNING,
      observations={1: tensor_utils.pack_tensor(np.zeros((2, 3), np.float32)),
                    2: tensor_utils.pack_tensor(1.5), 3: tensor_utils.pack_tensor(0.5)})
  env = dm_env_adaptor.DmEnvAdaptor(conn, SPECS, requested_observations=["image"])
  step = env.step({"move": 3})
  assert step.step_type == dm_env.StepType.FIRST and step.discount == 0.5
  (request,), _ = conn.send.call_args
  assert isinstance(request, dm_env_rpc_pb2.StepRequest)
  assert list(request.requested_observations) == [1, 2, 3]  # reward and discount ride along
  assert tensor_utils.unpack_tensor(request.actions[1]) == 3
  conn.send_step.assert_not_called()


@pytest.mark.parametrize("conn_class", [BytesConnection, MessageConnection])
def test_action_errors(conn_class):
  env = dm_env_adaptor.DmEnvAdaptor(conn_class(_World()), SPECS)
  env.reset()
  with pytest.raises(ValueError, match=r"arm.torque with shape \[3\] but spec has shape \[2\]"):
    env.step({"arm": {"torque": [1.0, 2.0, 3.0]}})
  with pytest.raises(KeyError):
    env.step({"jump": 1})
  # Actions are cast to the spec's dtype, unsafely, as pack_tensor(dtype=...) does.
  env.step({"move": 2.7})


@pytest.mark.parametrize("conn_class", [BytesConnection, MessageConnection])
def test_observation_dtype_and_shape_errors(conn_class):
  world = _World()
  env = dm_env_adaptor.DmEnvAdaptor(conn_class(world), SPECS)
  env.reset()
  world.override = {1: tensor_utils.pack_tensor(np.zeros((2, 3), np.int32))}
  with pytest.raises(ValueError, match="image with dtype int32 but spec has dtype float32"):
    env.step({})
  world.override = {6: tensor_utils.pack_tensor(np.zeros(4, np.int64))}
  with pytest.raises(ValueError, match=r"counts with shape \[4\] but spec has shape \[3\]"):
    env.step({})


@pytest.mark.parametrize("conn_class", [BytesConnection, MessageConnection])
def test_server_error_on_step_raises(conn_class):
  world = _World()
  env = dm_env_adaptor.DmEnvAdaptor(conn_class(world), SPECS)
  env.reset()
  world.answer = lambda request: _Resp(error=status_pb2.Status(code=9, message="broken world"))
  with pytest.raises(error.DmEnvRpcError, match="broken world"):
    env.step({})


def test_impossible_transition_raises():
  world = _World()
  env = dm_env_adaptor.DmEnvAdaptor(BytesConnection(world), SPECS)
  world.t = EPISODE_LENGTH  # the first step already terminates: TERMINATED -> TERMINATED
  with pytest.raises(RuntimeError, match="transitioned from TERMINATED to TERMINATED"):
    env.step({})


def test_reset_refuses_changed_specs():
  world = _World()
  env = dm_env_adaptor.DmEnvAdaptor(BytesConnection(world), SPECS)
  changed = dm_env_rpc_pb2.ActionObservationSpecs()
  changed.CopyFrom(SPECS)
  changed.observations[1].shape[:] = [3, 2]
  world.specs = changed
  with pytest.raises(RuntimeError, match="Environment changed spec after reset"):
    env.reset()


def test_unsupported_observation_request():
  with pytest.raises(ValueError, match="Unsupported observations requested: {'sound'}"):
    dm_env_adaptor.DmEnvAdaptor(BytesConnection(_World()), SPECS, requested_observations=["sound"])


def test_close_leaves_the_world_once_and_blocks_steps():
  world = _World()
  env = dm_env_adaptor.DmEnvAdaptor(BytesConnection(world), SPECS, extensions={"props": object()})
  env.close()
  env.close()
  assert world.leaves == 1 and env.props is None
  with pytest.raises(ValueError, match="connection is closed"):
    env.step({})
  with pytest.raises(ValueError, match="after connection is closed"):
    env.reset()


def test_extension_name_clash():
  with pytest.raises(ValueError, match='already has attribute "step"'):
    dm_env_adaptor.DmEnvAdaptor(BytesConnection(_World()), SPECS, extensions={"step": 1})


def test_reward_and_discount_specs_come_from_the_observations():
  env = dm_env_adaptor.DmEnvAdaptor(BytesConnection(_World()), SPECS)
  assert env.reward_spec().dtype == np.float64 and env.reward_spec().name == "reward"
  assert env.discount_spec().name == "discount"
  assert set(env.observation_spec()) == {"image", "arm", "label", "counts"}


def test_create_and_join_world_passes_adaptor_options():
  world = _World()
  env, name = dm_env_adaptor.create_and_join_world(
      BytesConnection(world), {"size": 3, "nested": {"a": 1}}, {}, zero_copy=True)
  assert name == "w"
  assert not env.reset().observation["image"].flags.writeable


def test_create_and_join_world_destroys_the_world_when_join_fails():
  world = _World()
  with pytest.raises(error.DmEnvRpcError, match="join refused"):
    dm_env_adaptor.create_and_join_world(BytesConnection(world), {}, {"fail": 1})
  assert world.destroyed == ["w"]


def test_join_world_leaves_when_the_adaptor_cannot_be_made():
  world = _World()
  with pytest.raises(ValueError, match="Unsupported observations"):
    dm_env_adaptor.join_world(BytesConnection(world), "w", {}, requested_observations=["nope"])
  assert world.leaves == 1
