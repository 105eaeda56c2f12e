"""The client end of the shared-memory step channel.

`offer_request()` is the extension request a `Connection` sends over its gRPC
stream; `attach(offer)` connects to what the server offered and returns a
`ClientChannel`, or raises `ChannelError` when it cannot (another host,
another user, another network namespace, no such socket), in which case the
connection keeps stepping over gRPC.
"""
import logging
import os
import selectors
import socket
import threading
import weakref
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from google.protobuf import any_pb2

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.shm import _wire
from dm_env_rpc_fast.shm import channel_pb2
from dm_env_rpc_fast.shm._wire import ChannelError

# Seconds an attach may take (connect, hello, welcome): a server that takes
# longer is not one we want to step through.
ATTACH_TIMEOUT_S = 2.0


def _decode_in_place() -> bool:
  """Whether the live backend may decode straight from the server's region.

  The pure backend's decoders run numpy over the buffer they are given and
  assume it does not change during the call; the region is the server's to
  write, so on that backend each response is copied out first.  The native
  decoders read each byte once and bound every write by what they allocated
  (see csrc/), so they read the region directly.
  """
  return codec.BACKEND == "native"


def offer_request() -> any_pb2.Any:
  """The extension payload that asks a server for a channel."""
  packed = any_pb2.Any()
  packed.Pack(channel_pb2.OpenChannelRequest(version=_wire.VERSION))
  return packed


def parse_offer(extension: any_pb2.Any) -> channel_pb2.OpenChannelResponse:
  """The server's OpenChannelResponse, checked; ChannelError if unusable here."""
  offer = channel_pb2.OpenChannelResponse()
  if not extension.Unpack(offer):
    raise ChannelError(f"the server answered with {extension.type_url!r}")
  if offer.version != _wire.VERSION:
    raise ChannelError(f"the server speaks channel version {offer.version}, we {_wire.VERSION}")
  if offer.host_id != _wire.host_id() or not offer.host_id:
    raise ChannelError("the server is on another host")
  if offer.uid != os.getuid():
    raise ChannelError("the server runs as another user")
  if len(offer.token) != _wire.TOKEN_BYTES or not offer.socket_address:
    raise ChannelError("the server's offer is malformed")
  return offer


def attach(offer: channel_pb2.OpenChannelResponse,
           spin_ns: Optional[int] = None) -> "ClientChannel":
  """Connects to the server's channel socket and presents the token.

  `spin_ns` is the polling window (`_wire.Waiter`); None reads
  DM_ENV_RPC_FAST_SPIN_US.
  """
  if not _wire.SUPPORTED:
    raise ChannelError("this platform has no shared-memory channel")
  sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
  try:
    sock.settimeout(ATTACH_TIMEOUT_S)
    try:
      sock.connect(offer.socket_address)
      if _wire.peer_uid(sock) != os.getuid():
        raise ChannelError("the channel socket belongs to another user")
      _wire.send(sock, _wire.KIND_HELLO, 0, payload=offer.token)
      _wire.receive(sock, _wire.KIND_WELCOME)
    except OSError as e:  # socket.timeout included
      raise ChannelError(f"could not attach: {e}") from None
    sock.settimeout(None)
    return ClientChannel(sock, spin_ns)
  except BaseException:
    sock.close()
    raise


class ClientChannel:
  """Step messages to and from the server through shared memory.

  One step at a time: `start(request bytes)`, then `finish()`.  Not
  thread-safe (neither is the `Connection` that owns it) and not to be used
  across `fork()`: a child process gets `ChannelError` and must connect anew.
  """

  def __init__(self, sock: socket.socket, spin_ns: Optional[int] = None):
    self._sock = sock
    self._waiter = _wire.Waiter.if_polling(sock, spin_ns)
    _CHANNELS.add(self)
    self._request: Optional[_wire.Region] = None
    self._response: Optional[_wire.Region] = None
    self._closed = False
    self._forked = False  # set in a child process by the fork hook below

  def _fail(self, reason: str) -> ChannelError:
    self.close()
    return ChannelError(f"the shared-memory step channel failed: {reason}")

  def _check_usable(self) -> None:
    if self._closed:
      raise ChannelError("the shared-memory step channel is closed")
    if self._forked:
      raise ChannelError("a shared-memory step channel cannot be used after fork(): "
                         "connect again in the child process")

  def start(self, data: bytes, on_ready: Optional[Callable[[], None]] = None) -> None:
    """Writes a serialised step request into our region and tells the server."""
    self._check_usable()
    fd = None
    region = self._request
    if region is None or len(data) > region.size:
      region, fd = _wire.Region.create(
          _wire.region_size_for(len(data), region.size if region else 0))
      if self._request is not None:
        self._request.release()
      self._request = region
    try:
      region.view[:len(data)] = data
      if on_ready is not None:
        _POLLER.watch(self._sock, on_ready)
      _wire.send(self._sock, _wire.KIND_REQUEST, len(data), fd)
    except (BrokenPipeError, ConnectionResetError):
      raise self._fail("the server closed the channel (has it stopped?)") from None
    except OSError as e:
      raise self._fail(f"sending the request: {e}") from None
    finally:
      if fd is not None:
        os.close(fd)

  def finish(self, zero_copy: bool, out=None) -> Tuple[int, Dict[int, object]]:
    """Waits for the server's answer and decodes it (`codec.decode_step_response`).

    With `zero_copy`, fixed-width observations are read-only views of the
    server's region: valid until the next step on this connection, which
    overwrites them.
    """
    view = self.finish_raw()
    in_place = _decode_in_place()
    buf = view if in_place else bytes(view)
    if out is not None:
      state, observations = codec.decode_step_response(buf, zero_copy=zero_copy, out=out)
    else:
      state, observations = codec.decode_step_response(buf, zero_copy=zero_copy)
    if not zero_copy and in_place:
      # int8/uint8 arrays are views of the message bytes even without
      # zero_copy (dm-env-rpc's rule); over gRPC those bytes are the caller's
      # to keep, here they are the region the next step overwrites.
      for uid, value in observations.items():
        if type(value) is np.ndarray and value.base is not None and (
            out is None or value is not out.get(uid)):
          copy = value.copy()
          copy.flags.writeable = False
          observations[uid] = copy
    return state, observations

  def finish_raw(self) -> memoryview:
    """Waits for the server's answer: a read-only view of its bytes in the
    server's region, valid until the next `start` (the benchmark's raw client)."""
    self._check_usable()
    try:
      length, fd, _ = _wire.receive(self._sock, _wire.KIND_RESPONSE, waiter=self._waiter)
      if fd is not None:
        region = _wire.Region.attach(fd)
        if self._response is not None:
          self._response.release()
        self._response = region
    except ConnectionResetError:
      raise self._fail("the server closed the channel (has it stopped?)") from None
    except (OSError, ChannelError) as e:
      raise self._fail(str(e)) from None
    region = self._response
    if region is None:
      raise self._fail("the server answered before sending its region")
    if length > region.size:
      raise self._fail(f"the server says its answer has {length} bytes; "
                       f"its region has {region.size}")
    return region.view[:length]

  def close(self) -> None:
    """Closes the socket and drops both mappings.  Idempotent."""
    if self._closed:
      return
    self._closed = True
    _POLLER.forget(self._sock)
    try:
      self._sock.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass
    self._sock.close()
    for region in (self._request, self._response):
      if region is not None:
        region.release()
    self._request = self._response = None


class _Poller:
  """One thread that runs `on_ready` callbacks when channel sockets turn readable.

  It serves every channel of the process (the batched client waits on many
  connections at once with it), starts on first use, and is started again in
  a child process after fork.
  """

  def __init__(self):
    self._lock = threading.Lock()
    self._selector: Optional[selectors.BaseSelector] = None
    self._wake_r = self._wake_w = -1
    self._pending: Dict[int, Tuple[socket.socket, Callable[[], None]]] = {}

  def _start(self) -> None:
    self._selector = selectors.DefaultSelector()
    self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    self._selector.register(self._wake_r, selectors.EVENT_READ)
    threading.Thread(target=self._run, args=(self._selector, self._wake_r),
                     name="dm_env_rpc_fast-shm-poller", daemon=True).start()

  def watch(self, sock: socket.socket, callback: Callable[[], None]) -> None:
    with self._lock:
      if self._selector is None:
        self._start()
      self._pending[sock.fileno()] = (sock, callback)
      os.write(self._wake_w, b"\0")

  def forget(self, sock: socket.socket) -> None:
    with self._lock:
      if self._pending.pop(sock.fileno(), None) is not None:
        os.write(self._wake_w, b"\0")

  def _run(self, selector, wake_r) -> None:
    registered: Dict[int, socket.socket] = {}
    while True:
      ready = []
      with self._lock:
        if selector is not self._selector:
          return  # forked away from us
        wanted = dict(self._pending)
      for fd in list(registered):
        if fd not in wanted or wanted[fd][0] is not registered[fd]:
          selector.unregister(fd)
          del registered[fd]
      for fd, (sock, _) in wanted.items():
        if fd not in registered:
          selector.register(sock, selectors.EVENT_READ)
          registered[fd] = sock
      for key, _ in selector.select():
        if key.fd == wake_r:
          try:
            while os.read(wake_r, 4096):
              pass
          except BlockingIOError:
            pass
          continue
        with self._lock:
          entry = self._pending.get(key.fd)
          if entry is not None and entry[0] is registered.get(key.fd):
            del self._pending[key.fd]
            ready.append(entry[1])
      for callback in ready:
        try:
          callback()
        except Exception:  # pylint: disable=broad-except
          logging.getLogger(__name__).exception("a step's on_ready callback raised")

  def after_fork(self) -> None:
    self._lock = threading.Lock()
    self._selector = None
    self._pending = {}


_POLLER = _Poller()
_CHANNELS: "weakref.WeakSet[ClientChannel]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
  _POLLER.after_fork()
  for channel in list(_CHANNELS):
    channel._forked = True  # pylint: disable=protected-access


os.register_at_fork(after_in_child=_after_fork_in_child)
