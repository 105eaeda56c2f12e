"""Polling before blocking on the shared-memory channel (DM_ENV_RPC_FAST_SPIN_US).

On every platform: the setting (read and checked wherever a connection or a
server is made), the measured choice (`_wire.Waiter`, driven by a fake clock),
and steps that stay on gRPC where the channel does not exist.  Where it does
(Linux): the polling receive itself over a socketpair (a packet, a closed peer,
nothing within the window), and whole steps against a server in another
process with polling on, including a server killed while the client polls.
"""
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest

from dm_env_rpc_fast import server
from dm_env_rpc_fast.examples import large_observation
from dm_env_rpc_fast.shm import _wire
from dm_env_rpc_fast.shm import client as shm_client
from dm_env_rpc_fast.shm import server as shm_server
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_adaptor

from support import server_helpers
from support import waiting

LARGE = "dm_env_rpc_fast.examples.large_observation:make_env"


# The setting.

@pytest.mark.parametrize("text,nanoseconds", [(None, 0), ("", 0), ("0", 0), (" 150 ", 150_000),
                                              ("1000000", 1_000_000_000)])
def test_spin_setting_reads_microseconds(monkeypatch, text, nanoseconds):
  if text is None:
    monkeypatch.delenv(_wire.SPIN_ENV, raising=False)
  else:
    monkeypatch.setenv(_wire.SPIN_ENV, text)
  assert _wire.spin_setting() == nanoseconds


@pytest.mark.parametrize("text", ["fast", "-1", "1000001", "1.5"])
def test_bad_spin_settings_are_refused_where_they_are_read(monkeypatch, text):
  monkeypatch.setenv(_wire.SPIN_ENV, text)
  match = f"DM_ENV_RPC_FAST_SPIN_US must be .* not '{text}'"
  with pytest.raises(ValueError, match=match):
    _wire.spin_setting()
  # A client reads it when the connection is made (not silently at the first step) ...
  channel = grpc.insecure_channel("127.0.0.1:1")
  try:
    with pytest.raises(ValueError, match=match):
      dm_connection.Connection(channel)
    dm_connection.Connection(channel, transport="grpc").close()  # ... unless steps stay on gRPC
  finally:
    channel.close()
  # ... and a server when it starts.
  with pytest.raises(ValueError, match=match):
    shm_server.ChannelHost()


# The choice, on a fake clock.

class _Clock:
  def __init__(self):
    self.now = 0

  def perf_counter_ns(self):
    return self.now


@pytest.fixture
def clock(monkeypatch):
  fake = _Clock()
  monkeypatch.setattr(_wire, "time", fake)
  return fake


def _pair(monkeypatch, *kind):
  """(our end, the peer's end) of a socketpair whose peer passes for another process."""
  mine, theirs = socket.socketpair(*kind)
  monkeypatch.setattr(_wire, "peer_credentials", lambda sock: (os.getpid() + 1, os.getuid()))
  return mine, theirs


@pytest.fixture
def other_process_socket(monkeypatch):
  mine, theirs = _pair(monkeypatch)
  yield mine
  mine.close()
  theirs.close()


@pytest.fixture
def pair(monkeypatch):
  """A channel-like socketpair (SOCK_SEQPACKET) whose peer passes for another process."""
  mine, theirs = _pair(monkeypatch, socket.AF_UNIX, socket.SOCK_SEQPACKET)
  yield mine, theirs
  mine.close()
  theirs.close()


def _epoch(waiter, clock, step_ns):
  """One epoch of messages `step_ns` apart; the polling state during each."""
  seen = set()
  for _ in range(_wire.Waiter.EPOCH):
    seen.add(waiter.spinning)
    clock.now += step_ns
    waiter.tick()
  return seen


def test_polls_after_a_probe_where_polling_is_faster(clock, other_process_socket):
  waiter = _wire.Waiter(other_process_socket, 100_000)
  assert not waiter.spinning
  waiter.tick()  # the first message starts a probe: an epoch polling ...
  assert _epoch(waiter, clock, 20_000) == {True}
  assert _epoch(waiter, clock, 80_000) == {False}  # ... then one blocking
  assert waiter.spinning  # polling was 4x faster
  settled = _wire.Waiter.EPOCH * _wire.Waiter.PROBE_EVERY
  for _ in range(settled):
    assert waiter.spinning
    clock.now += 20_000
    waiter.tick()
  # The next probe (its first message starts it): this time blocking wins.
  waiter.tick()
  assert _epoch(waiter, clock, 90_000) == {True}
  assert _epoch(waiter, clock, 30_000) == {False}
  assert not waiter.spinning


@pytest.mark.parametrize("polling_ns,blocking_ns", [(80_000, 20_000), (95_000, 100_000)])
def test_blocks_unless_polling_is_clearly_faster(clock, other_process_socket, polling_ns,
                                                  blocking_ns):
  waiter = _wire.Waiter(other_process_socket, 100_000)
  waiter.tick()
  _epoch(waiter, clock, polling_ns)
  _epoch(waiter, clock, blocking_ns)
  assert not waiter.spinning


def test_off_means_never(clock, other_process_socket):
  # channels make none (their receives then do no bookkeeping) ...
  assert _wire.Waiter.if_polling(other_process_socket, 0) is None
  assert _wire.Waiter.if_polling(other_process_socket, 1000) is not None
  # ... and one made anyway never polls
  waiter = _wire.Waiter(other_process_socket, 0)
  assert waiter.window_ns == 0
  for _ in range(5):
    assert _epoch(waiter, clock, 10_000) == {False}


def test_may_spin_stops_polling_at_once(clock, other_process_socket):
  allowed = [True]
  waiter = _wire.Waiter(other_process_socket, 100_000, may_spin=lambda: allowed[0])
  waiter.tick()
  _epoch(waiter, clock, 10_000)
  _epoch(waiter, clock, 50_000)
  assert waiter.spinning
  allowed[0] = False  # say, a second client attached to this server
  clock.now += 10_000
  waiter.tick()
  assert not waiter.spinning
  # and no probe starts while it says no
  for _ in range(3 * _wire.Waiter.EPOCH * _wire.Waiter.PROBE_EVERY):
    waiter.tick()
    assert not waiter.spinning


# The polling receive.

@pytest.fixture
def polling_pair(pair):
  """(our end, a Waiter polling on it for up to 2 s, the peer's end)."""
  mine, theirs = pair
  waiter = _wire.Waiter(mine, 2_000_000_000)
  waiter.spinning = True
  return mine, waiter, theirs


def _later(seconds, action):
  thread = threading.Timer(seconds, action)
  thread.start()
  return thread


# Whole steps, against a server in another process, polling on both sides.

@pytest.fixture
def polling_server(tmp_path, backend, monkeypatch):
  """The address of `dm-env-rpc-fast serve` in a child process polling up to 500 us;
  this process polls too."""
  monkeypatch.setenv(_wire.SPIN_ENV, "500")
  port_file = tmp_path / "port"
  child = subprocess.Popen([sys.executable, "-m", "dm_env_rpc_fast", "serve", LARGE,
                            "--port-file", str(port_file)],
                           env=server_helpers.subprocess_env(backend), stderr=subprocess.DEVNULL)
  try:
    assert waiting.wait_until(port_file.exists, 60)
    yield child, f"127.0.0.1:{port_file.read_text()}"
  finally:
    if child.poll() is None:
      child.kill()
    child.wait()


def _adaptor(address):
  conn = dm_connection.create_secure_channel_and_connect(address)
  env, _ = dm_env_adaptor.create_and_join_world(
      conn, {"shape": [64], "dtype": "float32", "episode_length": 0}, {})
  return conn, env


@pytest.fixture
def polling_connection(polling_server):
  """(server process, its environment reset over the channel, the client's Waiter)."""
  child, address = polling_server
  conn, env = _adaptor(address)
  try:
    env.reset()
    assert conn.transport == "shm"
    yield child, env, conn._fast._waiter  # pylint: disable=protected-access
  finally:
    conn.close()

def test_steps_stay_on_grpc_where_there_is_no_channel(monkeypatch):
  """What a user gets off Linux (made so here): polling asked for, steps on gRPC as ever."""
  monkeypatch.setenv(_wire.SPIN_ENV, "500")
  monkeypatch.setattr(_wire, "SUPPORTED", False)
  running = server.serve(large_observation.make_env, address="127.0.0.1:0")
  try:
    conn, env = _adaptor(running.address)
    try:
      env.reset()
      for _ in range(3):
        observation = env.step({"action": 1}).observation["obs_0"]
        assert (observation == large_observation.pattern("float32", (64,))).all()
      assert conn.transport == "grpc"
    finally:
      conn.close()
  finally:
    running.stop()


@pytest.mark.skipif(not _wire.SUPPORTED, reason="no shared-memory channel on this platform: "
                    "test_steps_stay_on_grpc_where_there_is_no_channel covers what users get")
class TestTheChannel:
  """The polling receive and whole steps with polling on, where the channel exists."""

  def test_never_polls_for_a_peer_in_this_process(self, clock):
    """The peer would need our GIL to answer: polling could only delay it."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
      waiter = _wire.Waiter(mine, 100_000)
      assert waiter.window_ns == 0
      assert _epoch(waiter, clock, 10_000) == {False}
    finally:
      mine.close()
      theirs.close()

  def test_a_packet_arriving_while_polling_is_received(self, polling_pair):
    mine, waiter, theirs = polling_pair
    timer = _later(0.05, lambda: _wire.send(theirs, _wire.KIND_RESPONSE, 1234))
    assert _wire.receive(mine, _wire.KIND_RESPONSE, waiter=waiter) == (1234, None, b"")
    timer.join()

  def test_a_region_arriving_while_polling_comes_with_its_descriptor(self, polling_pair):
    mine, waiter, theirs = polling_pair
    region, fd = _wire.Region.create(1 << 16)
    try:
      timer = _later(0.05, lambda: _wire.send(theirs, _wire.KIND_RESPONSE, 10, fd))
      length, got, _ = _wire.receive(mine, _wire.KIND_RESPONSE, waiter=waiter)
      timer.join()
      assert length == 10 and got is not None
      os.close(got)
    finally:
      os.close(fd)
      region.release()

  def test_a_peer_closing_while_polling_ends_the_wait_at_once(self, polling_pair):
    mine, waiter, theirs = polling_pair
    timer = _later(0.05, theirs.close)
    started = time.monotonic()
    with pytest.raises(_wire.ChannelError, match="closed"):
      _wire.receive(mine, _wire.KIND_RESPONSE, waiter=waiter)
    timer.join()
    # well inside the 2 s window: the close is seen by the poll, not after it
    assert time.monotonic() - started < 1.5

  def test_garbage_while_polling_is_refused_as_without(self, polling_pair):
    mine, waiter, theirs = polling_pair
    theirs.send(b"\x00" * 5)
    with pytest.raises(_wire.ChannelError, match="packet of 5 bytes"):
      _wire.receive(mine, _wire.KIND_RESPONSE, waiter=waiter)

  def test_after_the_window_the_wait_blocks_until_the_packet(self, pair):
    mine, theirs = pair
    waiter = _wire.Waiter(mine, 1_000_000)  # 1 ms
    waiter.spinning = True
    assert waiter.poll() is None  # nothing within the window
    timer = _later(0.1, lambda: _wire.send(theirs, _wire.KIND_REQUEST, 7))
    assert _wire.receive(mine, _wire.KIND_REQUEST, waiter=waiter)[0] == 7
    timer.join()

  def test_steps_while_polling_are_the_same_steps(self, polling_connection):
    _, env, waiter = polling_connection
    assert waiter.window_ns == 500_000
    expected = large_observation.pattern("float32", (64,))
    # enough steps for two probes and a settled stretch between them, whichever mode wins
    steps = 2 * (2 * _wire.Waiter.EPOCH) + _wire.Waiter.EPOCH * _wire.Waiter.PROBE_EVERY
    for _ in range(steps):
      timestep = env.step({"action": 1})
      assert (timestep.observation["obs_0"] == expected).all()

  def test_a_server_killed_while_the_client_polls_fails_the_step_promptly(self, polling_connection):
    child, env, waiter = polling_connection
    waiter._spin_ns = 30 * 10**9  # pylint: disable=protected-access
    # Polling from now on, so the death is seen by the poll whatever the probes chose.
    waiter._phase, waiter._left, waiter.spinning = 0, 10**9, True  # pylint: disable=protected-access
    outcome = []

    def step():
      try:
        while True:
          env.step({"action": 1})
      except Exception as e:  # pylint: disable=broad-except
        outcome.append(e)

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    thread.join(10)
    assert not thread.is_alive(), "the step hung after the server died"
    assert isinstance(outcome[0], shm_client.ChannelError), outcome
    assert "closed" in str(outcome[0])

  def test_an_in_process_server_is_never_polled_for(self, monkeypatch):
    monkeypatch.setenv(_wire.SPIN_ENV, "500")
    running = server.serve(large_observation.make_env, address="127.0.0.1:0")
    try:
      conn, env = _adaptor(running.address)
      try:
        env.reset()
        env.step({"action": 1})
        assert conn.transport == "shm"
        assert conn._fast._waiter is None  # pylint: disable=protected-access
      finally:
        conn.close()
    finally:
      running.stop()
