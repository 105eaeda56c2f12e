"""dm_env_rpc's compliance mixins, run against `server.serve(...)`.

All five mixins (`CreateDestroyWorld`, `JoinLeaveWorld`, `Reset`,
`ResetWorld`, `Step`), each of their tests as its own pytest test, against a
server of RichEnv worlds (nested specs of every kind the server handles) and
one of the treasure example's.
"""
import dataclasses
import unittest

import grpc
import pytest

from dm_env_rpc_fast import server
from dm_env_rpc_fast.server import _specs
from dm_env_rpc_fast.examples import treasure
from dm_env_rpc_fast.v1 import compliance
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

from support import server_envs


class _Connected:
  """Opens a Connection to `address` for each test; the runner sets `address` and `env`."""

  __test__ = False
  address = None
  env = None  # "rich", "treasure" or "plain"

  def setUp(self):
    super().setUp()
    channel = grpc.secure_channel(self.address, grpc.local_channel_credentials())
    self.addCleanup(channel.close)
    self._connection = dm_connection.Connection(channel)
    self.addCleanup(self._connection.close)

  @property
  def connection(self):
    return self._connection

  def world_settings(self):
    if self.env == "rich":
      # Episodes long enough that no test reaches LAST, where the next step would
      # start an episode and ignore its actions.
      return {"seed": tensor_utils.pack_tensor(server_envs.new_seed()),
              "episode_length": tensor_utils.pack_tensor(10_000)}
    if self.env == "plain":
      return {"seed": tensor_utils.pack_tensor(server_envs.new_seed())}
    return {"seed": tensor_utils.pack_tensor(3), "max_steps": tensor_utils.pack_tensor(10_000)}

  def _create_world(self):
    name = self._connection.send(dm_env_rpc_pb2.CreateWorldRequest(
        settings=self.world_settings())).world_name
    self.addCleanup(self._destroy_world, name)
    return name

  def _destroy_world(self, name):
    self._connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
    self._connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=name))


class CreateDestroyWorldCase(_Connected, compliance.CreateDestroyWorld):
  __test__ = False

  @property
  def required_world_settings(self):
    if self.env == "rich":
      return {"seed": tensor_utils.pack_tensor(server_envs.new_seed())}
    return {}  # treasure has defaults for everything

  @property
  def invalid_world_settings(self):
    if self.env == "rich":
      return {"episode_length": tensor_utils.pack_tensor(0),
              "colour_depth": tensor_utils.pack_tensor(8)}
    return {"height": tensor_utils.pack_tensor(0), "max_steps": tensor_utils.pack_tensor(0),
            "colour_depth": tensor_utils.pack_tensor(8)}

  @property
  def has_multiple_world_support(self):
    return True


class JoinLeaveWorldCase(_Connected, compliance.JoinLeaveWorld):
  __test__ = False

  def setUp(self):
    super().setUp()
    self._world_name = self._create_world()

  @property
  def world_name(self):
    return self._world_name

  @property
  def invalid_join_settings(self):
    return {"agent": tensor_utils.pack_tensor("bob")}


class ResetCase(_Connected, compliance.Reset):
  __test__ = False

  def setUp(self):
    super().setUp()
    self._world_name = self._create_world()

  def join_world(self):
    return self.connection.send(dm_env_rpc_pb2.JoinWorldRequest(
        world_name=self._world_name)).specs


class ResetWorldCase(_Connected, compliance.ResetWorld):
  __test__ = False

  def setUp(self):
    super().setUp()
    self._world_name = self._create_world()

  @property
  def world_name(self):
    return self._world_name


class StepCase(_Connected, compliance.Step):
  __test__ = False

  def setUp(self):
    super().setUp()
    name = self._create_world()
    self._specs = self.connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=name)).specs

  @property
  def specs(self):
    return self._specs


_CASES = (CreateDestroyWorldCase, JoinLeaveWorldCase, ResetCase, ResetWorldCase, StepCase)
_ALL_TESTS = [(case, name) for case in _CASES
              for name in unittest.TestLoader().getTestCaseNames(case)]
_FACTORIES = {"rich": server_envs.make_env, "treasure": treasure.make_env}


@pytest.fixture(scope="module", params=sorted(_FACTORIES))
def served(request):
  """(env kind, running server); one server per kind for the module."""
  running = server.serve(_FACTORIES[request.param])
  yield request.param, running
  running.stop()


def test_every_mixin_test_is_collected():
  """Every test of the five mixins is collected (a lost one would show here)."""
  counts = {case.__name__: sum(1 for c, _ in _ALL_TESTS if c is case) for case in _CASES}
  assert counts == {"CreateDestroyWorldCase": 5, "JoinLeaveWorldCase": 11, "ResetCase": 3,
                    "ResetWorldCase": 3, "StepCase": 18}


@pytest.mark.parametrize("case_class, test_name", _ALL_TESTS,
                         ids=[f"{case.__name__}.{name}" for case, name in _ALL_TESTS])
def test_the_server_complies(served, case_class, test_name):
  """One mixin test against one served environment passes, and leaves no world behind."""
  kind, running = served
  case = case_class(test_name)
  case.address = running.address
  case.env = kind
  result = unittest.TestResult()
  case.run(result)
  assert result.testsRun == 1
  assert result.wasSuccessful(), "\n".join(t for _, t in result.errors + result.failures)
  assert not result.skipped
  # Every test cleans up after itself: no world outlives it.
  assert server_envs.wait_until(lambda: running.servicer.world_names == [], timeout=30), (
      running.servicer.world_names)


def test_the_step_mixin_catches_a_server_that_skips_bounds(start_server, monkeypatch):
  """The mixins check something here: with the server's bounds check taken out, the
  bounds tests fail, and the others still pass.  (PlainEnv does not check its actions.)"""
  running = start_server(server_envs.make_plain_env)
  original = _specs.Leaf.check

  def check_without_bounds(self, value, what):
    return original(dataclasses.replace(self, minimum=None, maximum=None), value, what)

  monkeypatch.setattr(_specs.Leaf, "check", check_without_bounds)
  for name, should_pass in (("test_cannot_send_action_above_max", False),
                            ("test_cannot_send_action_below_min", False),
                            ("test_cannot_send_invalid_action_uid", True),
                            ("test_can_send_broadcastable_actions", True)):
    case = StepCase(name)
    case.address, case.env = running.address, "plain"
    result = unittest.TestResult()
    case.run(result)
    assert result.testsRun == 1 and not result.errors, (name, result.errors)
    assert result.wasSuccessful() == should_pass, (name, result.failures)
