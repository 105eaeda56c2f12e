"""The same-host shared-memory step channel: negotiation, fallback, security, faults, leaks.

The rest of the server suite already runs over both transports (the `connect`
fixture); these tests are about the channel itself.  Every test runs on both
codec backends (the autouse `backend` fixture of this folder).
"""
import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent import futures

import dm_env
import grpc
import numpy as np
import pytest
from dm_env import specs

from dm_env_rpc_fast import codec
from dm_env_rpc_fast import server
from dm_env_rpc_fast.examples import large_observation
from dm_env_rpc_fast.shm import _wire
from dm_env_rpc_fast.shm import channel_pb2
from dm_env_rpc_fast.shm import client as shm_client
from dm_env_rpc_fast.shm import server as shm_server
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error

from support import server_helpers
from support import waiting

pytestmark = pytest.mark.skipif(not _wire.SUPPORTED, reason="the channel needs Linux")

LARGE = "dm_env_rpc_fast.examples.large_observation:make_env"


def _settings(shape=(16,), dtype="float32", episode_length=0):
  return {"shape": list(shape), "dtype": dtype, "episode_length": episode_length}


@pytest.fixture
def large_server(start_server):
  return start_server(large_observation.make_env)


def _adaptor(address, transport="auto", zero_copy=False, **settings):
  conn = dm_connection.create_secure_channel_and_connect(address, transport=transport)
  env, _ = dm_env_adaptor.create_and_join_world(conn, _settings(**settings), {},
                                                zero_copy=zero_copy)
  return conn, env


def _fds():
  return sorted(os.listdir("/proc/self/fd"))


def _memfds(pid="self"):
  names = []
  for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
      names.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    except OSError:
      pass
  return [n for n in names if n.startswith("/memfd:")]


def _described(fds):
  names = {}
  for fd in fds:
    try:
      names[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
      pass
  return names


# Negotiation and choice of transport.

def test_auto_picks_the_channel_at_the_first_step(large_server):
  conn, env = _adaptor(large_server.address)
  assert conn.transport is None  # undecided until the first step
  timestep = env.reset()
  assert conn.transport == "shm"
  assert large_server.servicer.channel_count == 1
  np.testing.assert_array_equal(timestep.observation["obs_0"],
                                large_observation.pattern("float32", (16,)))
  conn.close()
  assert waiting.wait_until(lambda: large_server.servicer.channel_count == 0)


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_grpc_transport_sends_no_extension_request(start_server, monkeypatch, how):
  """transport="grpc" (or the variable) keeps every request as it was: none extra."""
  seen = []
  servicer = server.EnvironmentServicer(large_observation.make_env)
  original = servicer.Process

  def counting(request_iterator, context):
    def requests():
      for data in request_iterator:
        seen.append(dm_env_rpc_pb2.EnvironmentRequest.FromString(data).WhichOneof("payload"))
        yield data
    return original(requests(), context)

  grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=server_helpers.UNLIMITED)
  handler = grpc.method_handlers_generic_handler(
      "dm_env_rpc.v1.Environment", {"Process": grpc.stream_stream_rpc_method_handler(counting)})
  grpc_server.add_generic_rpc_handlers((handler,))
  port = grpc_server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())
  grpc_server.start()
  try:
    if how == "environment":
      monkeypatch.setenv("DM_ENV_RPC_FAST_TRANSPORT", "grpc")
      transport = None
    else:
      transport = "grpc"
    conn = dm_connection.create_secure_channel_and_connect(f"127.0.0.1:{port}",
                                                           transport=transport)
    env, _ = dm_env_adaptor.create_and_join_world(conn, _settings(), {})
    env.reset()
    env.step({"action": 1})
    assert conn.transport == "grpc"
    assert seen == ["create_world", "join_world", "reset", "step", "step"]
    conn.close()
    # The default asks once, at the first step, and steps leave the stream.
    seen.clear()
    monkeypatch.delenv("DM_ENV_RPC_FAST_TRANSPORT", raising=False)
    conn = dm_connection.create_secure_channel_and_connect(f"127.0.0.1:{port}")
    env, _ = dm_env_adaptor.create_and_join_world(conn, _settings(), {})
    env.reset()
    env.step({"action": 1})
    assert conn.transport == "shm"
    assert seen == ["create_world", "join_world", "reset", "extension"]
    conn.close()
  finally:
    grpc_server.stop(None)
    servicer.close()


def test_bad_transport_values_are_refused(large_server, monkeypatch):
  channel = grpc.secure_channel(large_server.address, grpc.local_channel_credentials())
  try:
    with pytest.raises(ValueError, match="transport must be one of auto, grpc, shm"):
      dm_connection.Connection(channel, transport="fast")
    monkeypatch.setenv("DM_ENV_RPC_FAST_TRANSPORT", "carrier-pigeon")
    with pytest.raises(ValueError, match="DM_ENV_RPC_FAST_TRANSPORT must be one of"):
      dm_connection.Connection(channel)
  finally:
    channel.close()


def test_a_server_without_the_channel_keeps_auto_on_grpc(start_server):
  running = start_server(large_observation.make_env, shared_memory=False)
  conn, env = _adaptor(running.address)
  env.reset()
  env.step({"action": 1})
  assert conn.transport == "grpc"
  conn.close()
  conn, env = _adaptor(running.address, transport="shm")
  with pytest.raises(shm_client.ChannelError, match="does not offer shared-memory channels"):
    env.reset()
  conn.close()


def test_a_patched_stub_is_never_asked(large_server, monkeypatch):
  """Test doubles patched in through connection.dm_env_rpc_pb2_grpc see no extension request."""
  class RecordingStub:
    def __init__(self, channel):
      self.requests = []
      self._channel = channel

    def Process(self, request_iterator, metadata=None):  # pylint: disable=invalid-name
      def recorded():
        for request in request_iterator:
          self.requests.append(request.WhichOneof("payload"))
          yield request
      stub = _GENERATED(self._channel)
      return stub.Process(recorded(), metadata=metadata)

  _GENERATED = dm_connection.dm_env_rpc_pb2_grpc.EnvironmentStub
  made = []

  def factory(channel):
    stub = RecordingStub(channel)
    made.append(stub)
    return stub

  monkeypatch.setattr(dm_connection.dm_env_rpc_pb2_grpc, "EnvironmentStub", factory)
  conn, env = _adaptor(large_server.address)
  env.reset()
  env.step({"action": 1})
  assert conn.transport == "grpc"
  assert made[0].requests == ["create_world", "join_world", "reset", "step", "step"]
  conn.close()


# What travels.

@pytest.mark.parametrize("shape,dtype", [((3,), "float64"), ((300, 300, 3), "float32"),
                                         ((2000,), "int32"), ((70000,), "uint8")])
def test_observations_of_every_size_arrive_whole(large_server, shape, dtype):
  """Larger than the first region (64 KiB): the server's region grows; values stay right."""
  conn, env = _adaptor(large_server.address, shape=shape, dtype=dtype)
  want = large_observation.pattern(dtype, shape)
  for timestep in [env.reset()] + [env.step({"action": 2}) for _ in range(3)]:
    got = timestep.observation["obs_0"]
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype
    if dtype != "uint8":
      assert got.flags.writeable
  assert conn.transport == "shm"
  conn.close()


def test_int8_and_uint8_observations_outlive_the_next_step(large_server):
  """They are read-only views over gRPC's bytes; over the channel, read-only copies."""
  conn, env = _adaptor(large_server.address, shape=(8,), dtype="uint8")
  first = env.reset().observation["obs_0"]
  kept = first.copy()
  env.step({"action": 0})
  env.step({"action": 0})
  assert not first.flags.writeable
  np.testing.assert_array_equal(first, kept)
  conn.close()


def test_zero_copy_views_hold_until_the_next_step(start_server):
  """Documented: zero_copy views are of the server's region, overwritten by the next step."""
  class Counter(dm_env.Environment):
    def __init__(self):
      self._t = 0

    def reset(self):
      self._t = 0
      return dm_env.restart({"count": np.full(4, self._t, np.float32)})

    def step(self, action):
      self._t += 1
      return dm_env.transition(0.0, {"count": np.full(4, self._t, np.float32)})

    def observation_spec(self):
      return {"count": specs.Array((4,), np.float32)}

    def action_spec(self):
      return {"a": specs.Array((), np.int32)}

  running = start_server(lambda: Counter())
  conn = dm_connection.create_secure_channel_and_connect(running.address, transport="shm")
  env, _ = dm_env_adaptor.create_and_join_world(conn, {}, {}, zero_copy=True)
  env.reset()
  view = env.step({"a": 0}).observation["count"]
  assert not view.flags.writeable
  np.testing.assert_array_equal(view, 1)
  env.step({"a": 0})
  if codec.BACKEND == "native":
    np.testing.assert_array_equal(view, 2)  # a view of the region, which was written again
  else:
    np.testing.assert_array_equal(view, 1)  # the pure backend decodes from a private copy
  conn.close()
  del view  # the mapping goes with the last view


def test_requests_larger_than_the_region(start_server):
  """A 1 MB action: the client's region grows too."""
  class Echo(dm_env.Environment):
    def reset(self):
      return dm_env.restart({"sum": np.float64(0)})

    def step(self, action):
      return dm_env.transition(0.0, {"sum": np.float64(action["v"].sum())})

    def observation_spec(self):
      return {"sum": specs.Array((), np.float64)}

    def action_spec(self):
      return {"v": specs.Array((250_000,), np.float32)}

  running = start_server(lambda: Echo())
  conn = dm_connection.create_secure_channel_and_connect(running.address, transport="shm")
  env, _ = dm_env_adaptor.create_and_join_world(conn, {}, {})
  env.reset()
  for value in (1.0, 2.0):
    action = np.full(250_000, value, np.float32)
    assert env.step({"v": action}).observation["sum"] == pytest.approx(250_000 * value)
  conn.close()


def test_server_errors_come_back_over_the_channel(large_server):
  conn, env = _adaptor(large_server.address)
  env.reset()
  with pytest.raises(error.DmEnvRpcError, match="action uid 9"):
    conn.send_step({9: np.int32(1)}, [1])
  assert conn.transport == "shm"
  # The channel is still good.
  np.testing.assert_array_equal(env.step({"action": 1}).observation["obs_0"],
                                large_observation.pattern("float32", (16,)))
  conn.close()


def test_on_ready_over_grpc_runs_at_once(large_server):
  """gRPC's Python stream receives only when read: ready at once, finish_step waits."""
  conn, env = _adaptor(large_server.address, transport="grpc")
  env.reset()
  calls = []
  conn.start_step({1: np.int32(3)}, [1], on_ready=lambda: calls.append(1))
  assert calls == [1] and not conn.signals_readiness
  state, observations = conn.finish_step()
  assert state == dm_env_rpc_pb2.RUNNING and 1 in observations
  assert calls == [1]  # once
  conn.close()


def test_on_ready_fires_over_the_channel(large_server):
  conn, env = _adaptor(large_server.address)
  env.reset()
  assert conn.signals_readiness
  ready = threading.Event()
  conn.start_step({1: np.int32(3)}, [1], on_ready=ready.set)
  assert ready.wait(10)
  state, observations = conn.finish_step()
  assert state == dm_env_rpc_pb2.RUNNING and 1 in observations
  with pytest.raises(ValueError, match="no step in flight"):
    conn.finish_step()
  conn.close()


# Security: only the same user, only with the token, once.

def _offer_of(host, handler=lambda data: (1, {})):
  return host.offer(object(), handler)


def test_a_wrong_token_is_refused():
  host = shm_server.ChannelHost()
  try:
    offer = _offer_of(host)
    forged = channel_pb2.OpenChannelResponse()
    forged.CopyFrom(offer)
    forged.token = bytes(32)
    with pytest.raises(shm_client.ChannelError):
      shm_client.attach(forged)
    channel = shm_client.attach(offer)  # the real one still works, once
    with pytest.raises(shm_client.ChannelError):
      shm_client.attach(offer)
    channel.close()
  finally:
    host.close()


def test_another_user_cannot_attach():
  """Even with the token: the server checks the peer's uid (SO_PEERCRED)."""
  if os.getuid() != 0:
    pytest.skip("needs root to become another user")
  host = shm_server.ChannelHost()
  try:
    offer = _offer_of(host)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child becomes nobody and tries
      try:
        os.setgid(65534)
        os.setuid(65534)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(5)
        sock.connect(offer.socket_address)
        _wire.send(sock, _wire.KIND_HELLO, 0, payload=offer.token)
        answer = sock.recv(64)
        os.write(write, b"welcomed" if answer else b"refused")
      except Exception as e:  # pylint: disable=broad-except
        os.write(write, f"error {e}".encode())
      finally:
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    said = os.read(read, 100)
    assert said != b"welcomed" and said, said
    os.close(read)
    # The token was not spent on the refused attach.
    shm_client.attach(offer).close()
  finally:
    host.close()


def test_the_client_refuses_offers_from_elsewhere():
  offer = channel_pb2.OpenChannelResponse(
      version=_wire.VERSION, socket_address=b"\0nowhere", token=bytes(32),
      host_id=_wire.host_id(), uid=os.getuid())
  from google.protobuf import any_pb2
  for field, value, message in [("host_id", "another-host", "another host"),
                                ("uid", os.getuid() + 1, "another user"),
                                ("version", 99, "channel version 99")]:
    changed = channel_pb2.OpenChannelResponse()
    changed.CopyFrom(offer)
    setattr(changed, field, value)
    packed = any_pb2.Any()
    packed.Pack(changed)
    with pytest.raises(shm_client.ChannelError, match=message):
      shm_client.parse_offer(packed)


# Hostile peers: clear errors, never a crash, and the server keeps serving.

def _raw_client(host, handler):
  offer = _offer_of(host, handler)
  return shm_client.attach(offer)


@pytest.mark.parametrize("garbage", [b"\xff" * 40, b"\x12\x05\x08\x01\x12\x01", b"",
                                     codec.encode_step_request({1: np.int32(1)}, [2])])
def test_garbage_responses_raise_value_errors(garbage):
  """A server whose answer is not a step response: ValueError, as over gRPC."""
  host = shm_server.ChannelHost()
  try:
    channel = _raw_client(host, lambda data: garbage)
    channel.start(codec.encode_step_request({}, [1]))
    with pytest.raises(ValueError):
      channel.finish(False)
    channel.close()
  finally:
    host.close()


def _fake_server(behaviour):
  """A channel server that answers the hello, then misbehaves as told."""
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
  address = b"\0dm_env_rpc_fast-test-" + os.urandom(8).hex().encode()
  listener.bind(address)
  listener.listen(1)

  def run():
    sock, _ = listener.accept()
    _wire.receive(sock, _wire.KIND_HELLO, _wire.TOKEN_BYTES)
    _wire.send(sock, _wire.KIND_WELCOME, 0)
    _, fd, _ = _wire.receive(sock, _wire.KIND_REQUEST)
    os.close(fd)  # the client's region: this server never reads it
    behaviour(sock)
    time.sleep(0.5)
    sock.close()
    listener.close()

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  offer = channel_pb2.OpenChannelResponse(version=_wire.VERSION, socket_address=address,
                                          token=bytes(32), host_id=_wire.host_id(),
                                          uid=os.getuid())
  return shm_client.attach(offer), thread


def _unsealed_region(size):
  fd = os.memfd_create("test", os.MFD_CLOEXEC)
  os.ftruncate(fd, size)
  return fd


@pytest.mark.parametrize("lie", ["length past the region", "no region", "unsealed region",
                                 "wrong kind", "two descriptors", "hang up"])
def test_a_lying_server_gets_a_channel_error(lie):
  def behave(sock):
    if lie == "length past the region":
      region, fd = _wire.Region.create(1 << 16)
      _wire.send(sock, _wire.KIND_RESPONSE, (1 << 16) + 1, fd)
      os.close(fd)
    elif lie == "no region":
      _wire.send(sock, _wire.KIND_RESPONSE, 10)
    elif lie == "unsealed region":
      fd = _unsealed_region(1 << 16)
      _wire.send(sock, _wire.KIND_RESPONSE, 10, fd)
      os.close(fd)
    elif lie == "wrong kind":
      _wire.send(sock, _wire.KIND_WELCOME, 0)
    elif lie == "two descriptors":
      a, fd = _wire.Region.create(1 << 16)
      b, fd2 = _wire.Region.create(1 << 16)
      import array
      sock.sendmsg([_wire.HEADER.pack(_wire.KIND_RESPONSE, _wire.FLAG_NEW_REGION, 1)],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd, fd2]))])
      os.close(fd)
      os.close(fd2)
    else:
      sock.shutdown(socket.SHUT_RDWR)

  before = _fds()
  channel, thread = _fake_server(behave)
  channel.start(codec.encode_step_request({}, [1]))
  with pytest.raises(shm_client.ChannelError):
    channel.finish(False)
  with pytest.raises(shm_client.ChannelError, match="closed"):
    channel.start(b"")
  thread.join(5)
  assert waiting.wait_until(lambda: len(_fds()) <= len(before)), _described(set(_fds()) - set(before))


@pytest.mark.parametrize("lie", ["length past the region", "unsealed region", "no region",
                                 "garbage request", "hello twice"])
def test_a_lying_client_is_dropped_and_others_keep_stepping(large_server, lie):
  servicer = large_server.servicer
  good, env = _adaptor(large_server.address)
  env.reset()
  # A second stream asks for an offer, then misbehaves on its channel.
  bad = dm_connection.create_secure_channel_and_connect(large_server.address, transport="grpc")
  dm_env_adaptor.create_and_join_world(bad, _settings(), {})
  offer = shm_client.parse_offer(bad.send(shm_client.offer_request()))
  sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
  sock.connect(offer.socket_address)
  _wire.send(sock, _wire.KIND_HELLO, 0, payload=offer.token)
  _wire.receive(sock, _wire.KIND_WELCOME)
  if lie == "length past the region":
    _, fd = _wire.Region.create(1 << 16)
    _wire.send(sock, _wire.KIND_REQUEST, 1 << 20, fd)
    os.close(fd)
  elif lie == "unsealed region":
    fd = _unsealed_region(1 << 16)
    _wire.send(sock, _wire.KIND_REQUEST, 4, fd)
    os.close(fd)
  elif lie == "no region":
    _wire.send(sock, _wire.KIND_REQUEST, 4)
  elif lie == "hello twice":
    _wire.send(sock, _wire.KIND_HELLO, 0, payload=offer.token)
  else:
    region, fd = _wire.Region.create(1 << 16)
    region.view[:8] = b"\x1a\x06\xff\xff\xff\xff\xff\xff"
    _wire.send(sock, _wire.KIND_REQUEST, 8, fd)
    os.close(fd)
    length, new_fd, _ = _wire.receive(sock, _wire.KIND_RESPONSE)
    answer = _wire.Region.attach(new_fd)
    response = dm_env_rpc_pb2.EnvironmentResponse.FromString(bytes(answer.view[:length]))
    assert response.WhichOneof("payload") == "error"
    assert "malformed step request" in response.error.message
    answer.release()
    region.release()
    sock.shutdown(socket.SHUT_RDWR)
  if lie != "garbage request":
    sock.settimeout(10)
    assert sock.recv(64) == b"", "the server kept a client that broke the protocol"
  sock.close()
  # The good client never noticed.
  for _ in range(3):
    np.testing.assert_array_equal(env.step({"action": 1}).observation["obs_0"],
                                  large_observation.pattern("float32", (16,)))
  good.close()
  bad.close()
  assert waiting.wait_until(lambda: servicer.channel_count == 0)


# Faults across processes.

_CLIENT = """
import sys, numpy as np
from dm_env_rpc_fast.v1 import connection, dm_env_adaptor
conn = connection.create_secure_channel_and_connect(sys.argv[1], transport="shm")
env, _ = dm_env_adaptor.create_and_join_world(conn, {"shape": [4096], "episode_length": 0}, {})
env.reset()
print("stepping", flush=True)
while True:
  env.step({"action": 1})
"""


def test_a_client_killed_mid_step_frees_its_channel(start_server, backend):
  """Killed while the server is inside env.step: the server notices and serves others."""
  class Slow(large_observation.LargeObservation):
    def step(self, action):
      time.sleep(0.05)
      return super().step(action)

  running = start_server(lambda **kw: Slow(**kw))
  servicer = running.servicer
  memfds_before = len(_memfds())
  child = subprocess.Popen([sys.executable, "-c", _CLIENT, running.address],
                           stdout=subprocess.PIPE, env=server_helpers.subprocess_env(backend))
  try:
    assert child.stdout.readline().strip() == b"stepping"
    assert waiting.wait_until(lambda: servicer.channel_count == 1)
    time.sleep(0.2)
    child.kill()
    child.wait(10)
  finally:
    if child.poll() is None:
      child.kill()
    child.stdout.close()
  assert waiting.wait_until(lambda: servicer.channel_count == 0 and servicer.world_names == [])
  assert waiting.wait_until(lambda: len(_memfds()) <= memfds_before), _memfds()
  conn, env = _adaptor(running.address)
  env.reset()
  assert conn.transport == "shm"
  conn.close()


def test_a_killed_server_fails_the_next_step_promptly(tmp_path, backend):
  port_file = tmp_path / "port"
  child = subprocess.Popen([sys.executable, "-m", "dm_env_rpc_fast", "serve", LARGE,
                            "--port-file", str(port_file)], env=server_helpers.subprocess_env(backend),
                           stderr=subprocess.DEVNULL)
  try:
    assert waiting.wait_until(port_file.exists, 60)
    conn, env = _adaptor(f"127.0.0.1:{port_file.read_text()}")
    env.reset()
    assert conn.transport == "shm"
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    outcome = []

    def step():
      try:
        env.step({"action": 1})
        outcome.append("stepped")
      except Exception as e:  # pylint: disable=broad-except
        outcome.append(e)

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive(), "the step hung after the server died"
    assert isinstance(outcome[0], shm_client.ChannelError), outcome
    assert "closed" in str(outcome[0])
    conn.close()
  finally:
    if child.poll() is None:
      child.kill()
      child.wait()


def test_a_connection_used_after_fork_says_so(large_server):
  conn, env = _adaptor(large_server.address)
  env.reset()
  read, write = os.pipe()
  pid = os.fork()
  if pid == 0:
    try:
      env.step({"action": 1})
      os.write(write, b"stepped")
    except shm_client.ChannelError as e:
      os.write(write, str(e).encode()[:200])
    except BaseException as e:  # pylint: disable=broad-except
      os.write(write, repr(e).encode()[:200])
    finally:
      os._exit(0)
  os.close(write)
  os.waitpid(pid, 0)
  said = os.read(read, 300).decode()
  os.close(read)
  assert "after fork()" in said, said
  env.step({"action": 1})  # the parent's channel is untouched
  conn.close()


@pytest.mark.parametrize("transport", ["grpc", "shm"])
def test_cycles_leave_nothing_behind(large_server, transport):
  """Connect, step, close, many times: fds, memfds and channels come back to where they were."""
  servicer = large_server.servicer
  shm_before = sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []
  conn, env = _adaptor(large_server.address, shape=(100_000,))  # warm up gRPC's own fds
  env.reset()
  conn.close()
  assert waiting.wait_until(lambda: servicer.channel_count == 0)
  fds_before, memfds_before = _fds(), len(_memfds())
  described_before = _described(fds_before)
  # Without the garbage collector: what a closed connection holds must go when
  # it is closed, not when a collection happens to find a reference cycle.
  gc.disable()
  try:
    for _ in range(60):
      conn, env = _adaptor(large_server.address, transport, shape=(100_000,))
      env.reset()
      env.step({"action": 1})
      assert conn.transport == transport
      conn.close()
      del conn, env
    assert waiting.wait_until(lambda: servicer.channel_count == 0)
    assert waiting.wait_until(lambda: len(_memfds()) <= memfds_before), _memfds()
    grown = lambda: {fd: name for fd, name in _described(_fds()).items()
                     if described_before.get(fd) != name}
    assert waiting.wait_until(lambda: len(grown()) <= 2), (len(fds_before), grown())
  finally:
    gc.enable()
  if os.path.isdir("/dev/shm"):
    assert sorted(os.listdir("/dev/shm")) == shm_before


_UNCLOSED = """
import sys, numpy as np
from dm_env_rpc_fast.v1 import connection, dm_env_adaptor
conn = connection.create_secure_channel_and_connect(sys.argv[1], transport=sys.argv[2])
env, _ = dm_env_adaptor.create_and_join_world(conn, {"shape": [16], "episode_length": 0}, {})
env.reset()
env.step({"action": 1})
print(conn.transport, flush=True)
"""  # ...and exits without closing anything


@pytest.mark.parametrize("transport", ["grpc", "shm"])
def test_a_program_that_never_closes_its_connection_still_exits(large_server, backend, transport):
  """A connection left open at exit must not hold the interpreter (gRPC's threads are gone)."""
  child = subprocess.run([sys.executable, "-c", _UNCLOSED, large_server.address, transport],
                         env=server_helpers.subprocess_env(backend), capture_output=True,
                         timeout=60)
  assert child.returncode == 0, child.stderr.decode()[-2000:]
  assert child.stdout.decode().strip() == transport
