"""Compliance tests for `ResetWorld`."""
import abc

from absl.testing import absltest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error


class ResetWorld(absltest.TestCase, metaclass=abc.ABCMeta):
  """Checks how a server resets a world by name.

  A subclass provides `connection` (a Connection that is not joined to any
  world) and `world_name` (a world that exists); it may override the settings
  and `invalid_world_name`.
  """

  @property
  @abc.abstractmethod
  def connection(self):
    """The dm_env_rpc Connection to the server under test."""

  @property
  def required_reset_world_settings(self):
    """{name: Tensor}: the settings ResetWorld needs."""
    return {}

  @property
  def required_join_world_settings(self):
    """{name: Tensor}: the settings JoinWorld needs."""
    return {}

  @property
  def invalid_world_name(self):
    """A name no world has."""
    return "invalid_world_name"

  @property
  @abc.abstractmethod
  def world_name(self):
    """The name of the world to reset."""

  def join_world(self):
    """Joins `world_name`."""
    self.connection.send(
        dm_env_rpc_pb2.JoinWorldRequest(
            world_name=self.world_name,
            settings=self.required_join_world_settings))

  def reset_world(self, world_name):
    """Resets the world `world_name`."""
    self.connection.send(
        dm_env_rpc_pb2.ResetWorldRequest(
            world_name=world_name,
            settings=self.required_reset_world_settings))

  def leave_world(self):
    """Leaves the joined world, if any."""
    self.connection.send(dm_env_rpc_pb2.LeaveWorldRequest())

  # The tests.  A test passes when no DmEnvRpcError escapes, unless it says
  # otherwise.

  def test_cannot_reset_invalid_world(self):
    with self.assertRaises(error.DmEnvRpcError):
      self.reset_world(self.invalid_world_name)

  def test_can_reset_world_not_joined_to(self):
    self.reset_world(self.world_name)

  def test_can_reset_world_when_joined_to_it(self):
    try:
      self.join_world()
      self.reset_world(self.world_name)
    finally:
      self.leave_world()
