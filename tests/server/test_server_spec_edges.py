"""The spec edge cases dm_env_rpc clients meet (issue 13), with dm-env-rpc's client and ours,
each in a process of its own, against our server on each codec backend.

EdgeEnv (server_envs.py) has a variable-size action and observation (shape (-1,)), a
scalar int32 bounded from 0 to int32's maximum, a bounded float observation that the
command "oob" pushes out of its bounds, a string action, a JoinWorld hook and a property.
edge_client.py drives it (its STEPS) and reports what the client saw; the server's log
records are kept beside.  One client run per package and backend serves every test here.
"""
import logging
import pickle
import subprocess

import pytest
from google.rpc import code_pb2

from support import server_envs
from support import server_helpers

pytestmark = [pytest.mark.upstream, pytest.mark.usefixtures("upstream_installed")]

SCRIPT = str(server_helpers.HERE / "edge_client.py")
_RUNS = {}


class _Records(logging.Handler):

  def __init__(self):
    super().__init__()
    self.records = []

  def emit(self, record):
    self.records.append(record)


@pytest.fixture(params=["dm_env_rpc", "dm_env_rpc_fast"])
def edge(request, backend, start_server, tmp_path):
  """(what the client saw, the server's log records) of edge_client.py's run."""
  key = (request.param, backend)
  if key not in _RUNS:
    records = _Records()
    logger = logging.getLogger("dm_env_rpc_fast.server")
    logger.addHandler(records)
    try:
      running = start_server(server_envs.make_edge_env)
      out = tmp_path / "edge.pkl"
      result = subprocess.run(
          [server_helpers.python(), SCRIPT, "--package", request.param,
           "--address", running.address, "--out", str(out)],
          env=server_helpers.subprocess_env(backend), capture_output=True, text=True,
          timeout=300)
      assert result.returncode == 0, result.stderr
      running.stop()
    finally:
      logger.removeHandler(records)
    with open(out, "rb") as f:
      seen = pickle.load(f)
    client = seen["client"].replace("\\", "/")
    assert client.endswith(f"/{request.param}/v1/dm_env_adaptor.py"), client
    assert not seen["imported"], seen["imported"]  # the other package never got imported
    _RUNS[key] = seen, records.records
  return _RUNS[key]


def _is_error(value):
  return isinstance(value, tuple) and value[0] == "error"


def _error(value, code, *fragments):
  assert _is_error(value), value
  assert server_helpers.code_name(value[1]) == server_helpers.code_name(code), value
  for fragment in fragments:
    assert fragment in value[2], (fragment, value[2])


def test_a_variable_dimension_takes_any_size(edge):
  """Item 1: a (-1,) action and observation are advertised as such and take any size; the
  default action is empty along it."""
  seen, _ = edge
  var = ("Array", (-1,), "int32", None, None, None)
  assert seen["specs"]["actions"]["var"] == var
  assert seen["specs"]["observations"]["var"] == var
  steps = seen["timesteps"]
  assert [_is_error(t) for t in steps] == [False, False, False, False, True, False], steps
  # Reset; held default (empty); sent [1, 2, 3]; held; (refused); sent five 4s.
  assert [steps[i]["var"].tolist() for i in (0, 1, 2, 3, 5)] == [[], [], [1, 2, 3], [1, 2, 3],
                                                                 [4] * 5]
  assert all(steps[i]["var"].dtype == "int32" for i in (0, 1, 2, 3, 5))


def test_integer_bounds_up_to_the_dtype_maximum_are_readable(edge):
  """Item 2: a scalar int32 in [0, int32 max] reads as that BoundedArray (no DiscreteArray of
  max + 1 values, which overflows in dm-env-rpc), and its maximum is a valid action."""
  seen, _ = edge
  top = server_envs.INT32_MAX
  for role in ("actions", "observations"):
    kind, shape, dtype, low, high, _ = seen["specs"][role]["level"]
    assert (kind, shape, dtype, int(low), int(high)) == ("BoundedArray", (), "int32", 0, top)
  assert seen["timesteps"][2]["level"] == top


def test_an_observation_out_of_bounds_is_internal_naming_it(edge):
  """Item 3: an observation outside its spec's bounds is refused, INTERNAL naming the
  observation, the value and the bound; the next good step goes through."""
  seen, _ = edge
  _error(seen["timesteps"][4], code_pb2.INTERNAL, "observation 'unit'", "above its maximum",
         "element [1] is 1.5", "the bound is 1.0")
  assert seen["timesteps"][5]["unit"].tolist() == [0.0, 1.0]


def test_an_internal_answer_is_logged_with_its_exception(edge):
  """Item 4: the INTERNAL answer is in the server's log, with the exception behind it."""
  _, records = edge
  logged = [r for r in records if r.levelno >= logging.ERROR and "'unit'" in r.getMessage()]
  assert len(logged) == 1, [r.getMessage() for r in records]
  assert "INTERNAL" in logged[0].getMessage() and "above its maximum" in logged[0].getMessage()
  assert logged[0].exc_info and logged[0].exc_info[0] is ValueError


def test_string_actions_reach_the_environment_in_one_dtype(edge):
  """Item 5: a string action is a numpy str_ array whether the server held its default, the
  client sent it, or the server held what the client sent."""
  seen, _ = edge
  assert [seen["timesteps"][i]["got"] for i in (1, 2, 3)] == ["ndarray U"] * 3


def test_properties_before_joining(edge):
  """Item 6: before JoinWorld the root lists no properties and a read is FAILED_PRECONDITION
  saying why; after joining the world's properties are there."""
  seen, _ = edge
  assert seen["before_join"]["listed"] == []
  _error(seen["before_join"]["read"], code_pb2.FAILED_PRECONDITION, "before JoinWorld",
         "belong to the joined world's environment", "join a world first")
  assert seen["agent"] == "alice"


def test_join_world_settings_reach_a_join_hook(edge):
  """Item 7: JoinWorld settings reach dm_env_rpc_join_world(**settings); an environment without
  it refuses them, saying how to accept them."""
  seen, _ = edge
  _error(seen["join_refused"], code_pb2.INVALID_ARGUMENT, "JoinWorld takes no settings",
         "got agent", "dm_env_rpc_join_world(**settings)")
  assert [t["agent"] for t in seen["timesteps"] if not _is_error(t)] == ["alice"] * 5
