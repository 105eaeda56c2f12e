"""The compliance mixins, run against the toy server and against broken ones.

Each mixin test runs as its own pytest test (by name, through unittest's
machinery), so a failure names the mixin test that failed; the servers that
break one rule on purpose show that the mixins check something.
"""
import subprocess
import sys
import time
import unittest

import grpc
import pytest
from google.rpc import code_pb2

from dm_env_rpc_fast.v1 import compliance
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils
from support import toy_server

_WORLD_SETTINGS = {
    "seed": tensor_utils.pack_tensor(3),
    # Long enough that no test runs into the end of an episode, where the next
    # step would start a new one and ignore its actions.
    "episode_length": tensor_utils.pack_tensor(1000),
}


class _Connected:
  """Opens a Connection to `address` for each test; `address` is set by the runner."""

  __test__ = False
  address = None

  def setUp(self):
    super().setUp()
    self._channel = grpc.secure_channel(self.address,
                                        grpc.local_channel_credentials())
    self.addCleanup(self._channel.close)
    self._connection = dm_connection.Connection(self._channel)
    self.addCleanup(self._connection.close)

  @property
  def connection(self):
    return self._connection

  def _create_world(self):
    name = self._connection.send(dm_env_rpc_pb2.CreateWorldRequest(
        settings=_WORLD_SETTINGS)).world_name
    self.addCleanup(self._destroy_world, name)
    return name

  def _destroy_world(self, name):
    self._connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
    self._connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=name))


class CreateDestroyWorldCase(_Connected, compliance.CreateDestroyWorld):
  __test__ = False

  @property
  def required_world_settings(self):
    return {"seed": tensor_utils.pack_tensor(7)}

  @property
  def invalid_world_settings(self):
    return {
        "episode_length": tensor_utils.pack_tensor(0),
        "colour_depth": tensor_utils.pack_tensor(8),
    }

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
    self._specs = self.connection.send(
        dm_env_rpc_pb2.JoinWorldRequest(world_name=name)).specs

  @property
  def specs(self):
    return self._specs


_CASES = (CreateDestroyWorldCase, JoinLeaveWorldCase, ResetCase,
          ResetWorldCase, StepCase)
_ALL_TESTS = [(case, name) for case in _CASES
              for name in unittest.TestLoader().getTestCaseNames(case)]


def _run(case_class, test_name, address) -> unittest.TestResult:
  """Runs one mixin test against the server at `address`."""
  case = case_class(test_name)
  case.address = address
  result = unittest.TestResult()
  case.run(result)
  assert result.testsRun == 1
  return result


def _report(result) -> str:
  return "\n".join(trace for _, trace in result.errors + result.failures)


def _serve(servicer):
  server, port = toy_server.start(servicer=servicer)
  return server, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def toy_address():
  # 'seed' required, so that the "less than required settings" test checks.
  server, address = _serve(
      toy_server.ToyServicer(required_world_settings=("seed",)))
  yield address
  server.stop(None)


def test_every_mixin_test_is_collected():
  # The upstream suites' sizes; a test lost in a rewrite would show here.
  counts = {case: sum(1 for c, _ in _ALL_TESTS if c is case) for case in _CASES}
  assert counts == {CreateDestroyWorldCase: 5, JoinLeaveWorldCase: 11,
                    ResetCase: 3, ResetWorldCase: 3, StepCase: 18}


@pytest.mark.parametrize(
    "case_class, test_name", _ALL_TESTS,
    ids=[f"{case.__name__}.{name}" for case, name in _ALL_TESTS])
def test_toy_server_complies(toy_address, case_class, test_name):
  result = _run(case_class, test_name, toy_address)
  assert result.wasSuccessful(), _report(result)
  assert not result.skipped


def test_mixins_are_abstract():
  for mixin in (compliance.CreateDestroyWorld, compliance.JoinLeaveWorld,
                compliance.Reset, compliance.ResetWorld, compliance.Step):
    with pytest.raises(TypeError, match="abstract"):
      mixin("run")


def test_mixins_are_exported_from_their_modules():
  assert compliance.Step is compliance.step.Step
  assert compliance.Reset is compliance.reset.Reset
  assert compliance.ResetWorld is compliance.reset_world.ResetWorld
  assert compliance.JoinLeaveWorld is compliance.join_leave_world.JoinLeaveWorld
  assert (compliance.CreateDestroyWorld is
          compliance.create_destroy_world.CreateDestroyWorld)


# --------------------------------------------------------------------------
# Servers that break one rule each: the matching mixin tests must fail.

class _NoBoundsSession(toy_server.Session):

  def check_bounds(self, spec, value):
    pass  # Accepts actions beyond their bounds.


class _NoBoundsServicer(toy_server.ToyServicer):
  session_class = _NoBoundsSession


class _LenientDestroySession(toy_server.Session):

  def destroy_world(self, request):
    if request.world_name not in self._servicer.worlds:
      return dm_env_rpc_pb2.DestroyWorldResponse()  # Should be an error.
    return super().destroy_world(request)


class _LenientDestroyServicer(toy_server.ToyServicer):
  session_class = _LenientDestroySession


class _SilentUidSession(toy_server.Session):

  def step(self, request):
    try:
      return super().step(request)
    except toy_server.ToyError as e:
      raise toy_server.ToyError(e.code, "bad request") from None


class _SilentUidServicer(toy_server.ToyServicer):
  session_class = _SilentUidSession


@pytest.mark.parametrize("servicer_class, case_class, failing, passing", [
    (_NoBoundsServicer, StepCase,
     ["test_cannot_send_action_below_min", "test_cannot_send_action_above_max"],
     ["test_cannot_send_invalid_action_uid"]),
    (_LenientDestroyServicer, CreateDestroyWorldCase,
     ["test_cannot_destroy_uncreated_world"],
     ["test_can_create_and_destroy_world"]),
    (_SilentUidServicer, StepCase,
     ["test_cannot_request_invalid_observation_uid"],
     ["test_requested_observations_are_returned"]),
], ids=["no_bounds", "lenient_destroy", "error_without_uid"])
def test_mixins_fail_against_broken_servers(servicer_class, case_class,
                                           failing, passing):
  server, address = _serve(servicer_class())
  try:
    for name in failing:
      result = _run(case_class, name, address)
      # Failures (assertions), not errors: the mixin caught the server out.
      assert result.failures and not result.errors, (name, _report(result))
    for name in passing:
      result = _run(case_class, name, address)
      assert result.wasSuccessful(), (name, _report(result))
  finally:
    server.stop(None)


def test_mixin_reports_missing_required_setting():
  # Against a server that requires nothing, a mixin claiming that 'seed' is
  # required must fail: the world gets created without it.
  server, address = _serve(toy_server.ToyServicer())
  try:
    result = _run(CreateDestroyWorldCase,
                  "test_cannot_create_world_with_less_than_required_settings",
                  address)
    assert len(result.failures) == 1 and not result.errors, _report(result)
    assert 'without required setting "seed"' in result.failures[0][1]
  finally:
    server.stop(None)


def test_toy_server_errors_are_dm_env_rpc_errors(toy_address):
  channel = grpc.secure_channel(toy_address, grpc.local_channel_credentials())
  with channel, dm_connection.Connection(channel) as connection:
    with pytest.raises(error.DmEnvRpcError, match="not joined") as caught:
      connection.send(dm_env_rpc_pb2.StepRequest())
    assert caught.value.code == code_pb2.FAILED_PRECONDITION
    # The stream stays usable after an error.
    name = connection.send(dm_env_rpc_pb2.CreateWorldRequest(
        settings={"seed": tensor_utils.pack_tensor(1)})).world_name
    connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=name))


def test_mixins_pass_against_the_toy_server_as_a_process(tmp_path):
  # `python toy_server.py --port-file F`, as other tests run it.
  port_file = tmp_path / "port"
  command = [sys.executable, toy_server.__file__, "--port-file", str(port_file)]
  with subprocess.Popen(command, stdout=subprocess.DEVNULL) as process:
    try:
      for _ in range(1200):  # Bounded wait for the server to come up.
        if port_file.exists() or process.poll() is not None:
          break
        time.sleep(0.05)
      assert process.poll() is None, "the server exited"
      address = f"127.0.0.1:{int(port_file.read_text())}"
      for name in ("test_can_reset_multiple_times",
                   "test_cannot_reset_if_not_joined_to_world"):
        result = _run(ResetCase, name, address)
        assert result.wasSuccessful(), _report(result)
    finally:
      process.terminate()
      process.wait(timeout=60)
