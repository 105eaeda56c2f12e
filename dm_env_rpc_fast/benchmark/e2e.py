"""End to end: steps/s over loopback gRPC, against servers in separate processes.

Two server processes run on 127.0.0.1 (local credentials, no message size
limits):

- *ours*: `python -m dm_env_rpc_fast serve`, the package's server, with its
  built-in large-observation environment (one observation `obs_0` of the
  case's dtype and shape, plus reward and discount), which encodes the
  observation afresh on every step;
- *pre-serialised*: `python -m dm_env_rpc_fast.benchmark.raw_server`, which
  answers every step with bytes it was handed: the very bytes our server sends
  for the same world.

Clients, all in this process, measured in rotation (see `timing`):

  ceiling     raw client -> pre-serialised server: fixed request bytes out,
              response bytes in, nothing encoded or decoded on either side.
              The raw gRPC stream limit for this byte count.
  raw_ours    raw client -> our server: the ceiling plus our server's cost.
  raw_copy    the same, plus one copy of each response's bytes into fresh memory:
              the least any client returning writable arrays must add (the bound
              for `fast`, which copies every observation by dm-env-rpc's contract).
  fast        dm_env_rpc_fast's DmEnvAdaptor.step -> our server (observations
              copied into writable arrays: dm-env-rpc's semantics).
  fast_zc     the same with zero_copy=True (read-only views, no copy).
  upstream    dm-env-rpc's DmEnvAdaptor.step -> our server, when dm_env_rpc is
              importable (both packages share one set of message classes).

Every client above steps over gRPC (ours with transport="grpc").  Over the
same-host shared-memory channel (`dm_env_rpc_fast.shm`), against the same
server:

  shm_raw     fixed request bytes into the channel, the response's bytes
              out (a view of the server's region), nothing decoded.
  shm_fast    dm_env_rpc_fast's DmEnvAdaptor.step, transport="shm".
  shm_fast_zc the same with zero_copy=True.
  pingpong    a 16-byte packet to another Python process and back over a
              Unix SOCK_SEQPACKET socketpair, no memory, no server: the
              floor of any channel that wakes its peer through a socket, as
              this one does twice a step: the gap up to shm_raw is the
              channel's and the server's own work.
  memcpy      one copy of the observation's bytes, no server at all: the
              limit of the channel, which moves them once in the server
              (encode) and, by default, once in the client (decode).

Every block of steps also reads the CPU time of the server it talks to
(before and after), so each cell carries the server's CPU seconds per step;
our server's against the pre-serialised one's, both driven by the raw client
with the same request bytes, is the server cost.
"""

import os
import pathlib
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.benchmark import cases as cases_lib
from dm_env_rpc_fast.benchmark import timing
from dm_env_rpc_fast.benchmark.impls import Call, Unavailable
from dm_env_rpc_fast.examples import large_observation
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

PROCESS_METHOD = "/dm_env_rpc.v1.Environment/Process"
CLIENTS = ("ceiling", "raw_ours", "raw_copy", "fast", "fast_zc", "upstream",
           "shm_raw", "shm_fast", "shm_fast_zc", "pingpong", "memcpy")
GRPC_CLIENTS = CLIENTS[:6]
SHM_CLIENTS = CLIENTS[6:]
CLIENT_TITLES = {
    "ceiling": "raw stream -> pre-serialised server (the ceiling)",
    "raw_ours": "raw stream -> our server",
    "raw_copy": "raw stream -> our server, plus one copy of each response",
    "fast": "dm_env_rpc_fast DmEnvAdaptor",
    "fast_zc": "dm_env_rpc_fast DmEnvAdaptor, zero_copy=True",
    "upstream": "dm-env-rpc DmEnvAdaptor",
    "shm_raw": "raw bytes through the shared-memory channel -> our server",
    "shm_fast": "dm_env_rpc_fast DmEnvAdaptor, shared-memory channel",
    "shm_fast_zc": "dm_env_rpc_fast DmEnvAdaptor, shared-memory channel, zero_copy=True",
    "pingpong": "a 16-byte ping-pong with another process over a Unix socket (no server)",
    "memcpy": "one memcpy of the observation (no server)",
}
SERVER_OF = {"ceiling": "pre-serialised", "raw_ours": "ours", "raw_copy": "ours", "fast": "ours",
             "fast_zc": "ours", "upstream": "ours", "shm_raw": "ours", "shm_fast": "ours",
             "shm_fast_zc": "ours", "pingpong": None, "memcpy": None}
OBSERVATION = "obs_0"

# The case the server-cost and client targets are judged on.
TARGET_CASE = ("float32", (256, 256, 3))
SERVER_COST_TARGET = 1.5   # our server's CPU per step / the pre-serialised server's, at most
CLIENT_TARGET = 0.85       # fast and fast_zc steps/s / the ceiling's, at least
# The shared-memory channel: shm_fast's steps/s against the gRPC ceiling's, at
# least, in every case; and at SHM_BANDWIDTH_CASE, observation bytes per second
# against memcpy's, at least.
SHM_SPEEDUP_TARGET = 5.0
SHM_BANDWIDTH_CASE = ("float64", (1000, 1000))
SHM_BANDWIDTH_TARGETS = {"shm_fast": 0.25, "shm_fast_zc": 0.40}

_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
_START_TIMEOUT_S = 60


def parse_observation(text: str) -> Tuple[str, Tuple[int, ...]]:
  """"float32:84x84x3" or "float64:1000x1000" or "uint8:64" to (dtype, shape)."""
  dtype, sep, shape = text.strip().lower().partition(":")
  if not sep or dtype not in cases_lib.DTYPES or not re.match(r"^\d+(x\d+)*$", shape):
    raise ValueError(f"observation {text!r}: expected DTYPE:SHAPE, e.g. float32:84x84x3, with "
                     f"DTYPE one of {', '.join(cases_lib.DTYPES)}")
  return dtype, tuple(int(d) for d in shape.split("x"))


def observation_label(dtype: str, shape: Sequence[int]) -> str:
  dims = ",".join(str(d) for d in shape)
  return f"{dtype} ({dims}{',' if len(shape) == 1 else ''})"


# ---------------------------------------------------------------------------
# Server processes.

class ServerProcess:
  """A server in a child process, serving on 127.0.0.1 until stopped.

  Attributes:
    name: what it is, for messages.
    address: "127.0.0.1:PORT".
    pid: the child's process id.
    cpu_seconds: a function returning the child's CPU seconds so far, or None
      where this OS offers no way to read it.
  """

  def __init__(self, name: str, module_args: Sequence[str], prime: bool):
    self.name = name
    self._tmp = tempfile.mkdtemp(prefix="dm_env_rpc_fast_bench_")
    port_file = os.path.join(self._tmp, "port")
    self._log = open(os.path.join(self._tmp, "log"), "w+")
    env = dict(os.environ)
    if prime:
      env.update(timing.MALLOC_ENV)
    # The child must import the same dm_env_rpc_fast as this process, installed or not.
    package_parent = str(pathlib.Path(codec.__file__).resolve().parent.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    # cwd: `python -m` puts the working directory first on sys.path, where a
    # source checkout's dm_env_rpc_fast (without its extension) could shadow ours.
    self._proc = subprocess.Popen([sys.executable, "-m", *module_args, "--port-file", port_file],
                                  env=env, cwd=self._tmp, stdout=self._log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    self.pid = self._proc.pid
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not os.path.exists(port_file):
      if self._proc.poll() is not None or time.monotonic() > deadline:
        why = (f"exited with status {self._proc.returncode}" if self._proc.poll() is not None
               else f"did not serve within {_START_TIMEOUT_S} s")
        log = self.log_tail()
        self.stop()
        raise RuntimeError(f"{name} server ({' '.join(module_args)}) {why}"
                           + (f": {log}" if log else ""))
      time.sleep(0.02)
    with open(port_file) as f:
      self.address = f"127.0.0.1:{int(f.read())}"
    self.cpu_seconds = timing.process_cpu_clock(self.pid)

  def log_tail(self, lines: int = 5) -> str:
    self._log.flush()
    self._log.seek(0)
    return " | ".join(self._log.read().strip().splitlines()[-lines:])

  def alive(self) -> bool:
    return self._proc.poll() is None

  def stop(self) -> None:
    if self._proc.poll() is None:
      self._proc.send_signal(signal.SIGTERM)
      try:
        self._proc.wait(5)
      except subprocess.TimeoutExpired:
        self._proc.kill()
        self._proc.wait()
    self._log.close()
    shutil.rmtree(self._tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# Clients.

class RawClient:
  """The same stream as a dm_env_rpc client, carrying bytes: nothing is encoded or decoded.

  Creates and joins a world with `settings`, then sends one fixed step request
  (action 0, every observation requested) and returns the response bytes.
  """

  def __init__(self, address: str, settings: Dict[str, object]):
    self._channel = grpc.secure_channel(address, grpc.local_channel_credentials(), options=_OPTIONS)
    self._requests: "queue.SimpleQueue[Optional[bytes]]" = queue.SimpleQueue()
    self._stream = self._channel.stream_stream(PROCESS_METHOD, None, None)(
        iter(self._requests.get, None))
    try:
      create = dm_env_rpc_pb2.EnvironmentRequest()
      for key, value in settings.items():
        create.create_world.settings[key].CopyFrom(tensor_utils.pack_tensor(value))
      name = self._call(create).create_world.world_name
      join = dm_env_rpc_pb2.EnvironmentRequest()
      join.join_world.world_name = name
      self.specs = self._call(join).join_world.specs
      self.uids = {spec.name: uid for uid, spec in self.specs.observations.items()}
      actions = {uid: np.zeros(spec.shape, np.int32) if spec.shape else np.int32(0)
                 for uid, spec in self.specs.actions.items()}
      self.request = codec.encode_step_request(actions, sorted(self.specs.observations))
    except BaseException:
      self.close()
      raise

  def _call(self, request):
    self._requests.put(request.SerializeToString())
    response = dm_env_rpc_pb2.EnvironmentResponse.FromString(next(self._stream))
    if response.HasField("error"):
      raise RuntimeError(f"{request.WhichOneof('payload')}: {response.error.message}")
    return response

  def step(self) -> bytes:
    self._requests.put(self.request)
    return next(self._stream)

  def step_and_copy(self) -> np.ndarray:
    """step(), then the response's bytes copied into a fresh array (one memcpy)."""
    return np.frombuffer(self.step(), np.uint8).copy()

  def close(self) -> None:
    self._requests.put(None)
    self._channel.close()


class ShmRawClient:
  """The raw client over the shared-memory channel: fixed request bytes in,
  the response's bytes out (a view of the server's region), nothing decoded."""

  def __init__(self, address: str, settings: Dict[str, object]):
    from dm_env_rpc_fast.v1 import connection  # pylint: disable=import-outside-toplevel
    self._connection = connection.create_secure_channel_and_connect(address, transport="shm")
    try:
      name = self._connection.send(dm_env_rpc_pb2.CreateWorldRequest(settings={
          key: tensor_utils.pack_tensor(value) for key, value in settings.items()})).world_name
      specs = self._connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=name)).specs
      actions = {uid: np.zeros(spec.shape, np.int32) if spec.shape else np.int32(0)
                 for uid, spec in specs.actions.items()}
      requested = sorted(specs.observations)
      self.request = codec.encode_step_request(actions, requested)
      self._connection.send_step(actions, requested)  # opens the channel; resets the world
      self._channel = self._connection._fast  # pylint: disable=protected-access
    except BaseException:
      self.close()
      raise

  def step(self) -> memoryview:
    self._channel.start(self.request)
    return self._channel.finish_raw()

  def close(self) -> None:
    self._connection.close()


_ECHO = """
import socket, sys
peer = socket.socket(fileno=int(sys.argv[1]))
while True:
  packet = peer.recv(64)
  if not packet:
    break
  peer.send(packet)
"""


class PingPongClient:
  """A 16-byte packet to an echoing child process and back (SOCK_SEQPACKET)."""

  def __init__(self):
    self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
      self._child = subprocess.Popen([sys.executable, "-c", _ECHO, str(theirs.fileno())],
                                     pass_fds=[theirs.fileno()])
    except BaseException:
      self._sock.close()
      raise
    finally:
      theirs.close()
    self.packet = b"dm_env_rpc_fast!"

  def step(self) -> bytes:
    self._sock.send(self.packet)
    return self._sock.recv(64)

  def close(self) -> None:
    self._sock.close()  # the child sees the end and exits
    try:
      self._child.wait(5)
    except subprocess.TimeoutExpired:
      self._child.kill()
      self._child.wait()


class MemcpyClient:
  """One copy of the observation's bytes into the same preallocated array."""

  def __init__(self, expected: np.ndarray):
    self._source = np.ascontiguousarray(expected)
    self._target = np.empty_like(self._source)

  def step(self) -> np.ndarray:
    np.copyto(self._target, self._source)
    return self._target

  def close(self) -> None:
    pass


class AdaptorClient:
  """A DmEnvAdaptor (ours or dm-env-rpc's) stepping with a constant action."""

  def __init__(self, connection_module, adaptor_module, address: str, settings,
               transport: Optional[str] = None, **adaptor_kwargs):
    kwargs = {"transport": transport} if transport else {}
    self._connection = connection_module.create_secure_channel_and_connect(address, **kwargs)
    try:
      self._env, _ = adaptor_module.create_and_join_world(
          self._connection, settings, {}, **adaptor_kwargs)
      self._action = {"action": np.int32(0)}
      self._env.reset()
    except BaseException:
      self._connection.close()
      raise

  def step(self):
    return self._env.step(self._action)

  def close(self) -> None:
    try:
      self._env.close()
    finally:
      self._connection.close()


def _check_response(expected_tensor: bytes, uid: int) -> Callable[[bytes], None]:
  """Checks a step response with protobuf alone (none of our codec): RUNNING, obs_0's bytes."""
  def check(data):
    response = dm_env_rpc_pb2.EnvironmentResponse.FromString(data)
    if response.HasField("error"):
      raise cases_lib.CheckFailed(f"the server answered an error: {response.error.message}")
    step = response.step
    if step.state != dm_env_rpc_pb2.EnvironmentStateType.RUNNING:
      raise cases_lib.CheckFailed(f"state {step.state}, not RUNNING")
    if uid not in step.observations:
      raise cases_lib.CheckFailed(f"the response has no observation {uid} ({OBSERVATION})")
    cases_lib.check_bytes(step.observations[uid].SerializeToString(), expected_tensor)
  return check


def _check_same(expected: bytes) -> Callable[[bytes], None]:
  def check(data):
    if data != expected:
      raise cases_lib.CheckFailed(f"the pre-serialised server answered {len(data)} bytes that are "
                                  f"not the {len(expected)} it was given")
  return check


def _check_echo(expected: bytes) -> Callable[[bytes], None]:
  def check(data):
    if data != expected:
      raise cases_lib.CheckFailed(f"the echo process sent back {data!r}, not {expected!r}")
  return check


def _check_timestep(expected: np.ndarray) -> Callable[[object], None]:
  def check(timestep):
    if OBSERVATION not in timestep.observation:
      raise cases_lib.CheckFailed(f"the timestep has no {OBSERVATION!r} observation")
    cases_lib.check_array(timestep.observation[OBSERVATION], expected)
  return check


# ---------------------------------------------------------------------------
# Running it.

class E2ECase(timing.StepCells):
  """One observation size: its clients' cells, and the bytes a step moves."""

  def __init__(self, dtype: str, shape: Tuple[int, ...]):
    super().__init__()
    self.dtype, self.shape = dtype, tuple(shape)
    self.label = observation_label(dtype, shape)
    self.response_bytes: Optional[int] = None
    self.request_bytes: Optional[int] = None

  def of_ceiling(self, client: str) -> Optional[float]:
    """steps/s of `client` as a fraction of the ceiling's, paired over passes."""
    return self.speedup(client, "ceiling")

  def server_cpu_per_step(self, client: str) -> Optional[float]:
    cell = self.cells.get(client)
    return cell.probe_median if cell is not None else None

  def server_cost_ratio(self) -> Optional[float]:
    """Our server's CPU per step / the pre-serialised server's, paired over passes."""
    cells = self.ok_cells("raw_ours", "ceiling")
    if not cells or not cells[0].probe_samples or not cells[1].probe_samples:
      return None
    return timing.paired_ratio(cells[0].probe_samples, cells[1].probe_samples)

  def to_json(self):
    return {
        "label": self.label, "dtype": self.dtype, "shape": list(self.shape),
        "observation_bytes": int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize,
        "response_bytes": self.response_bytes, "request_bytes": self.request_bytes,
        "clients": {name: dict(cell.to_json(), server=SERVER_OF[name],
                               steps_per_s=self.steps_per_s(name),
                               of_ceiling=self.of_ceiling(name),
                               server_cpu_s_per_step=self.server_cpu_per_step(name))
                    for name, cell in self.cells.items()},
        "server_cost_ratio": self.server_cost_ratio(),
        "speedup_vs_upstream": {name: self.speedup(name, "upstream") for name in ("fast", "fast_zc")},
        "shm_of_memcpy": {name: self.of_memcpy(name) for name in ("shm_raw", "shm_fast", "shm_fast_zc")},
    }

  def of_memcpy(self, client: str) -> Optional[float]:
    """Observation bytes/s of `client` as a fraction of memcpy's, paired over passes."""
    return self.speedup(client, "memcpy")


def _upstream_modules():
  try:
    from dm_env_rpc.v1 import connection as up_connection  # pylint: disable=import-outside-toplevel
    from dm_env_rpc.v1 import dm_env_adaptor as up_adaptor  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    return None, f"dm-env-rpc not installed ({type(e).__name__}: {e})"
  return (up_connection, up_adaptor), None


class ClientSet:
  """Every client of one observation size, connected and checked once; close() when done.

  Attributes:
    members: client name -> `timing.Member` (its step, check and server-CPU
      probe), or the `Unavailable` that says why it could not be made.
    response_bytes, request_bytes: the sizes of one step's messages (None if
      no step could be made).
  """

  def __init__(self, dtype: str, shape: Sequence[int], ours: "ServerProcess",
               raw: "ServerProcess", *, upstream: bool = True):
    from dm_env_rpc_fast.v1 import connection as fast_connection  # pylint: disable=import-outside-toplevel
    from dm_env_rpc_fast.v1 import dm_env_adaptor as fast_adaptor  # pylint: disable=import-outside-toplevel

    shape = tuple(shape)
    settings = {"dtype": dtype, "shape": np.asarray(shape, np.int32), "episode_length": 0}
    expected = large_observation.pattern(dtype, shape, 0)
    expected_tensor = cases_lib.reference_message(expected).SerializeToString()
    self.members: Dict[str, object] = {}
    self.response_bytes: Optional[int] = None
    self.request_bytes: Optional[int] = None
    self._clients: List[object] = []
    try:
      raw_ours = self._keep(RawClient(ours.address, settings))
      check = _check_response(expected_tensor, raw_ours.uids.get(OBSERVATION))
      raw_ours.step()  # the first step after joining resets the environment
      response = raw_ours.step()
      check(response)
    except Exception as e:  # pylint: disable=broad-except
      for name in CLIENTS:
        self.members[name] = Unavailable("FAILED", "could not get a step from our server: "
                                         f"{type(e).__name__}: {e}")
      return
    self.response_bytes, self.request_bytes = len(response), len(raw_ours.request)
    try:
      ceiling = self._keep(RawClient(raw.address, {
          "response": np.frombuffer(response, np.uint8),
          "specs": np.frombuffer(raw_ours.specs.SerializeToString(), np.uint8)}))
      self.members["ceiling"] = timing.Member(Call(ceiling.step, _check_same(response)),
                                              raw.cpu_seconds)
    except Exception as e:  # pylint: disable=broad-except
      self.members["ceiling"] = Unavailable("FAILED", f"{type(e).__name__}: {e}")
    self.members["raw_ours"] = timing.Member(Call(raw_ours.step, check), ours.cpu_seconds)
    try:
      raw_copy = self._keep(RawClient(ours.address, settings))
      raw_copy.step()  # (the reset step)
      self.members["raw_copy"] = timing.Member(
          Call(raw_copy.step_and_copy, lambda copied: check(copied.tobytes())), ours.cpu_seconds)
    except Exception as e:  # pylint: disable=broad-except
      self.members["raw_copy"] = Unavailable("FAILED", f"{type(e).__name__}: {e}")
    try:
      shm_raw = self._keep(ShmRawClient(ours.address, settings))
      self.members["shm_raw"] = timing.Member(
          Call(shm_raw.step, lambda view: check(bytes(view))), ours.cpu_seconds)
    except Exception as e:  # pylint: disable=broad-except
      self.members["shm_raw"] = Unavailable("FAILED", f"{type(e).__name__}: {e}")
    try:
      pingpong = self._keep(PingPongClient())
      self.members["pingpong"] = timing.Member(
          Call(pingpong.step, _check_echo(pingpong.packet)), None)
    except Exception as e:  # pylint: disable=broad-except
      self.members["pingpong"] = Unavailable("FAILED", f"{type(e).__name__}: {e}")
    memcpy = self._keep(MemcpyClient(expected))
    self.members["memcpy"] = timing.Member(
        Call(memcpy.step, lambda copied: cases_lib.check_array(copied, expected)), None)
    adaptors = {
        "fast": (fast_connection, fast_adaptor, {"transport": "grpc"}),
        "fast_zc": (fast_connection, fast_adaptor, {"transport": "grpc", "zero_copy": True}),
        "shm_fast": (fast_connection, fast_adaptor, {"transport": "shm"}),
        "shm_fast_zc": (fast_connection, fast_adaptor, {"transport": "shm", "zero_copy": True}),
    }
    up_modules, why = _upstream_modules()
    if not upstream:
      self.members["upstream"] = Unavailable("n/a", "left out (--no-upstream)")
    elif up_modules is None:
      self.members["upstream"] = Unavailable("not installed", why)
    else:
      adaptors["upstream"] = (*up_modules, {})
    for name, (connection_module, adaptor_module, kwargs) in adaptors.items():
      try:
        client = self._keep(AdaptorClient(connection_module, adaptor_module, ours.address,
                                          settings, **kwargs))
        self.members[name] = timing.Member(Call(client.step, _check_timestep(expected)),
                                           ours.cpu_seconds)
      except Exception as e:  # pylint: disable=broad-except
        self.members[name] = Unavailable("FAILED", f"{type(e).__name__}: {e}")
    self.members = {name: self.members[name] for name in CLIENTS if name in self.members}

  def _keep(self, client):
    self._clients.append(client)
    return client

  def close(self) -> None:
    for client in reversed(self._clients):
      try:
        client.close()
      except Exception:  # pylint: disable=broad-except
        pass
    self._clients = []


def measure_case(case: E2ECase, ours: ServerProcess, raw: ServerProcess, *, passes: int,
                 pass_seconds: float, warmup_seconds: float, upstream: bool,
                 on_pass: Optional[Callable[[int], None]] = None) -> None:
  """Measures every client of one observation size; fills case.cells (never raises)."""
  clients = ClientSet(case.dtype, case.shape, ours, raw, upstream=upstream)
  try:
    case.response_bytes, case.request_bytes = clients.response_bytes, clients.request_bytes
    cells = timing.measure_group(clients.members, passes=passes, pass_seconds=pass_seconds,
                                 warmup_seconds=warmup_seconds, on_pass=on_pass)
    for server, which in ((ours, "ours"), (raw, "pre-serialised")):
      if not server.alive():
        for name, cell in cells.items():
          if cell.ok and SERVER_OF[name] == which:
            cell.fail(f"the {server.name} server died: {server.log_tail()}")
    case.cells = cells
  finally:
    clients.close()


def start_servers(prime: bool) -> Tuple[ServerProcess, ServerProcess]:
  """Starts our server and the pre-serialised one (raises RuntimeError if one fails)."""
  ours = ServerProcess("our", ["dm_env_rpc_fast", "serve"], prime)
  try:
    raw = ServerProcess("pre-serialised", ["dm_env_rpc_fast.benchmark.raw_server"], prime)
  except BaseException:
    ours.stop()
    raise
  return ours, raw
