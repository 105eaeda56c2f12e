"""Compliance tests for `JoinWorld` and `LeaveWorld`."""
import abc
import collections

from absl.testing import absltest
import numpy as np

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_spec_utils


def _find_duplicates(names):
  """Returns the names that occur more than once, each listed once."""
  return [name for name, count in collections.Counter(names).items()
          if count > 1]


def _check_tensor_spec(tensor_spec):
  """Raises if `tensor_spec` contradicts itself.

  Args:
    tensor_spec: a `TensorSpec`.

  Raises:
    ValueError: more than one dimension is variable (negative), or the
      bounds do not fit the dtype or the shape, or min exceeds max.
  """
  if np.count_nonzero(np.asarray(tensor_spec.shape) < 0) > 1:
    raise ValueError(
        f'"{tensor_spec.name}" has shape {tensor_spec.shape}, with more than '
        "one negative (variable) dimension.")
  if (tensor_spec.min.WhichOneof("payload") or
      tensor_spec.max.WhichOneof("payload")):
    tensor_spec_utils.bounds(tensor_spec)  # Raises on inconsistent bounds.


class JoinLeaveWorld(absltest.TestCase, metaclass=abc.ABCMeta):
  """Checks how a server lets a connection join and leave a world.

  A subclass provides `connection` (a Connection that is not joined to any
  world) and `world_name` (a world that already exists); it may override the
  settings and `invalid_world_name`.  Every test leaves the world at the end.
  """

  @property
  def required_join_settings(self):
    """{name: Tensor}: the settings JoinWorld needs."""
    return {}

  @property
  def invalid_join_settings(self):
    """{name: Tensor}: settings JoinWorld must refuse, each on its own."""
    return {}

  @property
  @abc.abstractmethod
  def world_name(self):
    """The name of a world that exists."""

  @property
  def invalid_world_name(self):
    """A name no world has."""
    return "invalid_world_name"

  @property
  @abc.abstractmethod
  def connection(self):
    """The dm_env_rpc Connection to the server under test."""

  def tearDown(self):
    super().tearDown()
    self.leave_world()

  def join_world(self, **kwargs):
    """Sends JoinWorldRequest(**kwargs); returns the specs of the answer."""
    return self.connection.send(
        dm_env_rpc_pb2.JoinWorldRequest(**kwargs)).specs

  def leave_world(self):
    """Leaves the joined world, if any."""
    self.connection.send(dm_env_rpc_pb2.LeaveWorldRequest())

  def _join(self):
    return self.join_world(
        world_name=self.world_name, settings=self.required_join_settings)

  # The tests.  A test passes when no DmEnvRpcError escapes, unless it says
  # otherwise.

  def test_can_join(self):
    self._join()

  def test_cannot_join_with_wrong_world_name(self):
    with self.assertRaises(error.DmEnvRpcError):
      self.join_world(world_name=self.invalid_world_name)

  def test_cannot_join_world_with_invalid_settings(self):
    required = self.required_join_settings
    for name, tensor in self.invalid_join_settings.items():
      with self.assertRaises(error.DmEnvRpcError):
        self.join_world(
            world_name=self.world_name, settings={name: tensor, **required})

  def test_cannot_join_world_twice(self):
    self._join()
    with self.assertRaises(error.DmEnvRpcError):
      self._join()

  def test_action_specs_have_unique_names(self):
    specs = self._join()
    self.assertEmpty(
        _find_duplicates(spec.name for spec in specs.actions.values()))

  def test_action_specs_for_consistency(self):
    for spec in self._join().actions.values():
      _check_tensor_spec(spec)

  def test_observation_specs_have_unique_names(self):
    specs = self._join()
    self.assertEmpty(
        _find_duplicates(spec.name for spec in specs.observations.values()))

  def test_observation_specs_for_consistency(self):
    for spec in self._join().observations.values():
      _check_tensor_spec(spec)

  def test_can_leave_world_if_not_joined(self):
    self.leave_world()

  def test_can_leave_world_after_joining(self):
    self._join()
    self.leave_world()

  def test_can_rejoin_world_after_leaving(self):
    self._join()
    self.leave_world()
    self._join()
