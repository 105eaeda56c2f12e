"""The server end of the shared-memory step channel.

A `ChannelHost` belongs to one servicer.  On the first OpenChannelRequest it
starts listening on a Unix SOCK_SEQPACKET socket in Linux's abstract namespace
(a random name; no file) and one thread that accepts.  Each offer carries a
fresh single-use token bound to the stream that asked; an attach must come
from a process of the server's own user (the kernel's peer credentials) and
present that token, else it is dropped.  Each attached channel gets a thread
that reads a request from the client's region, steps through the session of
its stream, and encodes the answer straight into the server's region.

When the stream ends, its channel is shut down and its thread exits; when a
client dies, its socket closes and the same happens.  Nothing outlives them:
the regions are anonymous memfds, unmapped when both ends have let go.
"""
import hmac
import logging
import os
import secrets
import socket
import threading
from typing import Callable, Dict, Optional, Set, Tuple, Union

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.shm import _wire
from dm_env_rpc_fast.shm import channel_pb2
from dm_env_rpc_fast.shm._wire import ChannelError

_log = logging.getLogger("dm_env_rpc_fast.server")

# Seconds an accepted connection has to present its token.
HELLO_TIMEOUT_S = 5.0

# What a session does with one step request's bytes: the response bytes (an
# error, say), or (state, observations) for the channel to encode in place.
StepHandler = Callable[[bytes], Union[bytes, Tuple[int, Dict[int, object]]]]


class ChannelHost:
  """Offers and serves shared-memory step channels for one servicer's streams."""

  def __init__(self):
    self._lock = threading.Lock()
    self._spin_ns = _wire.spin_setting()  # DM_ENV_RPC_FAST_SPIN_US, checked up front
    self._listener: Optional[socket.socket] = None
    self._address = b""
    self._offers: Dict[bytes, Tuple[object, StepHandler]] = {}  # token -> (owner, handler)
    self._channels: Dict[object, Set["_Channel"]] = {}         # owner -> its channels
    self._threads: Set[threading.Thread] = set()
    self._closed = False

  def offer(self, owner: object, handler: StepHandler) -> channel_pb2.OpenChannelResponse:
    """A fresh offer for `owner` (a stream's session); `handler` steps it.

    Raises:
      ChannelError: no channel can be offered (platform, or the host closed).
    """
    if not _wire.SUPPORTED:
      raise ChannelError("this platform has no shared-memory channel")
    token = secrets.token_bytes(_wire.TOKEN_BYTES)
    self.forget(owner)  # one channel a stream: a new offer replaces the old
    with self._lock:
      if self._closed:
        raise ChannelError("the server is shutting down")
      if self._listener is None:
        self._listen()
      self._offers[token] = (owner, handler)
      address = self._address
    return channel_pb2.OpenChannelResponse(
        version=_wire.VERSION, socket_address=address, token=token,
        host_id=_wire.host_id(), uid=os.getuid())

  def _listen(self) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
      address = b"\0dm_env_rpc_fast/" + secrets.token_hex(16).encode()
      sock.bind(address)
      sock.listen(64)
    except BaseException:
      sock.close()
      raise
    self._listener, self._address = sock, address
    self._spawn(self._accept_loop, sock, "accept")

  def _spawn(self, target, arg, what: str) -> None:
    thread = threading.Thread(target=self._run, args=(target, arg),
                              name=f"dm_env_rpc_fast-shm-{what}", daemon=True)
    self._threads.add(thread)
    thread.start()

  def _run(self, target, arg) -> None:
    try:
      target(arg)
    finally:
      with self._lock:
        self._threads.discard(threading.current_thread())

  def _accept_loop(self, listener: socket.socket) -> None:
    while True:
      try:
        sock, _ = listener.accept()
      except OSError:
        return  # the listener was shut down
      with self._lock:
        if self._closed:
          sock.close()
          return
        self._spawn(self._serve, sock, "channel")

  def _attach(self, sock: socket.socket) -> Optional["_Channel"]:
    """Checks the peer and its token; the channel, or None to drop it."""
    sock.settimeout(HELLO_TIMEOUT_S)
    if _wire.peer_uid(sock) != os.getuid():
      _log.warning("shared-memory channel: refused an attach from another user")
      return None
    _, fd, token = _wire.receive(sock, _wire.KIND_HELLO, _wire.TOKEN_BYTES)
    if fd is not None:
      os.close(fd)
      return None
    with self._lock:
      match = next((t for t in self._offers if hmac.compare_digest(t, token)), None)
      if match is None or self._closed:
        _log.warning("shared-memory channel: refused an attach with an unknown token")
        return None
      owner, handler = self._offers.pop(match)
      channel = _Channel(sock, handler, self._spin_ns)
      self._channels.setdefault(owner, set()).add(channel)
    _wire.send(sock, _wire.KIND_WELCOME, 0)
    sock.settimeout(None)
    return channel

  def _serve(self, sock: socket.socket) -> None:
    channel = None
    try:
      try:
        channel = self._attach(sock)
      except (OSError, ChannelError) as e:
        _log.info("shared-memory channel: attach failed: %s", e)
      if channel is not None:
        channel.serve()
    finally:
      if channel is not None:
        with self._lock:
          for channels in self._channels.values():
            channels.discard(channel)
        channel.close()
      sock.close()

  def forget(self, owner: object) -> None:
    """`owner`'s stream ended: withdraw its offers and shut its channels."""
    with self._lock:
      for token in [t for t, (o, _) in self._offers.items() if o is owner]:
        del self._offers[token]
      channels = self._channels.pop(owner, set())
    for channel in channels:
      channel.shutdown()

  def close(self, timeout: float = 2.0) -> None:
    """Stops listening, shuts every channel and waits for their threads."""
    with self._lock:
      self._closed = True
      listener, self._listener = self._listener, None
      self._offers.clear()
      channels = [c for cs in self._channels.values() for c in cs]
      self._channels.clear()
      threads = list(self._threads)
    if listener is not None:
      try:
        listener.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass
      listener.close()
    for channel in channels:
      channel.shutdown()
    for thread in threads:
      if thread is not threading.current_thread():
        thread.join(timeout)

  @property
  def channel_count(self) -> int:
    """How many channels are attached now."""
    with self._lock:
      return sum(len(cs) for cs in self._channels.values())


# How many channels this process is serving.  A channel polls for requests
# (`_wire.Waiter`) only while it is the only one: several channel threads
# polling at once would contend for the GIL and the CPUs.
_serving = [0]
_serving_lock = threading.Lock()


def _serving_alone() -> bool:
  return _serving[0] <= 1


class _Channel:
  """One attached client: its socket, its region and ours."""

  def __init__(self, sock: socket.socket, handler: StepHandler, spin_ns: int):
    self._sock = sock
    self._handler = handler
    self._waiter = _wire.Waiter.if_polling(sock, spin_ns, may_spin=_serving_alone)
    self._request: Optional[_wire.Region] = None
    self._response: Optional[_wire.Region] = None

  def serve(self) -> None:
    """Answers step requests until the client goes or the channel is shut."""
    with _serving_lock:
      _serving[0] += 1
    try:
      self._serve()
    finally:
      with _serving_lock:
        _serving[0] -= 1

  def _serve(self) -> None:
    while True:
      try:
        length, fd, _ = _wire.receive(self._sock, _wire.KIND_REQUEST, waiter=self._waiter)
      except (OSError, ChannelError) as e:
        if not isinstance(e, ChannelError) or "closed" not in str(e):
          _log.info("shared-memory channel ended: %s", e)
        return
      try:
        if fd is not None:
          region = _wire.Region.attach(fd)
          if self._request is not None:
            self._request.release()
          self._request = region
        if self._request is None or length > self._request.size:
          raise ChannelError("the client's request does not fit its region")
      except (OSError, ChannelError) as e:
        _log.warning("shared-memory channel: dropping a client that broke the protocol: %s", e)
        return
      # A private copy: the client can write its region at any time.
      data = bytes(self._request.view[:length])
      try:
        self._answer(self._handler(data))
      except OSError as e:
        _log.info("shared-memory channel: the client went away mid-step: %s", e)
        return
      except Exception:  # pylint: disable=broad-except
        # A bug of ours: the client's next step sees the channel close.
        _log.exception("shared-memory channel: answering a step failed; closing the channel")
        return

  def _answer(self, result) -> None:
    """Writes a response into our region (a larger new one if needed) and says so."""
    region = self._response
    size = region.size if region is not None else 0
    if isinstance(result, bytes):  # an error response
      length = len(result)
      if region is not None and length <= size:
        region.view[:length] = result
    else:  # observations, encoded straight into the region
      length = codec.encode_step_response_into(
          region.view if region is not None else bytearray(), *result)
    fd = None
    if region is None or length > size:
      region, fd = _wire.Region.create(_wire.region_size_for(length, size))
      if self._response is not None:
        self._response.release()
      self._response = region
      if isinstance(result, bytes):
        region.view[:length] = result
      elif codec.encode_step_response_into(region.view, *result) != length:
        raise RuntimeError("a step response changed size between two encodings")
    try:
      _wire.send(self._sock, _wire.KIND_RESPONSE, length, fd)
    finally:
      if fd is not None:
        os.close(fd)

  def shutdown(self) -> None:
    """Wakes the serving thread so it ends (from any thread)."""
    try:
      self._sock.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass

  def close(self) -> None:
    for region in (self._request, self._response):
      if region is not None:
        region.release()
    self._request = self._response = None
