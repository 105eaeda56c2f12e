"""The pieces both ends of the shared-memory step channel share.

A channel is one AF_UNIX SOCK_SEQPACKET connection plus two memory regions,
one per direction.  Each side writes only into the region it created and
sends the other side a 16-byte header per message ("my region holds a message
of N bytes").  A region is an anonymous memfd, sealed against shrinking and
growing, and handed over as a file descriptor in the header's packet
(SCM_RIGHTS) the first time, and again whenever the writer needs a larger one:
there is no file anywhere, so nothing can be left behind in /dev/shm or on disk.

Everything read from the socket or from a peer's region is untrusted: headers
are checked field by field, a region must carry the seals that make it safe to
map (a peer that could shrink it would turn our reads into SIGBUS), lengths are
checked against the region, and the message bytes go to the same
bounds-checked decoders as bytes from the network.
"""
import array
import fcntl
import mmap
import os
import socket
import stat
import struct
import sys
import time
from typing import Callable, List, Optional, Tuple

# The version of the channel protocol (OpenChannelRequest.version).
VERSION = 1

# Whether this platform has what the channel needs: memfds with seals, and
# SOCK_SEQPACKET Unix sockets with an abstract namespace (Linux).
SUPPORTED = (sys.platform.startswith("linux") and hasattr(os, "memfd_create")
             and hasattr(fcntl, "F_ADD_SEALS") and hasattr(socket, "SOCK_SEQPACKET")
             and hasattr(socket, "SO_PEERCRED"))

# Header: kind (u32), flags (u32), message length in the sender's region (u64).
HEADER = struct.Struct("<IIQ")
KIND_HELLO = 0x4F4C4548     # client -> server: the token follows the header
KIND_WELCOME = 0x434C4557   # server -> client: the attach was accepted
KIND_REQUEST = 0x51455253   # client -> server: a step request in the client's region
KIND_RESPONSE = 0x50534552  # server -> client: a step response in the server's region
FLAG_NEW_REGION = 1         # a region's file descriptor comes with this header

TOKEN_BYTES = 32
# The largest region a peer may hand us.  protobuf refuses messages of 2 GiB
# and more, so nothing legitimate needs more than that.
MAX_REGION_BYTES = 1 << 31
_INITIAL_REGION_BYTES = 1 << 16
_REQUIRED_SEALS = (getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0)
                   | getattr(fcntl, "F_SEAL_SEAL", 0))
_PACKET_BYTES = HEADER.size + TOKEN_BYTES
_ANCILLARY_BYTES = socket.CMSG_SPACE(array.array("i").itemsize) if SUPPORTED else 0
# Plain ints: the socket module's flags are enums, whose operators cost
# microseconds on a path that takes tens of them.
_TRUNCATED = int(socket.MSG_TRUNC) | int(socket.MSG_CTRUNC)
_SOL_SOCKET, _SCM_RIGHTS = int(socket.SOL_SOCKET), int(getattr(socket, "SCM_RIGHTS", 1))


class ChannelError(ConnectionError):
  """The shared-memory channel failed: the peer went away or broke the protocol."""


def host_id() -> str:
  """An id of this host's running kernel: equal on both ends only on one host."""
  try:
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
      return f.read().strip()
  except OSError:
    return ""


def peer_credentials(sock: socket.socket) -> Tuple[int, int]:
  """(pid, uid) of the process at the other end of a connected Unix socket."""
  creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
  pid, uid, _ = struct.unpack("3i", creds)
  return pid, uid


def peer_uid(sock: socket.socket) -> int:
  """The user id of the process at the other end of a connected Unix socket."""
  return peer_credentials(sock)[1]


def region_size_for(length: int, current: int = 0) -> int:
  """A region size that holds `length` bytes: powers of two from 64 KiB."""
  size = max(_INITIAL_REGION_BYTES, current)
  while size < length:
    size *= 2
  if size > MAX_REGION_BYTES:
    if length > MAX_REGION_BYTES:
      raise ValueError(f"a step message of {length} bytes is over the channel's limit "
                       f"of {MAX_REGION_BYTES} bytes")
    size = MAX_REGION_BYTES
  return size


class Region:
  """A mapped memfd: ours to write (created here) or a peer's to read."""

  __slots__ = ("view", "size", "_map")

  def __init__(self, fd: int, size: int, writable: bool):
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    self._map = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
    self.view = memoryview(self._map)
    self.size = size

  @classmethod
  def create(cls, size: int) -> Tuple["Region", int]:
    """A new region of `size` bytes, and its fd (to send, then close)."""
    fd = os.memfd_create("dm_env_rpc_fast-step", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
      os.ftruncate(fd, size)
      fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _REQUIRED_SEALS)
      return cls(fd, size, writable=True), fd
    except BaseException:
      os.close(fd)
      raise

  @classmethod
  def attach(cls, fd: int) -> "Region":
    """Maps a peer's region read-only.  Takes ownership of `fd` (closes it)."""
    try:
      st = os.fstat(fd)
      if not stat.S_ISREG(st.st_mode):
        raise ChannelError("the peer's region is not a memory file")
      try:
        seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
      except OSError:
        seals = 0
      if seals & _REQUIRED_SEALS != _REQUIRED_SEALS:
        raise ChannelError("the peer's region is not sealed against resizing")
      if not 0 < st.st_size <= MAX_REGION_BYTES:
        raise ChannelError(f"the peer's region has {st.st_size} bytes "
                           f"(allowed: 1 to {MAX_REGION_BYTES})")
      return cls(fd, st.st_size, writable=False)
    finally:
      os.close(fd)

  def release(self) -> None:
    """Drops the mapping; arrays still viewing it keep it alive until they go."""
    self.view.release()
    try:
      self._map.close()
    except BufferError:
      pass  # views of it are still alive (zero_copy observations): they unmap it when freed


def send(sock: socket.socket, kind: int, length: int, fd: Optional[int] = None,
         payload: bytes = b"") -> None:
  """Sends one header (and payload), with `fd` attached when given."""
  packet = HEADER.pack(kind, FLAG_NEW_REGION if fd is not None else 0, length)
  if payload:
    packet += payload
  if fd is None:
    sock.send(packet)  # a SOCK_SEQPACKET packet goes whole or not at all
  else:
    sock.sendmsg([packet], [(_SOL_SOCKET, _SCM_RIGHTS, array.array("i", [fd]))])


def receive(sock: socket.socket, kind: int, payload_bytes: int = 0,
            waiter: Optional["Waiter"] = None) -> Tuple[int, Optional[int], bytes]:
  """Receives one header of `kind`: (length, attached fd or None, payload).

  With a `waiter`, the wait may spin briefly before it blocks (see `Waiter`).

  Raises:
    ChannelError: the peer closed the socket or sent something else.
  """
  if waiter is None:
    data, ancillary, msg_flags, _ = sock.recvmsg(_PACKET_BYTES, _ANCILLARY_BYTES)
  else:
    packet = waiter.poll() if waiter.spinning else None
    if packet is None:
      packet = sock.recvmsg(_PACKET_BYTES, _ANCILLARY_BYTES)
    data, ancillary, msg_flags, _ = packet
    waiter.tick()
  if not ancillary and not msg_flags and not payload_bytes and len(data) == HEADER.size:
    # Every step's packet: a bare header, no descriptor.  The same checks as
    # below, in the fewest operations (this runs twice a step).
    got_kind, flags, length = HEADER.unpack(data)
    if got_kind == kind and not flags:
      return length, None, b""
  fds = _fds_of(ancillary) if ancillary else []
  try:
    if not data:
      raise ChannelError("the peer closed the channel (has it stopped?)")
    if msg_flags & _TRUNCATED:
      raise ChannelError("the peer sent an oversized packet")
    if len(data) != HEADER.size + payload_bytes:
      raise ChannelError(f"the peer sent a packet of {len(data)} bytes, "
                         f"expected {HEADER.size + payload_bytes}")
    got_kind, flags, length = HEADER.unpack_from(data)
    if got_kind != kind:
      raise ChannelError(f"the peer sent message kind {got_kind:#x}, expected {kind:#x}")
    if flags & ~FLAG_NEW_REGION or bool(flags & FLAG_NEW_REGION) != (len(fds) == 1):
      raise ChannelError("the peer's header flags do not match the descriptors it sent")
    fd = fds.pop() if fds else None
    return length, fd, data[HEADER.size:]
  finally:
    for extra in fds:
      os.close(extra)


def _fds_of(ancillary) -> List[int]:
  fds = array.array("i")
  for level, kind, data in ancillary:
    if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
      fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
  return list(fds)


# How long a channel polls for the peer's packet before it blocks, in
# microseconds (`Waiter`); read when a channel is made.  Off by default.
SPIN_ENV = "DM_ENV_RPC_FAST_SPIN_US"
_MAX_SPIN_US = 1_000_000
_MSG_DONTWAIT = int(getattr(socket, "MSG_DONTWAIT", 0))


def spin_setting() -> int:
  """The polling window DM_ENV_RPC_FAST_SPIN_US asks for, in nanoseconds (0: off)."""
  text = os.environ.get(SPIN_ENV, "").strip()
  try:
    micros = int(text) if text else 0
  except ValueError:
    micros = -1
  if not 0 <= micros <= _MAX_SPIN_US:
    raise ValueError(f"{SPIN_ENV} must be a whole number of microseconds from 0 (off) "
                     f"to {_MAX_SPIN_US}, not {text!r}")
  return micros * 1000


class Waiter:
  """Whether a channel's wait for the peer polls before it blocks, decided by measurement.

  A thread blocked on the socket pays the kernel's wake-up latency when the
  peer's packet arrives, twice a step.  On a virtual machine whose idle vCPUs
  halt (no guest halt polling) that is 40-60 us a wake-up: most of a small
  step's round trip.  Polling the socket for up to a window (yielding the CPU
  between polls) catches the packet without sleeping.  But polling pays only
  where a CPU would otherwise sit idle: on a busy machine the poller takes
  time from the peer it waits for, and with a large observation it can share
  a CPU with the peer's encoding.  So it is off unless asked for
  (DM_ENV_RPC_FAST_SPIN_US), and where asked for the channel measures: every
  `PROBE_EVERY` epochs of `EPOCH` messages it runs one epoch polling and one
  blocking, compares the median time between messages (a whole step, seen
  from this side), and polls until the next probe only if polling was at
  least `1 - MARGIN` faster.  Both ends count the same step messages, so they
  probe together.  A probe costs at most one epoch in the slower mode (about
  1.5% of steps).

  Never polls for a peer in this very process (the peer needs our GIL to
  answer), nor while `may_spin()` says no (a server serving several channels:
  their threads would contend for the GIL and the CPUs).
  """
  EPOCH = 32
  PROBE_EVERY = 64
  MARGIN = 0.9

  __slots__ = ("_sock", "_spin_ns", "_may_spin", "spinning", "_left", "_phase",
               "_last", "_times", "_spin_median")

  def __init__(self, sock: socket.socket, spin_ns: Optional[int] = None,
               may_spin: Optional[Callable[[], bool]] = None):
    self._sock = sock
    self._spin_ns = spin_setting() if spin_ns is None else spin_ns
    if self._spin_ns and peer_credentials(sock)[0] == os.getpid():
      self._spin_ns = 0
    self._may_spin = may_spin
    self.spinning = False
    self._spin_median = 0
    self._last = 0
    self._times: List[int] = []
    # Phases: 0 = settled, counting `_left` messages down to the next probe
    # (-1: never probe); 1 = probing with polling; 2 = probing without.
    self._phase = 0
    self._left = 0 if self._spin_ns else -1

  @classmethod
  def if_polling(cls, sock: socket.socket, spin_ns: Optional[int] = None,
                 may_spin: Optional[Callable[[], bool]] = None) -> Optional["Waiter"]:
    """A Waiter for `sock`, or None where it would never poll (`receive` then
    does no bookkeeping at all: the default costs nothing)."""
    waiter = cls(sock, spin_ns, may_spin)
    return waiter if waiter.window_ns else None

  @property
  def window_ns(self) -> int:
    """The polling window in nanoseconds; 0 when this channel never polls."""
    return self._spin_ns

  def poll(self):
    """Polls for a packet for up to the window: recvmsg's result, or None."""
    sock = self._sock
    deadline = time.perf_counter_ns() + self._spin_ns
    while True:
      try:
        return sock.recvmsg(_PACKET_BYTES, _ANCILLARY_BYTES, _MSG_DONTWAIT)
      except BlockingIOError:
        if time.perf_counter_ns() >= deadline:
          return None
        os.sched_yield()

  def tick(self) -> None:
    """Counts one received message: probes and decides on epoch boundaries."""
    if self._phase == 0:
      if self._left:
        if self._left > 0:
          self._left -= 1
          if self.spinning and self._may_spin is not None and not self._may_spin():
            self.spinning = False
        return
      if self._may_spin is not None and not self._may_spin():
        self._left = self.EPOCH * self.PROBE_EVERY
        return
      self._phase, self.spinning = 1, True
      self._times = []
      self._last = time.perf_counter_ns()
      return
    now = time.perf_counter_ns()
    self._times.append(now - self._last)
    self._last = now
    if len(self._times) < self.EPOCH:
      return
    self._times.sort()
    median = self._times[len(self._times) // 2]
    self._times = []
    if self._phase == 1:
      self._spin_median = median
      self._phase, self.spinning = 2, False
      return
    self._phase = 0
    self.spinning = self._spin_median < median * self.MARGIN
    self._left = self.EPOCH * self.PROBE_EVERY
