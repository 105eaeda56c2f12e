"""The compliance mixins, run against the toy server and against broken ones.

Each mixin test runs as its own pytest test (by name, through unittest's
machinery), so a failure names the mixin test that failed; the servers that
break one rule on purpose show that the mixins check something.
"""
import subprocess
import sys
import time

import grpc
import pytest
from google.rpc import code_pb2

from dm_env_rpc_fast.v1 import compliance
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils
from support import compliance_cases
from support import toy_server

_WORLD_SETTINGS = {
    "seed": tensor_utils.pack_tensor(3),
    # Long enough that no test runs into the end of an episode, where the next
    # step would start a new one and ignore its actions.
    "episode_length": tensor_utils.pack_tensor(1000),
}


class _World:
  """The toy server's settings."""

  def world_settings(self):
    return _WORLD_SETTINGS

  @property
  def required_world_settings(self):
    return {"seed": tensor_utils.pack_tensor(7)}

  @property
  def invalid_world_settings(self):
    return {
        "episode_length": tensor_utils.pack_tensor(0),
        "colour_depth": tensor_utils.pack_tensor(8),
    }


_CASES = compliance_cases.make_cases(_World)
_ALL_TESTS = compliance_cases.all_tests(_CASES)


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
  assert compliance_cases.count_by_case(_ALL_TESTS) == compliance_cases.MIXIN_TEST_COUNTS


@pytest.mark.parametrize(
    "case_class, test_name", _ALL_TESTS,
    ids=[f"{case.__name__}.{name}" for case, name in _ALL_TESTS])
def test_toy_server_complies(toy_address, case_class, test_name):
  result = compliance_cases.run(case_class, test_name, toy_address)
  assert result.wasSuccessful(), compliance_cases.report(result)
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
    (_NoBoundsServicer, _CASES.StepCase,
     ["test_cannot_send_action_below_min", "test_cannot_send_action_above_max"],
     ["test_cannot_send_invalid_action_uid"]),
    (_LenientDestroyServicer, _CASES.CreateDestroyWorldCase,
     ["test_cannot_destroy_uncreated_world"],
     ["test_can_create_and_destroy_world"]),
    (_SilentUidServicer, _CASES.StepCase,
     ["test_cannot_request_invalid_observation_uid"],
     ["test_requested_observations_are_returned"]),
], ids=["no_bounds", "lenient_destroy", "error_without_uid"])
def test_mixins_fail_against_broken_servers(servicer_class, case_class,
                                           failing, passing):
  server, address = _serve(servicer_class())
  try:
    for name in failing:
      result = compliance_cases.run(case_class, name, address)
      # Failures (assertions), not errors: the mixin caught the server out.
      assert result.failures and not result.errors, (name, compliance_cases.report(result))
    for name in passing:
      result = compliance_cases.run(case_class, name, address)
      assert result.wasSuccessful(), (name, compliance_cases.report(result))
  finally:
    server.stop(None)


def test_mixin_reports_missing_required_setting():
  # Against a server that requires nothing, a mixin claiming that 'seed' is
  # required must fail: the world gets created without it.
  server, address = _serve(toy_server.ToyServicer())
  try:
    result = compliance_cases.run(_CASES.CreateDestroyWorldCase,
                  "test_cannot_create_world_with_less_than_required_settings",
                  address)
    assert len(result.failures) == 1 and not result.errors, compliance_cases.report(result)
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
        result = compliance_cases.run(_CASES.ResetCase, name, address)
        assert result.wasSuccessful(), compliance_cases.report(result)
    finally:
      process.terminate()
      process.wait(timeout=60)
