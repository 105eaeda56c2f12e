"""Serve any `dm_env.Environment` over dm_env_rpc, with the fast codec.

    from dm_env_rpc_fast import server

    with server.serve(make_env, "127.0.0.1:0") as running:
      print("serving on port", running.port)
      running.wait()

or from a shell: `dm-env-rpc-fast serve my_module:make_env --port 50051`.

`make_env(**settings)` is called by each CreateWorld with the request's
settings as Python values and returns a `dm_env.Environment`.  What a client
sees:

- JoinWorld answers with specs read from `action_spec()`,
  `observation_spec()`, `reward_spec()` and `discount_spec()`.  Nested specs are
  flattened with "." between keys (list and tuple positions by index), UIDs
  count from 1 in sorted-key order, bounds of `BoundedArray`s are carried, and
  the reward and discount are the observations named "reward" and "discount".
  A -1 dimension takes any size.  Bounds that bound nothing are left out
  (infinite float bounds; an integer maximum equal to its dtype's, on which
  dm-env-rpc's adaptor overflows): a client reads the dtype's limit instead.
- Step: the first step after JoinWorld, Reset, ResetWorld or a terminated
  episode calls `env.reset()` and ignores its actions; every other step checks
  its actions against the specs (UID, dtype, shape, bounds), calls
  `env.step(action)` with the action nest rebuilt, and answers RUNNING, or
  TERMINATED when the TimeStep is LAST.  An action left out of a step keeps
  the value last sent in this episode (at first, its spec's
  `generate_value()`, empty along -1 dimensions); string actions are always
  numpy str_ arrays.  On a first step the reward is the reward spec's
  `generate_value()` and the discount 1, as dm_env has neither there.
  Observations are checked against their specs (dtype, shape and bounds).
- Errors are answered on the stream as google.rpc.Status, and the stream stays
  open: INVALID_ARGUMENT for bad actions, unknown UIDs, settings or malformed
  bytes, FAILED_PRECONDITION for a step before JoinWorld, NOT_FOUND for an
  unknown world, INTERNAL (with the exception's type and message) when the
  environment raises or breaks its specs; every INTERNAL answer is logged with
  its exception (logger "dm_env_rpc_fast.server").
- JoinWorld: its settings, as Python values, go to the environment's method
  `dm_env_rpc_join_world(**settings)` when it has one (called on every join;
  raising refuses the join, INVALID_ARGUMENT); without it settings are refused.
- Properties: an environment that has a method `dm_env_rpc_properties()`
  returning {key: `Property`} serves dm_env_rpc's properties extension.
  They belong to the joined world: before JoinWorld the root lists none and
  other properties requests are FAILED_PRECONDITION.

Each stream is its own session; the worlds a stream created are destroyed
(their environments closed) when it ends, whether the client left cleanly or
vanished.  `Server.stop()` closes every environment.
"""
import concurrent.futures
import threading
from typing import Optional, Sequence, Tuple

import grpc

from dm_env_rpc_fast.server._properties import Property
from dm_env_rpc_fast.server._servicer import EnvironmentServicer
from dm_env_rpc_fast.server._servicer import MakeEnv
from dm_env_rpc_fast.server._servicer import PROCESS_METHOD
from dm_env_rpc_fast.server._specs import SEPARATOR

__all__ = ["EnvironmentServicer", "PROCESS_METHOD", "Property", "SEPARATOR", "Server", "serve"]

# Observations can be large: no limit on message sizes either way.
_UNLIMITED = (("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))
# gRPC sets SO_REUSEPORT by default, so a second server could bind a port already
# served and silently take some of its connections; a busy port must be an error.
_EXCLUSIVE_PORT = (("grpc.so_reuseport", 0),)


class Server:
  """A running server, from `serve()`.  A context manager: leaving it stops the server.

  Attributes:
    port: the bound port (the one chosen when the address asked for port 0).
    address: "host:port" to give a client.
    servicer: the `EnvironmentServicer`.
  """

  def __init__(self, grpc_server: grpc.Server, servicer: EnvironmentServicer, host: str, port: int):
    self._server = grpc_server
    self.servicer = servicer
    self.port = port
    self.address = f"{host}:{port}"
    self._stopped = threading.Event()
    self._stop_lock = threading.Lock()

  def stop(self, grace: Optional[float] = None) -> None:
    """Stops serving and closes every environment.

    Args:
      grace: seconds that streams in flight may go on; None cancels them now.
    """
    with self._stop_lock:
      if self._stopped.is_set():
        return
      self._server.stop(grace).wait()
      self.servicer.close()
      self._stopped.set()

  def wait(self, timeout: Optional[float] = None) -> bool:
    """Blocks until `stop()` has finished (from another thread); True if it has."""
    return self._stopped.wait(timeout)

  def __enter__(self) -> "Server":
    return self

  def __exit__(self, *exc_info) -> None:
    self.stop()


def _split(address: str) -> Tuple[str, int]:
  host, sep, port = address.rpartition(":")
  if not sep or not port.isdigit():
    raise ValueError(f"address must be 'host:port' (port 0 picks one), not {address!r}")
  return host, int(port)


def serve(make_env: MakeEnv,
          address: str = "127.0.0.1:0",
          *,
          credentials: Optional[grpc.ServerCredentials] = None,
          insecure: bool = False,
          max_streams: int = 64,
          options: Sequence[Tuple[str, object]] = (),
          shared_memory: bool = True) -> Server:
  """Starts a dm_env_rpc server for environments made by `make_env`.

  Args:
    make_env: `make_env(**settings) -> dm_env.Environment`, called by each
      CreateWorld.
    address: "host:port" to listen on; port 0 picks a free port.
    credentials: the server's credentials; None means
      `grpc.local_server_credentials()`, which accepts connections from this
      machine only and is what dm_env_rpc clients use by default.
    insecure: listen without credentials instead (for clients on other
      machines, without TLS).
    max_streams: streams served at once; each holds a thread while it is open,
      and streams beyond this are refused with RESOURCE_EXHAUSTED.
    options: extra gRPC server options.  By default message sizes are
      unlimited and SO_REUSEPORT is off; an option given here for the same
      key replaces that default.
    shared_memory: offer dm_env_rpc_fast clients on this host a shared-memory
      step channel (see `dm_env_rpc_fast.shm`); False keeps every step on gRPC.

  Returns:
    The running `Server`.

  Raises:
    RuntimeError: the address could not be bound.
  """
  if max_streams < 1:
    raise ValueError(f"max_streams must be at least 1, not {max_streams}")
  host, _ = _split(address)
  servicer = EnvironmentServicer(make_env, shared_memory=shared_memory)
  # gRPC keeps the first value of a key given twice, so a default the caller
  # sets again is left out rather than listed before the caller's value.
  given = {key for key, _ in options}
  defaults = [(key, value) for key, value in _UNLIMITED + _EXCLUSIVE_PORT if key not in given]
  grpc_server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(max_workers=max_streams,
                                            thread_name_prefix="dm_env_rpc_fast.server"),
      maximum_concurrent_rpcs=max_streams,
      options=defaults + list(options))
  servicer.add_to_server(grpc_server)
  try:
    if insecure:
      port = grpc_server.add_insecure_port(address)
    else:
      port = grpc_server.add_secure_port(address, credentials or grpc.local_server_credentials())
  except RuntimeError as e:
    raise RuntimeError(f"could not listen on {address}: {e}") from None
  if not port:
    raise RuntimeError(f"could not listen on {address}")
  grpc_server.start()
  return Server(grpc_server, servicer, host, port)
