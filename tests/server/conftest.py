"""Every server test runs once per codec backend (see tests/conftest.py's `backend`).

The fixtures start servers and open connections, and close them all when the
test ends, whatever its outcome.
"""
import importlib.util

import grpc
import pytest

from dm_env_rpc_fast import server
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

from support import server_envs
from support import server_helpers


@pytest.fixture(autouse=True)
def _on_each_backend(backend):
  return backend


@pytest.fixture(scope="module")
def upstream_installed():
  """Fails every test of a module that runs dm-env-rpc's code when it is not installed
  (`pytest.mark.usefixtures("upstream_installed")` beside the `upstream` mark)."""
  if importlib.util.find_spec("dm_env_rpc") is None:
    pytest.fail("dm-env-rpc is not installed: `pip install .[test]` installs it "
                "(or deselect these tests with -m 'not upstream')", pytrace=False)


def _kept(make, close="close"):
  """Yields `make`, wrapped to keep what it returns; afterwards calls `close` on each of them."""
  made = []

  def make_and_keep(*args, **kwargs):
    made.append(make(*args, **kwargs))
    return made[-1]

  yield make_and_keep
  for thing in made:
    getattr(thing, close)()


@pytest.fixture
def start_server():
  """`start_server(make_env=RichEnv's factory, **serve_kwargs)` -> a running `Server`."""

  def start(make_env=server_envs.make_env, **kwargs):
    kwargs.setdefault("address", "127.0.0.1:0")
    return server.serve(make_env, **kwargs)

  yield from _kept(start, close="stop")


@pytest.fixture
def rich_server(start_server):
  """A server of RichEnv worlds."""
  return start_server()


@pytest.fixture
def open_channel():
  """`open_channel(address)` -> a grpc channel with local credentials, closed at the end."""
  yield from _kept(lambda address: grpc.secure_channel(
      address, grpc.local_channel_credentials(), options=server_helpers.UNLIMITED))


@pytest.fixture(params=["grpc", "shm"])
def connect(open_channel, request):
  """`connect(address)` -> a `Connection` on a channel of its own, closed at the end.

  Each test runs with steps over the gRPC stream and over the shared-memory
  channel (transport "shm" fails the first step if the channel cannot be had).
  """
  yield from _kept(lambda address: dm_connection.Connection(open_channel(address),
                                                            transport=request.param))


@pytest.fixture
def raw_stream(open_channel):
  """`raw_stream(address)` -> a `RawStream` (bytes both ways), closed at the end."""
  yield from _kept(lambda address: server_helpers.RawStream(open_channel(address)))


class Joined:
  """A connection joined to a fresh RichEnv world: `connection`, `world`, `seed`, `specs`,
  `uids` ({name: uid} of actions and observations) and `env` (the server's environment)."""

  def __init__(self, connection, seed, **settings):
    self.connection = connection
    self.seed = seed
    packed = {key: tensor_utils.pack_tensor(value)
              for key, value in {"seed": seed, **settings}.items()}
    self.world = connection.send(dm_env_rpc_pb2.CreateWorldRequest(settings=packed)).world_name
    self.specs = connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=self.world)).specs
    self.action_uids = {spec.name: uid for uid, spec in self.specs.actions.items()}
    self.observation_uids = {spec.name: uid for uid, spec in self.specs.observations.items()}
    self.env = server_envs.instance(seed)

  def send(self, request):
    return self.connection.send(request)

  def step(self, actions=None, requested=()):
    """A StepRequest with {name: value} actions packed to their specs' dtypes (Tensors as
    they are)."""
    packed = {}
    for name, value in (actions or {}).items():
      uid = self.action_uids[name]
      packed[uid] = value if isinstance(value, dm_env_rpc_pb2.Tensor) else (
          tensor_utils.pack_tensor(value, dtype=self.specs.actions[uid].dtype))
    return self.connection.send(dm_env_rpc_pb2.StepRequest(
        actions=packed, requested_observations=[self.observation_uids[n] for n in requested]))

  def observations(self, response):
    names = {uid: name for name, uid in self.observation_uids.items()}
    return {names[uid]: tensor_utils.unpack_tensor(t) for uid, t in response.observations.items()}


@pytest.fixture
def joined(rich_server, connect):
  """`joined(**settings)` -> a `Joined` on `rich_server` (a new seed for each)."""

  def join(**settings):
    return Joined(connect(rich_server.address), server_envs.new_seed(), **settings)

  return join
