"""dm_env_rpc's five compliance mixins as test cases over a Connection, for any server.

`make_cases(world)` builds the five cases on top of `world`, a class that says
what the server under test needs: `world_settings()` (the settings of each
world a test creates), and the `required_world_settings` and
`invalid_world_settings` properties of `CreateDestroyWorld`.  The runner sets
`address` (and whatever else `world` reads) on each case; `run` does it.
"""

import collections
import unittest
from typing import NamedTuple, Type

import grpc

from dm_env_rpc_fast.v1 import compliance
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

# The upstream suites' sizes: a test lost in a rewrite would show against these.
MIXIN_TEST_COUNTS = {"CreateDestroyWorldCase": 5, "JoinLeaveWorldCase": 11, "ResetCase": 3,
                     "ResetWorldCase": 3, "StepCase": 18}


class Cases(NamedTuple):
  CreateDestroyWorldCase: Type[unittest.TestCase]
  JoinLeaveWorldCase: Type[unittest.TestCase]
  ResetCase: Type[unittest.TestCase]
  ResetWorldCase: Type[unittest.TestCase]
  StepCase: Type[unittest.TestCase]


def make_cases(world: type) -> Cases:
  """The five mixins' cases, each opening a Connection to `address` and using `world`'s settings."""

  class Connected(world):
    __test__ = False
    address = None

    def setUp(self):
      super().setUp()
      channel = grpc.secure_channel(self.address, grpc.local_channel_credentials())
      self.addCleanup(channel.close)
      self._connection = dm_connection.Connection(channel)
      self.addCleanup(self._connection.close)

    @property
    def connection(self):
      return self._connection

    def _create_world(self):
      name = self._connection.send(dm_env_rpc_pb2.CreateWorldRequest(
          settings=self.world_settings())).world_name
      self.addCleanup(self._destroy_world, name)
      return name

    def _destroy_world(self, name):
      self._connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
      self._connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=name))

  class InWorld(Connected):
    """Creates a world before each test (the mixins that join or reset one)."""

    def setUp(self):
      super().setUp()
      self._world_name = self._create_world()

    @property
    def world_name(self):
      return self._world_name

  class CreateDestroyWorldCase(Connected, compliance.CreateDestroyWorld):
    __test__ = False

    @property
    def has_multiple_world_support(self):
      return True

  class JoinLeaveWorldCase(InWorld, compliance.JoinLeaveWorld):
    __test__ = False

    @property
    def invalid_join_settings(self):
      return {"agent": tensor_utils.pack_tensor("bob")}

  class ResetCase(InWorld, compliance.Reset):
    __test__ = False

    def join_world(self):
      return self.connection.send(dm_env_rpc_pb2.JoinWorldRequest(
          world_name=self.world_name)).specs

  class ResetWorldCase(InWorld, compliance.ResetWorld):
    __test__ = False

  class StepCase(Connected, compliance.Step):
    __test__ = False

    def setUp(self):
      super().setUp()
      name = self._create_world()
      self._specs = self.connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=name)).specs

    @property
    def specs(self):
      return self._specs

  return Cases(CreateDestroyWorldCase, JoinLeaveWorldCase, ResetCase, ResetWorldCase, StepCase)


def all_tests(cases: Cases):
  """[(case class, test name)] for every test of every mixin."""
  return [(case, name) for case in cases for name in unittest.TestLoader().getTestCaseNames(case)]


def count_by_case(tests):
  """{case class name: how many of `tests` (as all_tests gives them) it has}."""
  return dict(collections.Counter(case.__name__ for case, _ in tests))


def run(case_class, test_name: str, address: str, **attributes) -> unittest.TestResult:
  """Runs one mixin test against the server at `address` (`attributes` set on the case)."""
  case = case_class(test_name)
  case.address = address
  for name, value in attributes.items():
    setattr(case, name, value)
  result = unittest.TestResult()
  case.run(result)
  assert result.testsRun == 1
  return result


def report(result: unittest.TestResult) -> str:
  """The tracebacks of a result's errors and failures, for an assertion message."""
  return "\n".join(trace for _, trace in result.errors + result.failures)
