"""A small, deterministic dm_env_rpc server for tests.

It speaks plain protobuf (the generated `EnvironmentServicer`, tensors packed
and unpacked by `tensor_utils`), so it exercises clients without relying on our
codec's server side.  Errors are answered on the stream as `error`
(google.rpc.Status), and the stream stays open.

In process:

    server, port = toy_server.start()        # 127.0.0.1, ephemeral port
    ...
    server.stop(None)

As a process (writes the bound port to F once serving, serves until killed):

    python tests/support/toy_server.py --port-file F

The environment (everything a test needs to predict what it observes)
-----------------------------------------------------------------------
CreateWorld settings, all optional unless the servicer is built with
`required_world_settings`; anything else, or a bad value, is INVALID_ARGUMENT:
  "seed":           integer scalar, default 0: the starting position.
  "episode_length": integer scalar >= 1, default 10: steps that take actions
                    in an episode (see below).
JoinWorld, Reset and ResetWorld take no settings (any is INVALID_ARGUMENT).

Actions (uid: name, dtype, shape, bounds):
  1: "move"   int32   []   [-2, 2]   added to the position
  2: "paint"  float32 [3]  [0, 1]    becomes the colour
  3: "label"  string  []             becomes the label
An action left out changes nothing.  Actions must have exactly the spec's
dtype and shape (a scalar payload broadcasts to the shape, one dimension may be
-1) and lie within bounds, else the step fails with INVALID_ARGUMENT and
changes nothing.

Observations (uid: name, dtype, shape, bounds):
  1: "image"       float32 [6, 8, 3] [0, 1]   every pixel is the colour, except
                                              pixel [t % 6, position % 8] = 1.0
  2: "position"    int64   []
  3: "step_count"  int32   []        [0, -]   t
  4: "pixel"       uint8   [3]       [0, 255] rint(colour * 255)
  5: "is_even"     bool    []                 position % 2 == 0
  6: "label"       string  []                 the label
  7: "trajectory"  int64   [-1]               positions of this episode, t + 1
  8: "reward"      float64 []                 -abs(position)
  9: "discount"    float64 []        [0, 1]   0.0 on the terminating step, else 1.0
(`%` is the floor modulo: never negative.)

Episodes.  After JoinWorld, Reset, ResetWorld, or a step answered TERMINATED,
the next step starts an episode: its actions are ignored (not even checked),
the state becomes position = seed, colour = [0, 0, 0], label = "", t = 0, and
it answers RUNNING.  Every later step applies its actions, then t += 1; it
answers TERMINATED when t reaches episode_length, RUNNING before.

`expected_observations(steps, seed, episode_length)` computes all of this for a
sequence of steps sent after a join; the servicer runs the very same code.
"""
import argparse
import dataclasses
import os
import pathlib
import sys
import threading
from concurrent import futures
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

if __name__ == "__main__":
  try:
    import dm_env_rpc_fast  # noqa: F401
  except ImportError:  # Run from a checkout: use it.
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import grpc
import numpy as np
from google.rpc import code_pb2
from google.rpc import status_pb2

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2_grpc
from dm_env_rpc_fast.v1 import tensor_utils

_DataType = dm_env_rpc_pb2.DataType
RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING
TERMINATED = dm_env_rpc_pb2.EnvironmentStateType.TERMINATED

IMAGE_SHAPE = (6, 8, 3)
DEFAULT_SEED = 0
DEFAULT_EPISODE_LENGTH = 10


@dataclasses.dataclass(frozen=True)
class _Spec:
  uid: int
  name: str
  dtype: np.dtype
  shape: Tuple[int, ...]
  minimum: Optional[float] = None
  maximum: Optional[float] = None


ACTIONS = (
    _Spec(1, "move", np.dtype(np.int32), (), -2, 2),
    _Spec(2, "paint", np.dtype(np.float32), (3,), 0.0, 1.0),
    _Spec(3, "label", np.dtype(str), ()),
)
OBSERVATIONS = (
    _Spec(1, "image", np.dtype(np.float32), IMAGE_SHAPE, 0.0, 1.0),
    _Spec(2, "position", np.dtype(np.int64), ()),
    _Spec(3, "step_count", np.dtype(np.int32), (), 0, None),
    _Spec(4, "pixel", np.dtype(np.uint8), (3,), 0, 255),
    _Spec(5, "is_even", np.dtype(bool), ()),
    _Spec(6, "label", np.dtype(str), ()),
    _Spec(7, "trajectory", np.dtype(np.int64), (-1,)),
    _Spec(8, "reward", np.dtype(np.float64), ()),
    _Spec(9, "discount", np.dtype(np.float64), (), 0.0, 1.0),
)
ACTION_UIDS: Dict[str, int] = {spec.name: spec.uid for spec in ACTIONS}
OBSERVATION_UIDS: Dict[str, int] = {spec.name: spec.uid for spec in OBSERVATIONS}
_ACTIONS_BY_UID = {spec.uid: spec for spec in ACTIONS}
_OBSERVATIONS_BY_UID = {spec.uid: spec for spec in OBSERVATIONS}

# TensorSpec.Value payload field per dtype, for the bounds in the specs.
_BOUND_FIELD = {np.dtype(np.float32): "floats", np.dtype(np.float64): "doubles",
                np.dtype(np.int32): "int32s", np.dtype(np.int64): "int64s",
                np.dtype(np.uint8): "uint8s"}


def _bound_value(dtype, value):
  field = _BOUND_FIELD[dtype]
  array = bytes([value]) if field == "uint8s" else [value]
  return dm_env_rpc_pb2.TensorSpec.Value(**{field: {"array": array}})


def _tensor_spec(spec: _Spec) -> dm_env_rpc_pb2.TensorSpec:
  proto = dm_env_rpc_pb2.TensorSpec(
      name=spec.name, shape=spec.shape,
      dtype=tensor_utils.np_type_to_data_type(spec.dtype))
  if spec.minimum is not None:
    proto.min.CopyFrom(_bound_value(spec.dtype, spec.minimum))
  if spec.maximum is not None:
    proto.max.CopyFrom(_bound_value(spec.dtype, spec.maximum))
  return proto


def specs() -> dm_env_rpc_pb2.ActionObservationSpecs:
  """The specs JoinWorld and Reset answer with."""
  return dm_env_rpc_pb2.ActionObservationSpecs(
      actions={spec.uid: _tensor_spec(spec) for spec in ACTIONS},
      observations={spec.uid: _tensor_spec(spec) for spec in OBSERVATIONS})


# --------------------------------------------------------------------------
# The environment, as pure functions of its state.

@dataclasses.dataclass(frozen=True)
class State:
  """Where an episode is.  `t` counts the steps that took actions."""
  t: int
  position: int
  colour: Tuple[float, float, float]  # float32 values
  label: str
  trajectory: Tuple[int, ...]


def initial_state(seed: int = DEFAULT_SEED) -> State:
  """The state an episode starts in."""
  return State(t=0, position=int(seed), colour=(0.0, 0.0, 0.0), label="",
               trajectory=(int(seed),))


def apply_actions(state: State, actions: Mapping[str, object]) -> State:
  """The state after one step taking `actions` ({name: value}, all valid)."""
  position = state.position + int(actions.get("move", 0))
  colour = state.colour
  if "paint" in actions:
    colour = tuple(float(c) for c in np.asarray(actions["paint"], np.float32))
  label = str(actions.get("label", state.label))
  return State(t=state.t + 1, position=position, colour=colour, label=label,
               trajectory=state.trajectory + (position,))


def state_type(state: State, episode_length: int) -> int:
  """RUNNING or TERMINATED."""
  return TERMINATED if state.t >= episode_length else RUNNING


def _to_uint8(colour):
  # The clip only matters to servers that let bad colours through on purpose.
  return np.rint(np.clip(colour.astype(np.float64), 0, 1) * 255).astype(np.uint8)


def observe(state: State, episode_length: int) -> Dict[str, object]:
  """{name: value} of every observation in `state`, typed as in the specs."""
  colour = np.asarray(state.colour, np.float32)
  image = np.empty(IMAGE_SHAPE, np.float32)
  image[...] = colour
  image[state.t % IMAGE_SHAPE[0], state.position % IMAGE_SHAPE[1], :] = 1.0
  terminated = state_type(state, episode_length) == TERMINATED
  return {
      "image": image,
      "position": np.int64(state.position),
      "step_count": np.int32(state.t),
      "pixel": _to_uint8(colour),
      "is_even": np.bool_(state.position % 2 == 0),
      "label": state.label,
      "trajectory": np.asarray(state.trajectory, np.int64),
      "reward": np.float64(-abs(state.position)),
      "discount": np.float64(0.0 if terminated else 1.0),
  }


def expected_observations(
    steps: Sequence[Mapping[str, object]],
    seed: int = DEFAULT_SEED,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
) -> List[Tuple[int, Dict[str, object]]]:
  """What the server answers to `steps`, sent one by one after a JoinWorld.

  Args:
    steps: per step, the actions sent as {name: value} (valid ones; names as
      in ACTIONS).  A step that starts an episode ignores its actions.
    seed: the world's "seed" setting.
    episode_length: the world's "episode_length" setting.

  Returns:
    Per step, (state type, {observation name: value}); look values up by uid
    with OBSERVATION_UIDS.
  """
  results = []
  state = None  # None: the next step starts an episode.
  for actions in steps:
    if state is None:
      state = initial_state(seed)
    else:
      state = apply_actions(state, actions)
    kind = state_type(state, episode_length)
    results.append((kind, observe(state, episode_length)))
    if kind == TERMINATED:
      state = None
  return results


# --------------------------------------------------------------------------
# The server.

class ToyError(Exception):
  """A request the server refuses; answered as `error` on the stream."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code


def _invalid(message):
  return ToyError(code_pb2.INVALID_ARGUMENT, message)


def _integer_setting(name, tensor, minimum=None):
  try:
    value = np.asarray(tensor_utils.unpack_tensor(tensor))
  except (TypeError, ValueError) as e:
    raise _invalid(f'setting "{name}": {e}') from None
  if value.shape or not np.issubdtype(value.dtype, np.integer):
    raise _invalid(f'setting "{name}" must be an integer scalar, got '
                   f"{value.dtype} with shape {value.shape}")
  if minimum is not None and int(value) < minimum:
    raise _invalid(f'setting "{name}" must be at least {minimum}, got {value}')
  return int(value)


def _refuse_settings(request_name, settings):
  if settings:
    raise _invalid(f"{request_name} takes no settings, got {sorted(settings)}")


@dataclasses.dataclass
class World:
  """A created world: its settings, its joiner, its episode."""
  seed: int
  episode_length: int
  joined: bool = False
  state: Optional[State] = None  # None: the next step starts an episode.

  def restart(self):
    self.state = None


class Session:
  """One Process stream: the world it has joined, and the request handlers.

  Subclasses may override a check to make a deliberately broken server.
  """

  def __init__(self, servicer: "ToyServicer"):
    self._servicer = servicer
    self._world_name: Optional[str] = None

  @property
  def _world(self) -> World:
    if self._world_name is None:
      raise ToyError(code_pb2.FAILED_PRECONDITION,
                              "not joined to a world")
    return self._servicer.worlds[self._world_name]

  def create_world(self, request):
    settings = dict(request.settings)
    missing = sorted(set(self._servicer.required_world_settings) - set(settings))
    if missing:
      raise _invalid(f"missing required settings {missing}")
    unknown = sorted(set(settings) - {"seed", "episode_length"})
    if unknown:
      raise _invalid(f"unknown settings {unknown}")
    seed = DEFAULT_SEED
    if "seed" in settings:
      seed = _integer_setting("seed", settings["seed"])
    episode_length = DEFAULT_EPISODE_LENGTH
    if "episode_length" in settings:
      episode_length = _integer_setting(
          "episode_length", settings["episode_length"], minimum=1)
    name = self._servicer.add_world(World(seed, episode_length))
    return dm_env_rpc_pb2.CreateWorldResponse(world_name=name)

  def join_world(self, request):
    if self._world_name is not None:
      raise ToyError(code_pb2.FAILED_PRECONDITION,
                              f'already joined to "{self._world_name}"')
    world = self._servicer.find_world(request.world_name)
    _refuse_settings("JoinWorld", request.settings)
    if world.joined:
      raise ToyError(
          code_pb2.FAILED_PRECONDITION,
          f'world "{request.world_name}" is joined by another stream')
    world.joined = True
    world.restart()
    self._world_name = request.world_name
    return dm_env_rpc_pb2.JoinWorldResponse(specs=specs())

  def leave_world(self, request):
    del request
    if self._world_name is not None:
      world = self._servicer.worlds.get(self._world_name)
      if world is not None:
        world.joined = False
      self._world_name = None
    return dm_env_rpc_pb2.LeaveWorldResponse()

  def reset(self, request):
    world = self._world
    _refuse_settings("Reset", request.settings)
    world.restart()
    return dm_env_rpc_pb2.ResetResponse(specs=specs())

  def reset_world(self, request):
    world = self._servicer.find_world(request.world_name)
    _refuse_settings("ResetWorld", request.settings)
    world.restart()
    return dm_env_rpc_pb2.ResetWorldResponse()

  def destroy_world(self, request):
    world = self._servicer.find_world(request.world_name)
    if world.joined:
      raise ToyError(
          code_pb2.FAILED_PRECONDITION,
          f'world "{request.world_name}" is joined; leave it first')
    del self._servicer.worlds[request.world_name]
    return dm_env_rpc_pb2.DestroyWorldResponse()

  def step(self, request):
    world = self._world
    requested = []
    for uid in request.requested_observations:
      if uid not in _OBSERVATIONS_BY_UID:
        raise _invalid(f"requested observation uid {uid} is not valid")
      requested.append(uid)
    if world.state is None:
      world.state = initial_state(world.seed)  # Actions ignored.
    else:
      actions = {}
      for uid, tensor in request.actions.items():
        value = self.check_action(uid, tensor)
        actions[_ACTIONS_BY_UID[uid].name] = value
      world.state = apply_actions(world.state, actions)
    kind = state_type(world.state, world.episode_length)
    values = observe(world.state, world.episode_length)
    if kind == TERMINATED:
      world.restart()
    observations = {}
    for uid in requested:
      spec = _OBSERVATIONS_BY_UID[uid]
      observations[uid] = tensor_utils.pack_tensor(values[spec.name],
                                                   dtype=spec.dtype)
    return dm_env_rpc_pb2.StepResponse(state=kind, observations=observations)

  def check_action(self, uid, tensor):
    """Returns the value of action `uid`, or raises if it breaks its spec."""
    spec = _ACTIONS_BY_UID.get(uid)
    if spec is None:
      raise _invalid(f"action uid {uid} is not valid")
    try:
      dtype = np.dtype(tensor_utils.get_tensor_type(tensor))
      value = np.asarray(tensor_utils.unpack_tensor(tensor))
    except (TypeError, ValueError) as e:
      raise _invalid(f'action "{spec.name}": {e}') from None
    if dtype != spec.dtype:
      raise _invalid(f'action "{spec.name}" must be {spec.dtype}, got {dtype}')
    if value.shape != spec.shape:
      raise _invalid(f'action "{spec.name}" must have shape {spec.shape}, got '
                     f"{value.shape}")
    self.check_bounds(spec, value)
    return value

  def check_bounds(self, spec, value):
    """Raises unless `value` lies within the bounds of `spec`."""
    if spec.minimum is not None and np.any(value < spec.minimum):
      raise _invalid(f'action "{spec.name}" = {value} is below {spec.minimum}')
    if spec.maximum is not None and np.any(value > spec.maximum):
      raise _invalid(f'action "{spec.name}" = {value} is above {spec.maximum}')


class ToyServicer(dm_env_rpc_pb2_grpc.EnvironmentServicer):
  """Hosts any number of toy worlds; each stream joins at most one.

  Requests are handled one at a time across all streams (one lock): the
  server is for tests, not for throughput.
  """

  session_class = Session

  def __init__(self, required_world_settings: Sequence[str] = ()):
    """Makes a servicer with no worlds.

    Args:
      required_world_settings: names of CreateWorld settings ("seed",
        "episode_length") that must be present.
    """
    self.required_world_settings = tuple(required_world_settings)
    self.worlds: Dict[str, World] = {}
    self._worlds_created = 0
    self._lock = threading.Lock()

  def add_world(self, world: World) -> str:
    self._worlds_created += 1
    name = f"toy_world_{self._worlds_created}"
    self.worlds[name] = world
    return name

  def find_world(self, name: str) -> World:
    world = self.worlds.get(name)
    if world is None:
      raise ToyError(code_pb2.NOT_FOUND, f'no world named "{name}"')
    return world

  def Process(self, request_iterator, context):
    session = self.session_class(self)
    try:
      for request in request_iterator:
        yield self._answer(session, request)
    finally:
      with self._lock:
        session.leave_world(None)

  def _answer(self, session, request):
    kind = request.WhichOneof("payload")
    try:
      handler = getattr(session, kind) if kind in _PAYLOADS else None
      if handler is None:
        raise ToyError(code_pb2.UNIMPLEMENTED,
                                f"request payload {kind} is not supported")
      with self._lock:
        response = handler(getattr(request, kind))
    except ToyError as e:
      return dm_env_rpc_pb2.EnvironmentResponse(
          error=status_pb2.Status(code=e.code, message=str(e)))
    return dm_env_rpc_pb2.EnvironmentResponse(**{kind: response})


_PAYLOADS = frozenset(("create_world", "join_world", "step", "reset",
                       "reset_world", "leave_world", "destroy_world"))


def start(port: int = 0,
          servicer: Optional[ToyServicer] = None,
          max_workers: int = 16) -> Tuple[grpc.Server, int]:
  """Starts a server on 127.0.0.1, with local credentials.

  Clients connect with `grpc.local_channel_credentials()` (the default of
  `create_secure_channel_and_connect`).

  Args:
    port: the port to bind; 0 picks a free one.
    servicer: the servicer to host; a new `ToyServicer()` by default.
    max_workers: threads, hence streams open at once (each holds one).

  Returns:
    (server, bound port).  Stop it with `server.stop(None)`.
  """
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers))
  dm_env_rpc_pb2_grpc.add_EnvironmentServicer_to_server(
      servicer or ToyServicer(), server)
  bound = server.add_secure_port(f"127.0.0.1:{port}",
                                 grpc.local_server_credentials())
  server.start()
  return server, bound


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--port", type=int, default=0,
                      help="port to bind on 127.0.0.1 (default: a free one)")
  parser.add_argument("--port-file", help="write the bound port here")
  args = parser.parse_args(argv)
  server, port = start(args.port)
  if args.port_file:
    # Written whole, then renamed: a reader never sees a partial number.
    partial = args.port_file + ".tmp"
    with open(partial, "w") as f:
      f.write(f"{port}\n")
    os.replace(partial, args.port_file)
  else:
    print(port, flush=True)
  server.wait_for_termination()


if __name__ == "__main__":
  main()
