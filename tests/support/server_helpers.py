"""Helpers of the server tests: subprocesses, raw streams, and comparing observations."""
import os
import pathlib
import queue
import sys

import numpy as np
import pytest
from google.rpc import code_pb2

import dm_env_rpc_fast
from dm_env_rpc_fast import server
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error

from support import server_envs

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE_PARENT = str(pathlib.Path(dm_env_rpc_fast.__file__).resolve().parent.parent)
UNLIMITED = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))


def subprocess_env(backend: str) -> dict:
  """The environment of a child process: the package under test (and this directory)
  on its path, and the pure backend forced when the test runs on it."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      filter(None, [PACKAGE_PARENT, str(HERE), env.get("PYTHONPATH")]))
  env.pop("DM_ENV_RPC_FAST_PURE", None)
  if backend == "pure":
    env["DM_ENV_RPC_FAST_PURE"] = "1"
  return env


def python() -> str:
  return sys.executable


# --------------------------------------------------------------------------
# Errors.

def code_name(code: int) -> str:
  return code_pb2.Code.Name(code)


def expect_error(send, request, code: int, *fragments: str) -> error.DmEnvRpcError:
  """Sends `request` with `send`; asserts the error's code and each fragment of its message."""
  with pytest.raises(error.DmEnvRpcError) as caught:
    send(request)
  got = caught.value
  assert code_name(got.code) == code_name(code), got.message
  for fragment in fragments:
    assert fragment in got.message, (fragment, got.message)
  return got


class RawStream:
  """A Process stream that carries bytes as they are, both ways (no serialisers)."""

  def __init__(self, channel, timeout: float = 120.0):
    self._requests = queue.Queue()
    self._call = channel.stream_stream(server.PROCESS_METHOD)(
        iter(self._requests.get, None), timeout=timeout)

  def send(self, data: bytes) -> dm_env_rpc_pb2.EnvironmentResponse:
    self._requests.put(data)
    return dm_env_rpc_pb2.EnvironmentResponse.FromString(next(self._call))

  def send_bytes(self, data: bytes) -> bytes:
    self._requests.put(data)
    return next(self._call)

  def close(self):
    self._requests.put(None)
    self._call.cancel()


def request_bytes(**payload) -> bytes:
  return dm_env_rpc_pb2.EnvironmentRequest(**payload).SerializeToString()


def assert_error_response(response, code: int, *fragments: str):
  assert response.WhichOneof("payload") == "error", response
  assert code_name(response.error.code) == code_name(code), response.error.message
  for fragment in fragments:
    assert fragment in response.error.message, (fragment, response.error.message)


# --------------------------------------------------------------------------
# What a client sees, and what it should see.

def describe(value):
  """What the tests compare of one value: its kind, dtype, shape and values."""
  if isinstance(value, np.ndarray):
    return ("ndarray", value.dtype.str, value.shape, value.tolist())
  if isinstance(value, np.generic):
    return ("scalar", value.dtype.str, (), value.item())
  return (type(value).__name__, None, (), value)


def as_received(value):
  """A value the environment produced, as a dm_env_rpc client decodes it: arrays stay
  arrays, a shape () value is a numpy scalar."""
  array = np.asarray(value)
  return array[()] if array.shape == () else array


def record(timestep, copy: bool = False):
  """(step type, reward, discount, {name: value}) of a TimeStep a client received.

  With `copy`, arrays are copied (keeping their writeable flag), for views
  that the next step may overwrite.
  """
  observations = server_envs.flatten(timestep.observation)
  if copy:
    observations = {name: _copy_array(value) for name, value in observations.items()}
  return (int(timestep.step_type), timestep.reward, timestep.discount, observations)


def _copy_array(value):
  if not isinstance(value, np.ndarray):
    return value
  copy = value.copy()
  copy.flags.writeable = value.flags.writeable
  return copy


def expected_record(timestep):
  """The record a client should receive for a TimeStep the environment returned.

  dm_env has no discount on a FIRST step; the server sends 1 there (and the
  adaptor reports it), as the discount spec's float64.
  """
  reward = None if timestep.first() else as_received(np.float32(timestep.reward))
  discount = np.float64(1.0 if timestep.discount is None else timestep.discount)
  return (int(timestep.step_type), reward, discount,
          {name: as_received(v) for name, v in server_envs.flatten(timestep.observation).items()})


def assert_same_records(got, want, where=""):
  assert len(got) == len(want), (where, len(got), len(want))
  for i, (g, w) in enumerate(zip(got, want)):
    assert g[0] == w[0], (where, i, "step type", g[0], w[0])
    assert describe(g[1]) == describe(w[1]), (where, i, "reward", g[1], w[1])
    assert describe(g[2]) == describe(w[2]), (where, i, "discount", g[2], w[2])
    assert sorted(g[3]) == sorted(w[3]), (where, i, sorted(g[3]), sorted(w[3]))
    for name in w[3]:
      assert describe(g[3][name]) == describe(w[3][name]), (where, i, name, g[3][name], w[3][name])


def schedule(seed: int, steps: int):
  """The actions a driver sends, in the environment's form."""
  return [server_envs.action_for(seed, i) for i in range(steps)]


def drive_lazily(env, actions):
  """Runs a dm_env.Environment (an adaptor, or the environment itself) through
  `actions` as a client would: reset, then a step per action, with a reset
  after each LAST step.  Yields each TimeStep as it comes."""
  timestep = env.reset()
  yield timestep
  for action in actions:
    timestep = env.reset() if timestep.last() else env.step(action)
    yield timestep


def drive(env, actions):
  """`drive_lazily`, all at once: the list of TimeSteps."""
  return list(drive_lazily(env, actions))


def reference_records(seed: int, actions, **settings):
  """The records a client should receive, from the environment run directly (no RPC)."""
  env = server_envs.RichEnv(seed, register=False, **settings)
  return [expected_record(ts) for ts in drive(env, actions)]
