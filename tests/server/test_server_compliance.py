"""dm_env_rpc's compliance mixins, run against `server.serve(...)`.

All five mixins (`CreateDestroyWorld`, `JoinLeaveWorld`, `Reset`,
`ResetWorld`, `Step`), each of their tests as its own pytest test, against a
server of RichEnv worlds (nested specs of every kind the server handles) and
one of the treasure example's.
"""
import dataclasses

import pytest

from dm_env_rpc_fast import server
from dm_env_rpc_fast.server import _specs
from dm_env_rpc_fast.examples import treasure
from dm_env_rpc_fast.v1 import tensor_utils

from support import compliance_cases
from support import server_envs
from support import waiting


class _World:
  """The settings of the served environment `env`, which the runner sets on each case."""

  env = None  # "rich", "treasure" or "plain"

  def world_settings(self):
    if self.env == "rich":
      # Episodes long enough that no test reaches LAST, where the next step would
      # start an episode and ignore its actions.
      return {"seed": tensor_utils.pack_tensor(server_envs.new_seed()),
              "episode_length": tensor_utils.pack_tensor(10_000)}
    if self.env == "plain":
      return {"seed": tensor_utils.pack_tensor(server_envs.new_seed())}
    return {"seed": tensor_utils.pack_tensor(3), "max_steps": tensor_utils.pack_tensor(10_000)}

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


_CASES = compliance_cases.make_cases(_World)
_ALL_TESTS = compliance_cases.all_tests(_CASES)
_FACTORIES = {"rich": server_envs.make_env, "treasure": treasure.make_env}


@pytest.fixture(scope="module", params=sorted(_FACTORIES))
def served(request):
  """(env kind, running server); one server per kind for the module."""
  running = server.serve(_FACTORIES[request.param])
  yield request.param, running
  running.stop()


def test_every_mixin_test_is_collected():
  """Every test of the five mixins is collected (a lost one would show here)."""
  assert compliance_cases.count_by_case(_ALL_TESTS) == compliance_cases.MIXIN_TEST_COUNTS


@pytest.mark.parametrize("case_class, test_name", _ALL_TESTS,
                         ids=[f"{case.__name__}.{name}" for case, name in _ALL_TESTS])
def test_the_server_complies(served, case_class, test_name):
  """One mixin test against one served environment passes, and leaves no world behind."""
  kind, running = served
  result = compliance_cases.run(case_class, test_name, running.address, env=kind)
  assert result.wasSuccessful(), compliance_cases.report(result)
  assert not result.skipped
  # Every test cleans up after itself: no world outlives it.
  assert waiting.wait_until(lambda: running.servicer.world_names == [], timeout=30), (
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
    result = compliance_cases.run(_CASES.StepCase, name, running.address, env="plain")
    assert not result.errors, (name, result.errors)
    assert result.wasSuccessful() == should_pass, (name, result.failures)
