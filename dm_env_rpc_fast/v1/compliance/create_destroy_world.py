"""Compliance tests for `CreateWorld` and `DestroyWorld`."""
import abc

from absl.testing import absltest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error


class CreateDestroyWorld(absltest.TestCase, metaclass=abc.ABCMeta):
  """Checks how a server creates and destroys worlds.

  A subclass provides `connection` (a Connection to the server; it need not be
  joined to anything), `required_world_settings`, `invalid_world_settings` and
  `has_multiple_world_support`.
  """

  @property
  @abc.abstractmethod
  def required_world_settings(self):
    """{name: Tensor}: the smallest set of settings CreateWorld accepts."""

  @property
  @abc.abstractmethod
  def invalid_world_settings(self):
    """{name: Tensor}: settings CreateWorld must refuse, each on its own.

    Each one is sent together with `required_world_settings`, which win on a
    name clash, so use names that are not required.
    """

  @property
  @abc.abstractmethod
  def has_multiple_world_support(self):
    """True if the server can hold more than one world at a time."""

  @property
  @abc.abstractmethod
  def connection(self):
    """The dm_env_rpc Connection to the server under test."""

  def create_world(self, settings):
    """Creates a world with `settings`; returns its name."""
    return self.connection.send(
        dm_env_rpc_pb2.CreateWorldRequest(settings=settings)).world_name

  def destroy_world(self, world_name):
    """Destroys the world `world_name`; does nothing if it is None."""
    if world_name is None:
      return
    self.connection.send(
        dm_env_rpc_pb2.DestroyWorldRequest(world_name=world_name))

  # The tests.  A test passes when no DmEnvRpcError escapes, unless it says
  # otherwise.

  def test_can_create_and_destroy_world(self):
    self.destroy_world(self.create_world(self.required_world_settings))

  def test_cannot_create_world_with_less_than_required_settings(self):
    required = self.required_world_settings
    for missing in required:
      fewer = {name: tensor for name, tensor in required.items()
               if name != missing}
      with self.assertRaises(
          error.DmEnvRpcError,
          msg=f'world was created without required setting "{missing}"'):
        self.create_world(fewer)

  def test_cannot_create_world_with_invalid_settings(self):
    required = self.required_world_settings
    for name, tensor in self.invalid_world_settings.items():
      with self.assertRaises(
          error.DmEnvRpcError,
          msg=f'world was created with invalid setting "{name}"'):
        self.create_world({name: tensor, **required})

  def test_world_name_is_unique(self):
    if not self.has_multiple_world_support:
      return
    first = second = None
    try:
      first = self.create_world(self.required_world_settings)
      second = self.create_world(self.required_world_settings)
      self.assertIsNotNone(first)
      self.assertIsNotNone(second)
      self.assertNotEqual(first, second)
    finally:
      self.destroy_world(first)
      self.destroy_world(second)

  def test_cannot_destroy_uncreated_world(self):
    with self.assertRaises(error.DmEnvRpcError):
      self.destroy_world("foo")
