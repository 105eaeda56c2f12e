"""The servicer: dm_env_rpc's Process stream, hosting dm_env environments.

Requests and responses cross gRPC as raw bytes.  A step request goes straight
to `codec.decode_step_request` and its response comes from
`codec.encode_step_response`, so observations travel from the environment's
numpy arrays into the response bytes without protobuf messages in between;
every other request is parsed with protobuf.

Worlds belong to the servicer, named "world_1", "world_2", ... in order of
creation, and each is joined by at most one stream at a time.  When a stream
ends (the client closed it, was cancelled or disconnected), it leaves its world
and destroys the worlds it created; one that another stream has joined is
destroyed when that stream leaves it.
"""
import itertools
import logging
import threading
from typing import Callable, Dict, Optional, Set, Tuple, Union

import dm_env
import grpc
import numpy as np
from google.protobuf import message as protobuf_message
from google.rpc import code_pb2
from google.rpc import status_pb2

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.server import _properties
from dm_env_rpc_fast.server import _specs
from dm_env_rpc_fast.shm import channel_pb2 as shm_channel_pb2
from dm_env_rpc_fast.shm import server as shm_server
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

SERVICE = "dm_env_rpc.v1.Environment"
PROCESS_METHOD = f"/{SERVICE}/Process"

_log = logging.getLogger("dm_env_rpc_fast.server")
_STEP_TAG = b"\x1a"  # field 3 (step), length-delimited: how a step request starts
_RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING
_TERMINATED = dm_env_rpc_pb2.EnvironmentStateType.TERMINATED

MakeEnv = Callable[..., dm_env.Environment]


class RequestError(Exception):
  """A request the server refuses: answered on the stream as google.rpc.Status."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def error_response(code: int, message: str) -> bytes:
  return dm_env_rpc_pb2.EnvironmentResponse(
      error=status_pb2.Status(code=code, message=message)).SerializeToString()


def _raised(what: str, e: BaseException) -> RequestError:
  return RequestError(code_pb2.INTERNAL, f"{what} raised {type(e).__name__}: {e}")


def answer_error(e: RequestError) -> bytes:
  """The response bytes of a refused request; an INTERNAL answer is logged with
  the exception behind it (the environment's, or ours), as the client only sees
  its message."""
  if e.code == code_pb2.INTERNAL:
    _log.error("answering INTERNAL: %s", e.message, exc_info=e.__cause__ or e.__context__ or e)
  return error_response(e.code, e.message)


def _python_value(value):
  """A setting as a Python value: numpy scalars become int, float, bool or str."""
  return value.item() if isinstance(value, np.generic) else value


def _python_settings(settings) -> Dict[str, object]:
  try:
    return {key: _python_value(tensor_utils.unpack_tensor(tensor))
            for key, tensor in settings.items()}
  except (ValueError, TypeError) as e:
    raise RequestError(code_pb2.INVALID_ARGUMENT, f"malformed settings: {e}") from None


def _refuse_settings(request_name: str, settings) -> None:
  if settings:
    raise RequestError(code_pb2.INVALID_ARGUMENT,
                       f"{request_name} takes no settings; got {', '.join(sorted(settings))}")


JOIN_METHOD = "dm_env_rpc_join_world"


def _join_env(env, settings: Dict[str, object]) -> None:
  """Hands JoinWorld's settings to `env.dm_env_rpc_join_world(**settings)`, when
  the environment has that method; without it, settings are refused."""
  hook = getattr(env, JOIN_METHOD, None)
  if not callable(hook):
    if settings:
      raise RequestError(
          code_pb2.INVALID_ARGUMENT,
          f"JoinWorld takes no settings; got {', '.join(sorted(settings))} (an environment "
          f"accepts them by defining a method {JOIN_METHOD}(**settings))")
    return
  try:
    hook(**settings)
  except Exception as e:
    _log.info("%s(%s) raised %r", JOIN_METHOD, ", ".join(sorted(settings)), e)
    raise RequestError(code_pb2.INVALID_ARGUMENT,
                       f"the environment's {JOIN_METHOD}() refused settings {sorted(settings)}: "
                       f"{type(e).__name__}: {e}") from None


class _World:
  """One environment, its specs and its episode state.  `lock` guards all of it."""

  def __init__(self, name: str, env, env_specs: _specs.EnvSpecs, creator: "_Session"):
    self.name = name
    self.env = env
    self.specs = env_specs
    self.specs_message = env_specs.message()
    self.observations = {leaf.uid: leaf for leaf in env_specs.observations}
    self.actions = {leaf.uid: leaf for leaf in env_specs.actions}
    self._reward_uid, self._discount_uid = env_specs.reward_uid, env_specs.discount_uid
    self.lock = threading.Lock()
    self.creator: Optional[_Session] = creator
    self.joined_by: Optional[_Session] = None
    self.restart = True  # the next step starts an episode
    self.held: Dict[int, object] = {}
    self.closed = False

  def close(self) -> None:
    """Closes the environment once; call with `lock` held."""
    if self.closed:
      return
    self.closed = True
    try:
      self.env.close()
    except Exception:  # a failing close must not take the server down
      _log.exception("closing the environment of %s failed", self.name)

  def step(self, actions: Dict[int, object], requested) -> Tuple[int, Dict[int, object]]:
    """Runs one step (the caller holds `lock`): (state, {uid: observation})."""
    if self.restart:
      # The first step of an episode: its actions are ignored (dm_env_rpc's rule).
      timestep = self._call("reset", self.env.reset)
      self.restart = False
      self.held = {uid: leaf.default_action() for uid, leaf in self.actions.items()}
    else:
      values = dict(self.held)
      for uid, value in actions.items():
        leaf = self.actions.get(uid)
        if leaf is None:
          raise RequestError(code_pb2.INVALID_ARGUMENT,
                             f"action uid {uid} is not in the specs (actions: {sorted(self.actions)})")
        try:
          values[uid] = leaf.check(value, "action")
        except ValueError as e:
          raise RequestError(code_pb2.INVALID_ARGUMENT, str(e)) from None
      action = self.specs.build_action(values)
      timestep = self._call("step", self.env.step, action)
      self.held = values
    last = timestep.last()
    if last:
      self.restart = True
    return _TERMINATED if last else _RUNNING, self._observe(timestep, requested)

  def _call(self, name, method, *args):
    try:
      return method(*args)
    except Exception as e:  # (logged with the answer: see answer_error)
      raise _raised(f"the environment's {name}()", e) from None

  def _observe(self, timestep, requested):
    result = {}
    observations, reward_uid, discount_uid = self.observations, self._reward_uid, self._discount_uid
    for uid in requested:
      if uid in result:
        continue
      leaf = observations[uid]
      if uid == reward_uid:
        # dm_env has no reward on an episode's first step; the wire needs one.
        value = timestep.reward if timestep.reward is not None else leaf.spec.generate_value()
      elif uid == discount_uid:
        value = timestep.discount if timestep.discount is not None else np.ones(leaf.shape, leaf.dtype)
      else:
        try:
          value = _specs.lookup(timestep.observation, leaf.path)
        except KeyError:
          raise RequestError(code_pb2.INTERNAL,
                             f"the environment's observation has no {leaf.label}") from None
      try:
        result[uid] = _specs.observation_value(leaf, value)
      except ValueError as e:
        raise RequestError(code_pb2.INTERNAL, str(e)) from None
    return result


class _Session:
  """The state of one stream: which world it joined and which it created."""

  def __init__(self, servicer: "EnvironmentServicer"):
    self._servicer = servicer
    self._lock = threading.Lock()
    self._joined: Optional[_World] = None
    self._created: Set[str] = set()
    self._ended = False

  def handle(self, data: bytes) -> bytes:
    """Answers one request's bytes with one response's bytes; never raises."""
    try:
      with self._lock:
        if self._ended:
          raise RequestError(code_pb2.CANCELLED, "the stream has ended")
        if data[:1] == _STEP_TAG:
          return self._step(data)
        return self._dispatch(data)
    except RequestError as e:
      return answer_error(e)
    except Exception as e:  # a bug of ours: say so, keep the stream
      _log.exception("unexpected error answering a request")
      return error_response(code_pb2.INTERNAL, f"server error: {type(e).__name__}: {e}")

  def handle_channel_step(self, data: bytes) -> Union[bytes, Tuple[int, Dict[int, object]]]:
    """A step request from this stream's shared-memory channel; never raises.

    Returns (state, observations) for the channel to encode into its region,
    or the bytes of an error response.
    """
    try:
      with self._lock:
        if self._ended:
          raise RequestError(code_pb2.CANCELLED, "the stream has ended")
        return self._step_result(data, channel=True)
    except RequestError as e:
      return answer_error(e)
    except Exception as e:  # a bug of ours: say so, keep the stream
      _log.exception("unexpected error answering a step on the shared-memory channel")
      return error_response(code_pb2.INTERNAL, f"server error: {type(e).__name__}: {e}")

  def _dispatch(self, data: bytes) -> bytes:
    try:
      request = dm_env_rpc_pb2.EnvironmentRequest.FromString(data)
    except protobuf_message.DecodeError as e:
      raise RequestError(code_pb2.INVALID_ARGUMENT,
                         f"malformed request: not an EnvironmentRequest ({e})") from None
    kind = request.WhichOneof("payload")
    if kind is None:
      raise RequestError(code_pb2.INVALID_ARGUMENT, "request without a payload")
    if kind == "step":
      return self._step(data, parsed=True)
    response = dm_env_rpc_pb2.EnvironmentResponse()
    getattr(self, "_" + kind)(getattr(request, kind), response)
    return response.SerializeToString()

  def _world(self, request_name: str) -> _World:
    if self._joined is None:
      raise RequestError(code_pb2.FAILED_PRECONDITION,
                         f"{request_name} before JoinWorld: join a world first")
    return self._joined

  def _step(self, data: bytes, parsed: bool = False) -> bytes:
    result = self._step_result(data, parsed)
    if isinstance(result, bytes):
      return result
    return codec.encode_step_response(*result)

  def _step_result(self, data: bytes, parsed: bool = False, channel: bool = False):
    """(state, observations) of a step request; bytes if it was another request."""
    world = self._world("Step")
    try:
      actions, requested = codec.decode_step_request(data)
    except (ValueError, TypeError) as e:
      if channel:
        raise RequestError(code_pb2.INVALID_ARGUMENT,
                           f"malformed step request on the shared-memory channel "
                           f"(only step requests travel there): {e}") from None
      if not parsed:  # maybe a valid request whose later field is another payload
        try:
          request = dm_env_rpc_pb2.EnvironmentRequest.FromString(data)
        except protobuf_message.DecodeError:
          request = None
        if request is not None and request.WhichOneof("payload") not in (None, "step"):
          return self._dispatch(data)
      raise RequestError(code_pb2.INVALID_ARGUMENT, f"malformed step request: {e}") from None
    for uid in requested:
      if uid not in world.observations:
        raise RequestError(
            code_pb2.INVALID_ARGUMENT,
            f"requested observation uid {uid} is not in the specs "
            f"(observations: {sorted(world.observations)})")
    with world.lock:
      if world.closed:
        raise RequestError(code_pb2.FAILED_PRECONDITION, f"world {world.name!r} was destroyed")
      return world.step(actions, requested)

  # Everything but Step: (request message, response to fill).

  def _create_world(self, request, response):
    settings = _python_settings(request.settings)
    name = self._servicer._create(settings, self)
    self._created.add(name)
    response.create_world.world_name = name

  def _join_world(self, request, response):
    if self._joined is not None:
      raise RequestError(code_pb2.FAILED_PRECONDITION,
                         f"already joined to world {self._joined.name!r}; leave it first")
    settings = _python_settings(request.settings)
    world = self._servicer._find(request.world_name)
    with world.lock:
      if world.closed:
        raise RequestError(code_pb2.NOT_FOUND, f"no world named {request.world_name!r}")
      if world.joined_by is not None:
        raise RequestError(code_pb2.FAILED_PRECONDITION,
                           f"world {world.name!r} is joined by another stream")
      _join_env(world.env, settings)
      world.joined_by = self
      world.restart = True
    self._joined = world
    response.join_world.specs.CopyFrom(world.specs_message)

  def _leave_world(self, request, response):
    del request
    self._leave()
    response.leave_world.SetInParent()

  def _leave(self):
    world, self._joined = self._joined, None
    if world is None:
      return
    with world.lock:
      world.joined_by = None
      orphan = world.creator is None and not world.closed
    if orphan:  # its creator's stream ended while we were joined
      self._servicer._destroy(world)

  def _reset(self, request, response):
    world = self._world("Reset")
    _refuse_settings("Reset", request.settings)
    with world.lock:
      world.restart = True
    response.reset.specs.CopyFrom(world.specs_message)

  def _reset_world(self, request, response):
    world = self._servicer._find(request.world_name)
    _refuse_settings("ResetWorld", request.settings)
    with world.lock:
      world.restart = True
    response.reset_world.SetInParent()

  def _destroy_world(self, request, response):
    world = self._servicer._find(request.world_name)
    with world.lock:
      if world.joined_by is not None:
        raise RequestError(code_pb2.FAILED_PRECONDITION,
                           f"world {world.name!r} is joined; leave it before destroying it")
    self._servicer._destroy(world)
    self._created.discard(world.name)
    response.destroy_world.SetInParent()

  def _extension(self, request, response):
    if request.Is(shm_channel_pb2.OpenChannelRequest.DESCRIPTOR):
      response.extension.Pack(self._servicer._offer_channel(self))
      return
    if not _properties.is_property_request(request):
      raise RequestError(code_pb2.UNIMPLEMENTED,
                         f"extension {request.type_url!r} is not supported by this server")
    world = self._joined
    if world is None:  # properties belong to a world's environment: see before_join
      try:
        response.extension.CopyFrom(_properties.before_join(request))
      except _properties.PropertyError as e:
        raise RequestError(e.code, str(e)) from None
      return
    with world.lock:
      try:
        response.extension.CopyFrom(_properties.handle(world.env, request))
      except _properties.PropertyError as e:
        raise RequestError(e.code, str(e)) from None

  def end(self) -> None:
    """The stream is over: leave, and destroy what this stream created.  Idempotent."""
    with self._lock:
      if self._ended:
        return
      self._ended = True
      self._servicer._forget_channels(self)
      self._leave()
      for name in sorted(self._created):
        world = self._servicer._get(name)
        if world is None:
          continue
        with world.lock:
          world.creator = None
          in_use = world.joined_by is not None
        if not in_use:
          self._servicer._destroy(world)
      self._created.clear()


class EnvironmentServicer:
  """Serves `/dm_env_rpc.v1.Environment/Process`, one environment per world.

  Args:
    make_env: called as `make_env(**settings)` by CreateWorld, with the
      request's settings as Python values (numpy scalars become int, float,
      bool or str; arrays stay arrays); returns a `dm_env.Environment`.

  Use `serve()` for a ready server, or `add_to_server(server)` to host the
  service in a `grpc.server` of your own (streams carry raw bytes; give the
  server enough worker threads, one per concurrent stream).
  """

  def __init__(self, make_env: MakeEnv, *, shared_memory: bool = True):
    if not callable(make_env):
      raise TypeError(f"make_env must be callable, not {type(make_env).__name__}")
    self._make_env = make_env
    # Same-host clients step through shared memory when they ask (see
    # dm_env_rpc_fast.shm); False answers their request UNIMPLEMENTED.
    self._shm = shm_server.ChannelHost() if shared_memory else None
    self._lock = threading.Lock()
    self._worlds: Dict[str, _World] = {}
    self._numbers = itertools.count(1)
    self._closed = False

  def Process(self, request_iterator, context):  # pylint: disable=invalid-name
    """The stream: one response (bytes) per request (bytes), in order."""
    session = _Session(self)
    if context is not None:
      context.add_callback(session.end)  # runs however the RPC ends
    try:
      for data in request_iterator:
        yield session.handle(data)
    except grpc.RpcError as e:
      # The client cancelled or went away: the stream is over.  gRPC keeps
      # the error it raised in the call's state, and the error's traceback
      # holds this frame and gRPC's own, a reference cycle that keeps the
      # call (and its socket) until the garbage collector runs; drop it.
      e.__traceback__ = None
    finally:
      session.end()

  def add_to_server(self, server: grpc.Server) -> None:
    """Registers the service in `server` (call before `server.start()`)."""
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Process": grpc.stream_stream_rpc_method_handler(self.Process)})
    server.add_generic_rpc_handlers((handler,))

  @property
  def world_names(self):
    """The names of the worlds that exist now."""
    with self._lock:
      return sorted(self._worlds)

  def close(self) -> None:
    """Closes every environment; later CreateWorld requests are refused."""
    if self._shm is not None:
      self._shm.close()
    with self._lock:
      self._closed = True
      worlds = list(self._worlds.values())
      self._worlds.clear()
    for world in worlds:
      with world.lock:
        world.close()

  # The shared-memory channels, for the sessions.

  def _offer_channel(self, session: _Session):
    if self._shm is None:
      raise RequestError(code_pb2.UNIMPLEMENTED,
                         "this server does not offer shared-memory channels")
    try:
      return self._shm.offer(session, session.handle_channel_step)
    except shm_server.ChannelError as e:
      raise RequestError(code_pb2.UNAVAILABLE, f"no shared-memory channel: {e}") from None

  def _forget_channels(self, session: _Session) -> None:
    if self._shm is not None:
      self._shm.forget(session)

  @property
  def channel_count(self) -> int:
    """How many shared-memory step channels are attached now."""
    return self._shm.channel_count if self._shm is not None else 0

  # The world registry, for the sessions.

  def _create(self, settings, creator: _Session) -> str:
    if self._closed:
      raise RequestError(code_pb2.UNAVAILABLE, "the server is shutting down")
    try:
      env = self._make_env(**settings)
    except Exception as e:
      _log.info("make_env(%s) raised %r", ", ".join(sorted(settings)), e)
      raise RequestError(code_pb2.INVALID_ARGUMENT,
                         f"could not create the environment with settings "
                         f"{sorted(settings)}: {type(e).__name__}: {e}") from None
    try:
      env_specs = _specs.EnvSpecs.of(env)
    except Exception as e:
      try:
        env.close()
      except Exception:
        _log.exception("closing an environment whose specs failed")
      raise RequestError(code_pb2.INTERNAL,
                         f"the environment's specs cannot be served: {type(e).__name__}: {e}") from None
    with self._lock:
      name = f"world_{next(self._numbers)}"
      world = _World(name, env, env_specs, creator)
      closed = self._closed
      if not closed:
        self._worlds[name] = world
    if closed:
      with world.lock:
        world.close()
      raise RequestError(code_pb2.UNAVAILABLE, "the server is shutting down")
    return name

  def _get(self, name: str) -> Optional[_World]:
    with self._lock:
      return self._worlds.get(name)

  def _find(self, name: str) -> _World:
    world = self._get(name)
    if world is None:
      raise RequestError(code_pb2.NOT_FOUND, f"no world named {name!r}")
    return world

  def _destroy(self, world: _World) -> None:
    with self._lock:
      if self._worlds.get(world.name) is world:
        del self._worlds[world.name]
    with world.lock:
      world.close()
