"""Environments for the server tests, written only against dm_env (and `server.Property`).

`RichEnv` is deterministic: every observation, reward and discount follows
from its settings and the actions it was sent, so a test can run a second
instance directly (no RPC) and expect the same values from the server.  Its
specs exercise what the server must flatten and check:

  actions                              observations
  arm.force  float32 (3,) bounds [-1,-2,-3]..[1,2,3]   camera.rgb  float32 (6, 8, 3)
  arm.grip   int32 () in [0, 10]       camera.depth  float64 (4,)
  command    string ()                 contact       bool (3,)
  flags      bool (2,)                 counters.episode, .grip_total, .t  int64 ()
  offset     float32 (2, 2), unbounded echo          string ()
  pedals.0   float64 () in [0, 1]      history.0 float32 (3,), history.1 int32 ()  (a tuple)
  pedals.1   uint8 () in [0, 200]      level         int32 (2,) bounds [0, -10]..[999, 10]
  (pedals is a list)                   pixels        uint8 (2, 3)
                                       words         string (2,)
  reward float32 (), discount float64 () in [0, 1].

Settings: `seed` (required; makes each world's observations distinct),
`episode_length` (steps after the first; the last one is a termination),
`close_file` (a path: `close()` appends "closed <seed>" to it, for servers in
other processes), `fail_reset` (reset raises), `fail_close` (close raises).
A step whose `command` is "boom" raises RuntimeError("boom").

Every instance registers itself in `INSTANCES` (by seed) and records its calls
in `calls`; `close()` records the seed in `CLOSED`.  Seeds from `new_seed()`
are unique in the process, so tests never see each other's environments.
"""
import collections
import itertools
import threading
from typing import Dict, List

import dm_env
from dm_env import specs
import numpy as np

from dm_env_rpc_fast import server

IMAGE_SHAPE = (6, 8, 3)
COMMANDS = ("go", "stop", "h\u00e9llo \u2603", "")

_lock = threading.Lock()
_seeds = itertools.count(1000)
INSTANCES: Dict[int, List["RichEnv"]] = collections.defaultdict(list)
CLOSED: Dict[int, int] = collections.Counter()


def new_seed() -> int:
  """A seed no other test in this process uses."""
  with _lock:
    return next(_seeds)


def instance(seed: int) -> "RichEnv":
  """The one environment made with `seed` (fails if there is not exactly one)."""
  with _lock:
    made = list(INSTANCES.get(seed, ()))
  assert len(made) == 1, f"{len(made)} environments were made with seed {seed}"
  return made[0]


def closed_count(seed: int) -> int:
  with _lock:
    return CLOSED[seed]


def action_spec():
  return {
      "arm": {
          "force": specs.BoundedArray((3,), np.float32, [-1, -2, -3], [1, 2, 3], name="force"),
          "grip": specs.BoundedArray((), np.int32, 0, 10, name="grip"),
      },
      "command": specs.StringArray((), name="command"),
      "flags": specs.Array((2,), np.bool_, name="flags"),
      # float32: the Step mixin fills an unbounded float64 action with float64's lowest
      # value and casts it to float32 for its wrong-dtype test, which overflows.
      "offset": specs.Array((2, 2), np.float32, name="offset"),
      "pedals": [specs.BoundedArray((), np.float64, 0.0, 1.0),
                 specs.BoundedArray((), np.uint8, 0, 200)],
  }


def observation_spec():
  return {
      "camera": {
          "rgb": specs.Array(IMAGE_SHAPE, np.float32, name="rgb"),
          "depth": specs.Array((4,), np.float64, name="depth"),
      },
      "contact": specs.Array((3,), np.bool_, name="contact"),
      "counters": {
          "t": specs.Array((), np.int64),
          "episode": specs.Array((), np.int64),
          "grip_total": specs.Array((), np.int64),
      },
      "echo": specs.StringArray(()),
      "history": (specs.Array((3,), np.float32), specs.Array((), np.int32)),
      "level": specs.BoundedArray((2,), np.int32, [0, -10], [999, 10]),
      "pixels": specs.Array((2, 3), np.uint8),
      "words": specs.StringArray((2,)),
  }


ACTION_NAMES = ["arm.force", "arm.grip", "command", "flags", "offset", "pedals.0", "pedals.1"]
OBSERVATION_NAMES = ["camera.depth", "camera.rgb", "contact", "counters.episode",
                     "counters.grip_total", "counters.t", "echo", "history.0", "history.1",
                     "level", "pixels", "words"]


def action_for(seed: int, i: int, command=None):
  """The i-th action of a schedule, as the environment takes it (`pedals` a list)."""
  return {
      "arm": {
          "force": np.array([((i * 7 + seed) % 21 - 10) / 10, (i % 5) - 2, -(seed % 4) * 0.75],
                            np.float32),
          "grip": np.int32((i + seed) % 11),
      },
      "command": np.str_(COMMANDS[i % len(COMMANDS)] if command is None else command),
      "flags": np.array([i % 2 == 0, i % 3 == 0]),
      "offset": np.array([[i * 0.25, -i], [seed, 0.5]], np.float32),
      "pedals": [np.float64((i % 5) / 4), np.uint8((i * 13) % 201)],
  }


def client_action(action):
  """An action nest as a DmEnvAdaptor takes it: lists become {"0": ..., "1": ...}."""
  if isinstance(action, dict):
    return {key: client_action(value) for key, value in action.items()}
  if isinstance(action, (list, tuple)):
    return {str(i): client_action(value) for i, value in enumerate(action)}
  return action


def flatten(nest, prefix=""):
  """{dotted name: leaf} of a nest of dicts, lists and tuples (dm_env_rpc's names)."""
  if isinstance(nest, dict) or hasattr(nest, "items"):
    items = nest.items()
  elif isinstance(nest, (list, tuple)):
    items = ((str(i), value) for i, value in enumerate(nest))
  else:
    return {prefix: nest}
  result = {}
  for key, value in items:
    result.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
  return result


def _base_image(seed):
  count = int(np.prod(IMAGE_SHAPE))
  return ((np.arange(count, dtype=np.float32) * 0.125 + seed) % 97).reshape(IMAGE_SHAPE)


class RichEnv(dm_env.Environment):
  """See the module docstring."""

  def __init__(self, seed, episode_length=1000, close_file=None, fail_reset=False,
               fail_close=False, register=True):
    if not isinstance(seed, int):
      raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    self.seed = seed
    self.episode_length = int(episode_length)
    if self.episode_length < 1:
      raise ValueError(f"episode_length must be at least 1, not {episode_length}")
    self._close_file = close_file
    self._fail_reset = bool(fail_reset)
    self._fail_close = bool(fail_close)
    self._image = _base_image(seed)
    self._action_spec = action_spec()
    self._flat_action_spec = flatten(self._action_spec)
    self._episode = 0
    self._t = 0
    self._grip_total = 0
    self.calls = []
    self.closed = False
    # Properties (see dm_env_rpc_properties).
    self.gain = np.float32(1.5)
    self.counter = np.int32(7)
    self.fov = np.array([60.0, 45.0])
    self.secret = None
    if register:
      with _lock:
        INSTANCES[seed].append(self)

  # dm_env.Environment.

  def reset(self):
    self.calls.append(("reset",))
    if self._fail_reset:
      raise ValueError("reset refused")
    self._episode += 1
    self._t = 0
    self._grip_total = 0
    return dm_env.restart(self._observe(None))

  def step(self, action):
    self._check_action(action)
    self.calls.append(("step", action))
    command = str(np.asarray(action["command"]).item())
    if command == "boom":
      raise RuntimeError("boom")
    self._t += 1
    grip = int(action["arm"]["grip"])
    self._grip_total += grip
    observation = self._observe(action)
    reward = np.float32(grip * 0.5 + self._t + self.seed * 0.001)
    if self._t >= self.episode_length:
      return dm_env.termination(reward, observation)
    return dm_env.transition(reward, observation, discount=np.float64(1.0 / (self._t + 1)))

  def observation_spec(self):
    return observation_spec()

  def action_spec(self):
    return self._action_spec

  def reward_spec(self):
    return specs.Array((), np.float32, name="reward")

  def close(self):
    self.closed = True
    with _lock:
      CLOSED[self.seed] += 1
    if self._close_file:
      with open(self._close_file, "a") as f:
        f.write(f"closed {self.seed}\n")
    if self._fail_close:
      raise OSError("close failed")

  # The rest.

  def _check_action(self, action):
    """The server must hand over the nest the spec describes, leaf dtypes and all."""
    if type(action) is not dict or sorted(action) != sorted(self._action_spec):
      raise TypeError(f"action must be a dict with keys {sorted(self._action_spec)}: {action!r}")
    if type(action["arm"]) is not dict or type(action["pedals"]) is not list:
      raise TypeError(f"arm must be a dict and pedals a list: {action!r}")
    for name, value in flatten(action).items():
      spec = self._flat_action_spec[name]
      if isinstance(spec, specs.StringArray):
        spec.validate(value)
      elif not (isinstance(value, (np.ndarray, np.generic)) and value.dtype == spec.dtype):
        raise TypeError(f"action {name} is {value!r}, not of dtype {spec.dtype}")
      else:
        spec.validate(value)

  def _observe(self, action):
    if action is None:
      force = np.zeros(3, np.float32)
      grip, command, flags, pedals = 0, "", (False, False), (0.0, 0)
      offset = np.zeros((2, 2), np.float32)
    else:
      force = np.asarray(action["arm"]["force"], np.float32)
      grip = int(action["arm"]["grip"])
      command = str(np.asarray(action["command"]).item())
      flags = tuple(bool(f) for f in np.asarray(action["flags"]))
      offset = np.asarray(action["offset"], np.float32)
      pedals = (float(action["pedals"][0]), int(action["pedals"][1]))
    t, seed = self._t, self.seed
    return {
        "camera": {
            "rgb": self._image + np.float32(t * 0.5) + force[0] + np.float32(pedals[0]),
            # No arithmetic on `offset`: it is unbounded, and may be a float64's extreme.
            "depth": np.array([seed * 0.5, t * 0.25, offset[0, 0], offset[1, 1]]),
        },
        "contact": np.array([flags[0], flags[1], t % 2 == 0]),
        "counters": {
            "t": np.int64(t),
            "episode": np.int64(self._episode),
            "grip_total": np.int64(self._grip_total * 1_000_000_007),
        },
        "echo": np.str_(command),
        "history": (force.copy(), np.int32(grip - pedals[1])),
        "level": np.array([t % 1000, min(grip, 10) - 5], np.int32),
        "pixels": ((np.arange(6, dtype=np.int64) * seed + t) % 256).astype(np.uint8).reshape(2, 3),
        "words": np.array([f"seed {seed}", f"t={t} e={self._episode}"]),
    }

  def dm_env_rpc_properties(self):
    return {
        "gain": server.Property(
            spec=specs.BoundedArray((), np.float32, 0.0, 10.0),
            read=lambda: self.gain, write=self._set_gain, description="a bounded gain"),
        "counter": server.Property(
            spec=specs.Array((), np.int32), read=lambda: self.counter,
            write=self._set_counter),
        "camera": server.Property(spec=specs.StringArray(()), read=lambda: "pinhole",
                                  description="the camera model"),
        "camera.fov": server.Property(
            spec=specs.Array((2,), np.float64), read=lambda: self.fov, write=self._set_fov),
        "arm.length": server.Property(spec=specs.Array((), np.float64), read=lambda: 0.75),
        "arm.limits.max": server.Property(
            spec=specs.Array((3,), np.float32), read=lambda: np.array([1, 2, 3], np.float32)),
        "secret": server.Property(spec=specs.Array((), np.int64), write=self._set_secret),
        "broken": server.Property(spec=specs.Array((), np.int32), read=self._broken),
        "liar": server.Property(spec=specs.Array((), np.int32), read=lambda: np.float64(0.5)),
    }

  def _set_gain(self, value):
    self.gain = value

  def _set_counter(self, value):
    if int(value) % 2:
      raise ValueError(f"counter must be even, not {int(value)}")
    self.counter = value

  def _set_fov(self, value):
    self.fov = value

  def _set_secret(self, value):
    self.secret = value

  def _broken(self):
    raise RuntimeError("sensor unplugged")


def make_env(**settings) -> RichEnv:
  """The factory the tests serve: CreateWorld settings are RichEnv's arguments."""
  return RichEnv(**settings)


class PlainEnv(dm_env.Environment):
  """A minimal environment without properties: one int32 action, one float32 observation."""

  def __init__(self, seed=0):
    self.seed = int(seed)
    self.closed = False
    with _lock:
      INSTANCES[self.seed].append(self)

  def reset(self):
    return dm_env.restart(np.float32(self.seed))

  def step(self, action):
    return dm_env.transition(1.0, np.float32(self.seed + int(action)))

  def observation_spec(self):
    return specs.Array((), np.float32, name="value")

  def action_spec(self):
    return specs.BoundedArray((), np.int32, -100, 100, name="delta")

  def close(self):
    self.closed = True
    with _lock:
      CLOSED[self.seed] += 1


def make_plain_env(**settings) -> PlainEnv:
  return PlainEnv(**settings)


NOT_CALLABLE = 42


# --------------------------------------------------------------------------
# The spec edge cases a dm_env_rpc client meets (tests/server/test_server_spec_edges.py).

INT32_MAX = int(np.iinfo(np.int32).max)


class EdgeEnv(dm_env.Environment):
  """Ordinary dm_env specs that are edge cases on the wire:

    actions: var int32 (-1,), command string (), level int32 () in [0, int32 max]
    observations: var int32 (-1,) (the var action, echoed), level (the same spec, echoed),
      unit float32 (2,) in [0, 1] (out of bounds after the command "oob"), agent string ()
      (the JoinWorld setting), got string () (the Python type and dtype of the command
      `step` received).

  `dm_env_rpc_join_world(agent)` takes JoinWorld's settings; `make_edge_env(join_hook=False)`
  makes one without that method.  `step` records each action in `actions`.
  """

  def __init__(self):
    self.agent = ""
    self.actions = []
    self.unit = np.array([0.0, 1.0], np.float32)

  def action_spec(self):
    return {"var": specs.Array((-1,), np.int32, name="var"),
            "command": specs.StringArray((), name="command"),
            "level": specs.BoundedArray((), np.int32, 0, INT32_MAX, name="level")}

  def observation_spec(self):
    return {"var": specs.Array((-1,), np.int32),
            "level": specs.BoundedArray((), np.int32, 0, INT32_MAX),
            "unit": specs.BoundedArray((2,), np.float32, 0.0, 1.0),
            "agent": specs.StringArray(()),
            "got": specs.StringArray(())}

  def _observe(self, var, level, got):
    return {"var": var, "level": np.int32(level), "unit": self.unit.copy(),
            "agent": np.str_(self.agent), "got": np.str_(got)}

  def reset(self):
    self.unit = np.array([0.0, 1.0], np.float32)
    return dm_env.restart(self._observe(np.zeros(0, np.int32), 0, ""))

  def step(self, action):
    self.actions.append(action)
    command = action["command"]
    got = f"{type(command).__name__} {np.asarray(command).dtype.kind}"
    if str(command) == "oob":
      self.unit = np.array([0.5, 1.5], np.float32)
    else:
      self.unit = np.array([0.0, 1.0], np.float32)
    return dm_env.transition(0.0, self._observe(action["var"], action["level"], got))

  def dm_env_rpc_join_world(self, agent):
    self.agent = agent

  def dm_env_rpc_properties(self):
    return {"agent": server.Property(spec=specs.StringArray(()), read=lambda: self.agent)}


class _EdgeEnvWithoutJoinHook(EdgeEnv):
  dm_env_rpc_join_world = None


def make_edge_env(join_hook=True) -> EdgeEnv:
  return EdgeEnv() if join_hook else _EdgeEnvWithoutJoinHook()
