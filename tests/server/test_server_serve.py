"""`server.serve()`: the bound port, stopping (which closes every environment), the
context manager, refused addresses, the stream limit and message sizes."""
import concurrent.futures
import socket
import threading

import grpc
import numpy as np
import pytest
from google.rpc import code_pb2

from dm_env_rpc_fast import codec
from dm_env_rpc_fast import server
from dm_env_rpc_fast.examples import large_observation
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

from support import server_envs
from support import waiting
from support import server_helpers

RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING


def _create(connection, seed=None, **settings):
  settings = {"seed": server_envs.new_seed() if seed is None else seed, **settings}
  return connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={k: tensor_utils.pack_tensor(v) for k, v in settings.items()})).world_name


def test_serve_returns_the_bound_port_and_address(start_server, connect):
  """serve() on port 0 returns the port chosen, a 'host:port' address and the servicer."""
  running = start_server()
  assert isinstance(running.port, int) and running.port > 0
  assert running.address == f"127.0.0.1:{running.port}"
  assert isinstance(running.servicer, server.EnvironmentServicer)
  world = _create(connect(running.address))
  assert running.servicer.world_names == [world]


def test_world_names_are_unique_across_streams(rich_server, connect):
  """World names never repeat, across streams."""
  names = [_create(connect(rich_server.address)) for _ in range(3)]
  names += [_create(connect(rich_server.address)) for _ in range(2)]
  assert len(set(names)) == 5
  assert rich_server.servicer.world_names == sorted(names)


def test_stop_closes_every_environment_and_ends_the_streams(start_server, connect):
  """stop() closes every environment, joined or not, ends the open streams, and is idempotent."""
  running = start_server()
  first, second = connect(running.address), connect(running.address)
  seeds = [server_envs.new_seed() for _ in range(3)]
  worlds = [_create(first, seeds[0]), _create(first, seeds[1]), _create(second, seeds[2])]
  second.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=worlds[2]))
  assert second.send(dm_env_rpc_pb2.StepRequest()).state == RUNNING  # mid-episode
  assert not running.wait(timeout=0)
  running.stop()
  assert running.wait(timeout=0)
  assert [server_envs.closed_count(seed) for seed in seeds] == [1, 1, 1]
  assert running.servicer.world_names == []
  with pytest.raises(grpc.RpcError):
    second.send(dm_env_rpc_pb2.StepRequest())
  running.stop()  # again: nothing more to do
  assert [server_envs.closed_count(seed) for seed in seeds] == [1, 1, 1]


def test_stop_with_grace_closes_every_environment(start_server, connect):
  """stop(grace) closes every environment too."""
  running = start_server()
  seed = server_envs.new_seed()
  _create(connect(running.address), seed)
  running.stop(grace=0.2)
  assert server_envs.closed_count(seed) == 1 and running.servicer.world_names == []


def test_wait_returns_when_another_thread_stops_the_server(start_server):
  """wait() blocks until another thread stops the server."""
  running = start_server()
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    waited = pool.submit(running.wait)
    assert not running.wait(timeout=0.05)
    running.stop()
    assert waited.result(timeout=60) is True


def test_the_context_manager_stops_the_server(connect):
  """Leaving the `with` block stops the server and closes its environments."""
  seed = server_envs.new_seed()
  with server.serve(server_envs.make_env) as running:
    connection = connect(running.address)
    world = _create(connection, seed)
    connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
    connection.send(dm_env_rpc_pb2.StepRequest())
    assert server_envs.closed_count(seed) == 0
  assert running.wait(timeout=0)
  assert server_envs.closed_count(seed) == 1
  with pytest.raises(grpc.RpcError):
    _create(connect(running.address))


def test_a_closed_servicer_refuses_new_worlds(connect):
  """`EnvironmentServicer` in a grpc.server of one's own; after close(), CreateWorld is
  UNAVAILABLE and every environment is closed."""
  servicer = server.EnvironmentServicer(server_envs.make_env)
  grpc_server = grpc.server(concurrent.futures.ThreadPoolExecutor(4))
  servicer.add_to_server(grpc_server)
  port = grpc_server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())
  grpc_server.start()
  try:
    connection = connect(f"127.0.0.1:{port}")
    seed = server_envs.new_seed()
    _create(connection, seed)
    servicer.close()
    assert server_envs.closed_count(seed) == 1 and servicer.world_names == []
    server_helpers.expect_error(
        connection.send,
        dm_env_rpc_pb2.CreateWorldRequest(settings={"seed": tensor_utils.pack_tensor(1)}),
        code_pb2.UNAVAILABLE, "shutting down")
  finally:
    grpc_server.stop(None).wait()


def test_the_servicer_needs_a_callable():
  """EnvironmentServicer refuses a make_env that is not callable."""
  with pytest.raises(TypeError, match="make_env must be callable, not int"):
    server.EnvironmentServicer(42)


def test_a_busy_port_is_an_error():
  """Bound by a plain socket, or by another server: serve() raises instead of sharing it."""
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port}"):
      server.serve(server_envs.make_env, f"127.0.0.1:{port}")
  with server.serve(server_envs.make_env) as first:
    with pytest.raises(RuntimeError, match=f"could not listen on {first.address}"):
      server.serve(server_envs.make_env, first.address)


@pytest.mark.parametrize("address, error", [
    ("localhost", ValueError), ("127.0.0.1:abc", ValueError), ("127.0.0.1:", ValueError),
    ("999.1.1.1:0", RuntimeError),
])
def test_a_bad_address_is_an_error(address, error):
  """An address without a numeric port is a ValueError; one that cannot be bound a RuntimeError."""
  with pytest.raises(error, match="address must be 'host:port'|could not listen"):
    server.serve(server_envs.make_env, address)


def test_max_streams_must_be_positive():
  """max_streams below 1 is a ValueError."""
  with pytest.raises(ValueError, match="max_streams must be at least 1, not 0"):
    server.serve(server_envs.make_env, max_streams=0)


def test_streams_beyond_max_streams_are_resource_exhausted(start_server, open_channel):
  """A stream beyond max_streams is refused with RESOURCE_EXHAUSTED; once one ends, a new one is
  served."""
  running = start_server(max_streams=2)
  held = []
  for _ in range(2):
    connection = dm_connection.Connection(open_channel(running.address))
    held.append(connection)
    _create(connection)  # the stream is open and being served
  refused = dm_connection.Connection(open_channel(running.address))
  try:
    with pytest.raises(grpc.RpcError) as caught:
      _create(refused)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
  finally:
    refused.close()
  assert len(running.servicer.world_names) == 2
  held.pop().close()

  def a_new_stream_is_served():
    connection = dm_connection.Connection(open_channel(running.address))
    try:
      _create(connection)
      held.append(connection)
      return True
    except grpc.RpcError as e:
      assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
      connection.close()
      return False

  try:
    assert waiting.wait_until(a_new_stream_is_served, timeout=60, interval=0.05)
  finally:
    for connection in held:
      connection.close()


def test_insecure_serving_takes_plain_channels(start_server):
  """insecure=True serves clients on plain (insecure) channels."""
  running = start_server(insecure=True)
  with grpc.insecure_channel(running.address) as channel:
    connection = dm_connection.Connection(channel)
    try:
      assert _create(connection).startswith("world_")
    finally:
      connection.close()


# --------------------------------------------------------------------------
# Message sizes: no limits by default.

BIG_SHAPE = (2048, 1024)  # float32: 8 MiB


def test_an_8_mib_observation_passes(start_server, open_channel):
  """An 8 MiB observation reaches the client: no limit on what the server sends."""
  running = start_server(large_observation.make_env)
  stream = server_helpers.RawStream(open_channel(running.address))
  try:
    create = dm_env_rpc_pb2.CreateWorldRequest(settings={
        "shape": tensor_utils.pack_tensor(np.array(BIG_SHAPE, np.int32)),
        "dtype": tensor_utils.pack_tensor("float32")})
    world = stream.send(server_helpers.request_bytes(create_world=create)).create_world.world_name
    stream.send(server_helpers.request_bytes(join_world=dm_env_rpc_pb2.JoinWorldRequest(
        world_name=world)))
    response = stream.send_bytes(codec.encode_step_request({}, [1]))
    assert len(response) > 8 * 2 ** 20
    state, observations = codec.decode_step_response(response)
    assert state == RUNNING
    np.testing.assert_array_equal(observations[1], large_observation.pattern("float32", BIG_SHAPE))
  finally:
    stream.close()


def test_an_8_mib_request_passes(start_server, connect):
  """An 8 MiB CreateWorld reaches make_env: no limit on what the server receives."""
  received = []

  def make_env(blob):
    received.append(blob)
    return server_envs.PlainEnv(server_envs.new_seed())

  running = start_server(make_env)
  blob = np.arange(2 * 2 ** 20, dtype=np.float32)  # 8 MiB
  connect(running.address).send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={"blob": tensor_utils.pack_tensor(blob)}))
  np.testing.assert_array_equal(received[0], blob)


def test_options_can_set_limits_again(start_server, connect):
  """An option given to serve() replaces the default for its key (here a receive limit)."""
  running = start_server(options=[("grpc.max_receive_message_length", 1024)])
  connection = connect(running.address)
  with pytest.raises(grpc.RpcError) as caught:
    connection.send(dm_env_rpc_pb2.CreateWorldRequest(
        settings={"blob": tensor_utils.pack_tensor(np.zeros(4096, np.uint8))}))
  assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert running.servicer.world_names == []


def test_many_streams_are_served_at_once(rich_server, open_channel):
  """Streams are served side by side: 16 streams open together, each with its own world,
  each answered while the others stay open."""
  connections = [dm_connection.Connection(open_channel(rich_server.address)) for _ in range(16)]
  try:
    worlds = [_create(c) for c in connections]
    for connection, world in zip(connections, worlds):
      connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
    barrier = threading.Barrier(len(connections))

    def step(connection):
      barrier.wait(timeout=60)
      return connection.send(dm_env_rpc_pb2.StepRequest()).state

    with concurrent.futures.ThreadPoolExecutor(len(connections)) as pool:
      assert list(pool.map(step, connections, timeout=120)) == [RUNNING] * len(connections)
    assert len(set(worlds)) == 16
  finally:
    for connection in connections:
      connection.close()
