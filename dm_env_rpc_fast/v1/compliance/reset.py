"""Compliance tests for `Reset`."""
import abc

from absl.testing import absltest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error


class Reset(absltest.TestCase, metaclass=abc.ABCMeta):
  """Checks how a server resets the world a connection has joined.

  A subclass provides `connection` (a Connection that is not yet joined: the
  tests join through `join_world` when they need to) and `join_world`.
  """

  @property
  @abc.abstractmethod
  def connection(self):
    """The dm_env_rpc Connection to the server under test."""

  @property
  def required_reset_settings(self):
    """{name: Tensor}: the settings Reset needs."""
    return {}

  @abc.abstractmethod
  def join_world(self):
    """Joins a world over `connection`; returns the specs of the answer."""

  def reset(self):
    """Sends a ResetRequest; returns the specs of the answer."""
    return self.connection.send(
        dm_env_rpc_pb2.ResetRequest(
            settings=self.required_reset_settings)).specs

  # The tests.

  def test_reset_resends_the_specs(self):
    join_specs = self.join_world()
    self.assertEqual(join_specs, self.reset())

  def test_cannot_reset_if_not_joined_to_world(self):
    with self.assertRaises(error.DmEnvRpcError):
      self.reset()

  def test_can_reset_multiple_times(self):
    join_specs = self.join_world()
    self.reset()
    self.assertEqual(join_specs, self.reset())
