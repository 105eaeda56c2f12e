"""Many environments from one agent: a batched client over N dm_env_rpc connections.

`create_and_join_world(targets, create_settings, join_settings)` connects to N
servers (addresses, or `Connection`s you made), creates and joins a world on
each, and returns a `VectorEnv` that steps all N from one thread:

    with vector.create_and_join_world(["host1:10000", "host2:10000"],
                                      {"seed": 1}, {}) as envs:
      timestep = envs.reset()                          # batched, all FIRST
      timestep = envs.step({"action": np.zeros(envs.num_envs, np.int32)})

Two APIs over the same environments:

- gymnasium-style: `step_async(actions)` then `step_wait()` (or `step(actions)`)
  -> one batched `dm_env.TimeStep` for all N;
- EnvPool-style: `send(actions, env_ids)` then `recv()` -> `(timestep, env_ids)`
  for the environments that answered first (at least `batch_size` of them, when
  that many are pending), in ascending id order.

A batched TimeStep is a `dm_env.TimeStep` of arrays with a leading axis over
the environments: `step_type` (n,) int32 (`dm_env.StepType` values),
`reward` (n, *reward shape) and `discount` (n, *discount shape) of the world's
reward and discount specs (float64 when the world has none), and the
observation nest with every leaf stacked.  Actions are given the same way:
{name: array with a leading axis of one entry per environment stepped}.

Episode ends (the restart rule): next-step autoreset, as gymnasium's vector
environments (`AutoresetMode.NEXT_STEP`) and EnvPool do it.  A step that
returns LAST does not restart anything by itself; the next step sent to that
environment starts its new episode: the environment's answer to it is the FIRST
step of the new episode, and the action sent with it is ignored (the dm_env_rpc
protocol: a step after TERMINATED or INTERRUPTED begins a new sequence and
its actions are not applied).  With `autoreset="reset"` a ResetRequest goes
first on that connection, for servers that want one.  On a FIRST step the
reward is 0 and, when the world sends no discount, the discount is 1 (where
`DmEnvAdaptor` gives None).

Faults: an error on one environment (the server answered with an error, the
server died, the stream broke) raises `VectorEnvError` naming the environment's
index and address, with the original exception as `__cause__`; it never waits
on the other environments beyond their own answers.  `step_wait` first collects
every other answer of the batch (so every connection is left with nothing in
flight) and names every environment that failed; `recv` raises at once and
keeps what the others answered for the next `recv`.  An environment whose
connection broke is marked broken, and every later request to it raises at
once; one that answered an error stays usable.  `close()` ends every stream
(leaving, and destroying the worlds it created, where the server is still
there), and is idempotent; `VectorEnv` is a context manager.

How a step travels: on our `Connection` (any object whose class has
`start_step`), every request goes out before any answer is awaited, each
answer signals a queue as it arrives (`on_ready`), and fixed-shape numeric
observations are decoded straight into rows of preallocated (n, ...) arrays
(`out=`): no per-environment array is made.  Over gRPC that works with any
dm_env_rpc server; against `dm-env-rpc-fast serve` on the same host the
connection may take its shared-memory channel, which works the same way.
Observations of variable shape or of string/proto dtype are decoded as usual
and stacked (an object array of n entries when their shapes differ).  With a
connection without `start_step` (dm-env-rpc's own `Connection`, a test double)
steps go through `StepRequest` messages one environment after the other: it
works, with none of the pipelining.

The arrays a step returns are fresh ones the caller owns (`copy=True`, the
default); with `copy=False` the arrays of a result that holds every
environment are reused: valid until the next `step_async`/`send`/`reset`.
(A result of some of them is always a fresh gather of their rows.)
"""

import functools
import inspect
import queue
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import dm_env
from google.rpc import code_pb2
import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import connection as connection_lib
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_flatten_utils
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils

_RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING
_TERMINATED = dm_env_rpc_pb2.EnvironmentStateType.TERMINATED
_INTERRUPTED = dm_env_rpc_pb2.EnvironmentStateType.INTERRUPTED
_FIRST, _MID, _LAST = (int(t) for t in (dm_env.StepType.FIRST, dm_env.StepType.MID,
                                         dm_env.StepType.LAST))
_SEP = dm_env_adaptor.DEFAULT_KEY_SEPARATOR
_REWARD = dm_env_adaptor.DEFAULT_REWARD_KEY
_DISCOUNT = dm_env_adaptor.DEFAULT_DISCOUNT_KEY
AUTORESET_MODES = ("step", "reset")

# Whether this codec decodes into given arrays (`decode_step_response(out=)`).
# Without it, answers are decoded as read-only views and copied into the rows.
DECODES_INTO = "out" in inspect.signature(codec.decode_step_response).parameters

# Errors after which the connection is still in step with its server: the
# server answered (with an error, or with something we refused).
_ANSWERED = (error.DmEnvRpcError, ValueError, TypeError)

Target = Union[str, connection_lib.ConnectionType]


class VectorEnvError(RuntimeError):
  """One or more environments of a `VectorEnv` failed.

  Attributes:
    env_id: the index of the (first) environment that failed.
    address: its address (or a description of the connection it came on).
    failures: [(env_id, address, exception)] for every environment that
      failed in the call, first one first.
  """

  def __init__(self, failures: Sequence[Tuple[int, str, BaseException]], what: str = ""):
    self.failures = list(failures)
    self.env_id, self.address, cause = self.failures[0]
    parts = [f"environment {i} ({address}): {_explain(e)}" for i, address, e in self.failures]
    super().__init__((f"{what}: " if what else "") + "; ".join(parts))
    self.__cause__ = cause


def _explain(e: BaseException) -> str:
  """One line for an exception (a DmEnvRpcError's str is a multi-line Status)."""
  if isinstance(e, error.DmEnvRpcError):
    try:
      code = code_pb2.Code.Name(e.code)
    except ValueError:
      code = str(e.code)
    return f"DmEnvRpcError {code}: {e.message}"
  return _one_line(f"{type(e).__name__}: {e}")


def _describe(target) -> str:
  return target if isinstance(target, str) else f"{type(target).__name__} object"


def _per_env(settings, n: int, what: str) -> List[Mapping[str, Any]]:
  """One settings mapping for all, or a sequence of n of them."""
  if isinstance(settings, Mapping):
    return [settings] * n
  settings = list(settings)
  if len(settings) != n or not all(isinstance(s, Mapping) for s in settings):
    raise ValueError(f"{what}: one mapping for every environment, or a sequence of {n} "
                     "mappings (one per environment)")
  return settings


def _spec_difference(a: dm_env_rpc_pb2.ActionObservationSpecs,
                     b: dm_env_rpc_pb2.ActionObservationSpecs) -> str:
  """What differs between two spec sets, in a few words."""
  for field in ("actions", "observations"):
    left, right = getattr(a, field), getattr(b, field)
    for uid in sorted(set(left) | set(right)):
      if uid not in right:
        return f"{field} UID {uid} ({left[uid].name!r}) is missing"
      if uid not in left:
        return f"{field} UID {uid} ({right[uid].name!r}) is extra"
      if left[uid] != right[uid]:
        return (f"{field} UID {uid}: {_one_line(right[uid])} instead of "
                f"{_one_line(left[uid])}")
  return "they differ"


def _one_line(message) -> str:
  return " ".join(str(message).split())


class _Slots:
  """The batched observation arrays one step fills: a row per environment (every row is written)."""

  def __init__(self, n: int, fixed: Mapping[int, Tuple[Tuple[int, ...], np.dtype]], rows: bool):
    self.observations = {uid: np.empty((n,) + shape, dtype) for uid, (shape, dtype) in fixed.items()}
    # The row views given to the decoder as `out`, made once per set (iterating
    # an array makes its row views in C; a 0-d row needs indexing).
    self.rows = None
    if rows:
      uids = list(self.observations)
      columns = [list(a) if a.ndim > 1 else [a[i, ...] for i in range(n)]
                 for a in self.observations.values()]
      self.rows = [dict(zip(uids, row)) for row in zip(*columns)] if uids else [{}] * n


class VectorEnv:
  """N dm_env_rpc worlds stepped together from one thread.  See the module docstring.

  Made by `create_and_join_world`, or from `DmEnvAdaptor`s that have joined
  their worlds (all with the same specs).
  """

  def __init__(self,
               envs: Sequence[dm_env_adaptor.DmEnvAdaptor],
               *,
               addresses: Optional[Sequence[str]] = None,
               batch_size: Optional[int] = None,
               copy: bool = True,
               autoreset: str = "step",
               _owned: Optional[Sequence[Tuple[bool, Optional[str]]]] = None):
    """Wraps joined adaptors.

    Args:
      envs: `DmEnvAdaptor`s of joined worlds, all with the same specs.  The
        `VectorEnv` steps their connections itself (and leaves the worlds on
        close); do not use the adaptors meanwhile.
      addresses: what to call each environment in errors (default: its index).
      batch_size: how many answers `recv()` waits for (default: all of them).
      copy: return fresh arrays from every step (True), or reuse them (False).
      autoreset: "step" (the next step after LAST starts the new episode) or
        "reset" (a ResetRequest is sent before that step).

    Raises:
      ValueError: no environments, specs that differ (naming the environment
        and what differs), a bad batch_size or autoreset.
    """
    envs = list(envs)
    n = len(envs)
    if n == 0:
      raise ValueError("VectorEnv needs at least one environment")
    self.num_envs = n
    self.addresses = list(addresses) if addresses is not None else [f"#{i}" for i in range(n)]
    if len(self.addresses) != n:
      raise ValueError(f"{len(self.addresses)} addresses for {n} environments")
    if autoreset not in AUTORESET_MODES:
      raise ValueError(f"autoreset must be one of {AUTORESET_MODES}, not {autoreset!r}")
    self.batch_size = n if batch_size is None else int(batch_size)
    if not 1 <= self.batch_size <= n:
      raise ValueError(f"batch_size must be between 1 and {n}, not {batch_size}")
    self._envs = envs
    self._owned = list(_owned) if _owned is not None else [(False, None)] * n
    self._copy = bool(copy)
    self._autoreset = autoreset
    first = envs[0]
    specs = first._dm_env_rpc_specs  # pylint: disable=protected-access
    for i, env in enumerate(envs[1:], 1):
      other = env._dm_env_rpc_specs  # pylint: disable=protected-access
      if other != specs:
        raise ValueError(
            f"environment {i} ({self.addresses[i]}) has specs different from environment 0's "
            f"({self.addresses[0]}): {_spec_difference(specs, other)}")
      if (env._requested_observation_uids != first._requested_observation_uids  # pylint: disable=protected-access
          or env._nested_tensors != first._nested_tensors):  # pylint: disable=protected-access
        raise ValueError(f"environment {i} ({self.addresses[i]}) was joined with other "
                         "requested_observations or nested_tensors than environment 0")
    self._connections = [env._connection for env in envs]  # pylint: disable=protected-access
    self._init_specs(first)
    self._pipelined = [getattr(type(c), "start_step", None) is not None for c in self._connections]
    self._state = [_TERMINATED] * n  # as DmEnvAdaptor: the first RUNNING answer is FIRST
    self._step_type = [_FIRST] * n  # of each environment's last answer
    # env id -> (decoded into the slots?, signals readiness?), in the order sent
    self._in_flight: Dict[int, Tuple[bool, bool]] = {}
    self._signals: List[Optional[bool]] = [None] * n  # None: not known before the first step
    self._pending: Dict[int, Dict[int, Any]] = {}  # no start_step: actions to send when collected
    self._ready: List[int] = []  # answered, not yet returned
    self._other: List[Dict[int, Any]] = [{} for _ in range(n)]  # non-fixed observations
    self._broken: List[Optional[BaseException]] = [None] * n
    self._errors: Dict[int, BaseException] = {}  # collected, not yet raised
    self._woken: "queue.SimpleQueue[int]" = queue.SimpleQueue()
    self._on_ready = [functools.partial(self._woken.put, i) for i in range(n)]
    self._all_ids = list(range(n))
    # step() may skip the general bookkeeping (see _step_direct).
    self._direct = (DECODES_INTO and all(self._pipelined) and autoreset == "step"
                    and not self._loose)
    self._slots = self._new_slots()
    self._closed = False

  # -- specs ----------------------------------------------------------------------

  def _init_specs(self, env: dm_env_adaptor.DmEnvAdaptor) -> None:
    # pylint: disable=protected-access
    self._template = env
    self._nested = env._nested_tensors
    self._actions = dm_env_adaptor._FastSpecs(env._action_specs)
    self._observations = dm_env_adaptor._FastSpecs(env._observation_specs)
    self._requested = list(env._requested_observation_uids)
    names = self._observations.name
    self._reward_uid = self._observations.uid.get(_REWARD) if env._default_reward_spec else None
    self._discount_uid = (self._observations.uid.get(_DISCOUNT)
                          if env._default_discount_spec else None)
    # The observations a TimeStep carries, by uid (the adaptor's rules).
    hidden = set()
    if not env._is_reward_requested:
      hidden.add(self._reward_uid)
    if not env._is_discount_requested:
      hidden.add(self._discount_uid)
    self._shown = [uid for uid in self._requested if uid not in hidden]
    self._reward_shown = self._reward_uid in self._shown
    # Fixed shape and a numeric or bool dtype: decoded into rows of a batch array.
    self._fixed = {}
    for uid in self._requested:
      shape, np_dtype = self._observations.shape[uid], self._observations.np_dtype[uid]
      if all(d >= 0 for d in shape) and np_dtype.kind in "biuf":
        self._fixed[uid] = (shape, np_dtype)
    self._names = names
    self._requested_set = set(self._requested)
    self._shown_info = [(uid, names[uid], uid in self._fixed) for uid in self._shown]
    self._unflatten = self._nested and any(_SEP in names[uid] for uid in self._shown)
    self._action_info = {name: (uid, self._actions.np_dtype[uid], self._actions.dtype[uid],
                                self._actions.shape[uid])
                         for name, uid in self._actions.uid.items()}
    self._loose = [uid for uid in self._requested if uid not in self._fixed]
    reward_spec, discount_spec = env.reward_spec(), env.discount_spec()
    self._reward_layout = (tuple(reward_spec.shape), np.dtype(reward_spec.dtype))
    self._discount_layout = (tuple(discount_spec.shape), np.dtype(discount_spec.dtype))

  def observation_spec(self):
    """One environment's observation spec (each batch adds a leading axis)."""
    return self._template.observation_spec()

  def action_spec(self):
    """One environment's action spec (actions are given with a leading axis)."""
    return self._template.action_spec()

  def reward_spec(self):
    """One environment's reward spec."""
    return self._template.reward_spec()

  def discount_spec(self):
    """One environment's discount spec."""
    return self._template.discount_spec()

  # -- gymnasium-style ----------------------------------------------------------------

  def step_async(self, actions: Mapping[str, Any]) -> None:
    """Sends a step to every environment; `step_wait` collects the answers.

    Args:
      actions: {name: array} (nested when `nested_tensors`), each with a
        leading axis of `num_envs`, cast to the action spec's dtype as
        `DmEnvAdaptor.step` casts.  May leave actions out, as a step may.

    Raises:
      ValueError: an environment is still busy, an action is unknown or has
        the wrong shape.
      VectorEnvError: an environment could not be sent to (after the others'
        answers were collected and dropped), or broke earlier (then nothing
        is sent).
    """
    self._check_open()
    if self._in_flight or self._pending or self._ready:
      raise ValueError(f"environments {self._busy()} have a step in flight or unreceived: "
                       "call step_wait() (or recv()) first")
    ids = self._all_ids
    per_env = self._prepare_actions(actions, ids)
    try:
      self._start(ids, per_env, first=False)
    except VectorEnvError:
      self._drain_and_discard()
      raise

  def step_wait(self) -> dm_env.TimeStep:
    """Waits for every environment's answer; returns one batched TimeStep.

    Raises:
      ValueError: nothing was sent with `step_async`.
      VectorEnvError: one or more environments failed (all named); every
        other answer has been collected first, and the batch is dropped.
    """
    self._check_open()
    n = self.num_envs
    if len(self._in_flight) + len(self._pending) + len(self._ready) != n:
      raise ValueError("step_wait: call step_async(actions) first")
    self._collect(lambda: len(self._ready) == n, wait_all=True)
    return self._take(self._all_ids)

  def step(self, actions: Mapping[str, Any]) -> dm_env.TimeStep:
    """`step_async(actions)` then `step_wait()`."""
    if (self._direct and not (self._in_flight or self._pending or self._ready or self._closed)
        and not any(self._broken)):
      return self._step_direct(actions)
    self.step_async(actions)
    return self.step_wait()

  def _step_direct(self, actions: Mapping[str, Any]) -> dm_env.TimeStep:
    """`step` when every answer decodes into the slots: the same work, less bookkeeping.

    For our Connections, with every observation of fixed shape and numeric dtype
    and autoreset="step".  A failure hands over to the general path's
    bookkeeping, so errors and draining are step_async/step_wait's.
    """
    ids = self._all_ids
    per_env = self._prepare_actions(actions, ids)
    conns, rows, requested = self._connections, self._slots.rows, self._requested
    sent = 0
    try:
      for i in ids:
        conns[i].start_step(per_env[i], requested, out=rows[i])
        sent += 1
    except Exception as e:  # pylint: disable=broad-except
      # As step_async: the others' steps go out, every answer is collected, then raise.
      for i in ids[:sent]:
        self._in_flight[i] = (True, False)
      failures = [(sent, self.addresses[sent], self._fault(sent, e))]
      try:
        self._start(ids[sent + 1:], per_env[sent + 1:], first=False)
      except VectorEnvError as more:
        failures += more.failures
      self._drain_and_discard()
      raise VectorEnvError(failures, "send") from e
    states, types, count = self._state, self._step_type, len(requested)
    for i in ids:
      try:
        state, by_uid = conns[i].finish_step()
        if len(by_uid) != count:
          self._check_answer(by_uid)
        types[i] = _step_type(states[i], state)
        states[i] = state
      except Exception as e:  # pylint: disable=broad-except
        self._errors[i] = self._fault(i, e)
    if self._errors:
      failures = [(i, self.addresses[i], e) for i, e in self._errors.items()]
      self._errors = {}
      raise VectorEnvError(failures)
    self._ready = list(ids)
    return self._take(ids)

  def reset(self, env_ids: Optional[Sequence[int]] = None) -> dm_env.TimeStep:
    """Resets environments (all by default); returns their FIRST steps, batched.

    Sends a ResetRequest on each connection, then a step with no actions to
    all of them at once.  The result is in the order of `env_ids`.
    """
    ids = self._ids(env_ids)
    self.async_reset(ids)
    wanted = set(ids)
    self._collect(lambda: wanted.issubset(self._ready), wait_all=False, only=ids)
    return self._take(ids if ids != self._all_ids else self._all_ids)

  # -- EnvPool-style ----------------------------------------------------------------------

  def async_reset(self, env_ids: Optional[Sequence[int]] = None) -> None:
    """Resets environments (all by default) and sends their first steps; `recv` gets them."""
    self._check_open()
    ids = self._ids(env_ids)
    self._check_idle(ids)
    failures = []
    for i in ids:
      try:
        self._reset_world(i)
      except Exception as e:  # pylint: disable=broad-except
        failures.append((i, self.addresses[i], self._fault(i, e)))
    if failures:
      raise VectorEnvError(failures, "reset")
    self._start(ids, [{}] * len(ids), first=True)

  def send(self, actions: Mapping[str, Any], env_ids: Optional[Sequence[int]] = None) -> None:
    """Sends a step to the environments `env_ids` (all by default) without waiting.

    Args:
      actions: as for `step_async`, with a leading axis of len(env_ids): row k
        is the action of environment env_ids[k].
      env_ids: the environments to step; each must have nothing in flight or
        unreceived.

    Raises:
      ValueError: as `step_async`.
      VectorEnvError: an environment could not be sent to, or broke earlier
        (then nothing is sent); the others' steps went out all the same and
        stay in flight (`recv` gets them).
    """
    self._check_open()
    ids = self._ids(env_ids)
    self._check_idle(ids)
    self._start(ids, self._prepare_actions(actions, ids), first=True)

  def recv(self) -> Tuple[dm_env.TimeStep, np.ndarray]:
    """Waits until `batch_size` environments (or every pending one, if fewer) have answered.

    Returns:
      (timestep, env_ids): the batched TimeStep of the environments that
      answered first, and their ids (int32, ascending; row k is env_ids[k]).

    Raises:
      ValueError: no environment has a step in flight or unreceived.
      VectorEnvError: an environment failed; what the others answered is kept
        for the next `recv`, and what is still in flight stays in flight.
    """
    self._check_open()
    pending = len(self._in_flight) + len(self._pending) + len(self._ready)
    if pending == 0:
      raise ValueError("recv: nothing in flight; send() first")
    want = min(self.batch_size, pending)
    self._collect(lambda: len(self._ready) >= want, wait_all=False)
    ids = sorted(self._ready[:want])
    if ids == self._all_ids:
      ids = self._all_ids
    return self._take(ids), np.asarray(ids, np.int32)

  # -- the machinery --------------------------------------------------------------------

  def _ids(self, env_ids) -> List[int]:
    if env_ids is None:
      return list(range(self.num_envs))
    ids = [int(i) for i in np.asarray(env_ids).reshape(-1)]
    if len(set(ids)) != len(ids) or any(not 0 <= i < self.num_envs for i in ids):
      raise ValueError(f"env_ids must be distinct ids in [0, {self.num_envs}), not {ids}")
    return ids

  def _busy(self, ids=None) -> List[int]:
    ids = range(self.num_envs) if ids is None else ids
    return [i for i in ids if i in self._in_flight or i in self._pending or i in self._ready]

  def _check_idle(self, ids) -> None:
    busy = self._busy(ids)
    if busy:
      raise ValueError(f"environments {busy} have a step in flight or unreceived")

  def _check_open(self) -> None:
    if self._closed:
      raise ValueError("the VectorEnv is closed")

  def _prepare_actions(self, actions: Mapping[str, Any], ids: Sequence[int]) -> List[Dict[int, Any]]:
    """{name: batch} -> one {uid: value} per env, cast and shape-checked once per batch."""
    if self._nested and any(type(v) is not np.ndarray and isinstance(v, Mapping)
                            for v in actions.values()):
      actions = dm_env_flatten_utils.flatten_dict(actions, _SEP)
    n = len(ids)
    info = self._action_info
    per_uid = []
    for name, value in actions.items():
      try:
        uid, np_dtype, data_type, spec_shape = info[name]
      except KeyError:
        raise ValueError(f"unknown action {name!r}; the actions are {sorted(info)}") from None
      if type(value) is np.ndarray and value.dtype == np_dtype and np_dtype.kind in "biuf":
        array = value  # the spec's dtype already (the common case): nothing to cast
      else:
        _, array, shape = codec.prepare(value, data_type)
        array = array.reshape(shape)
      shape = array.shape
      if shape[:1] != (n,) or (shape[1:] != spec_shape and not dm_env_adaptor._shape_matches(  # pylint: disable=protected-access
          shape[1:], spec_shape)):
        raise ValueError(
            f"action {name!r} has shape {shape}; expected ({n}, "
            f"{', '.join(map(str, spec_shape))}) (a leading axis of one entry per "
            "environment stepped)".replace(", )", ")"))
      per_uid.append((uid, array))
    if len(per_uid) == 1:
      uid, array = per_uid[0]
      return [{uid: row} for row in array]
    return [{uid: array[k] for uid, array in per_uid} for k in range(n)]

  def _start(self, ids: Sequence[int], per_env: Sequence[Dict[int, Any]], first: bool) -> None:
    """Sends every step before waiting for any answer.

    first: the answers will be wanted as they come (`recv`), not all of them
    (`step_wait`, which reads them in the order sent and so needs no signal).
    """
    broken = [(i, self.addresses[i], self._broken[i]) for i in ids if self._broken[i] is not None]
    if broken:
      raise VectorEnvError(broken, "broke earlier (close and make a new VectorEnv)")
    slots, requested = self._slots, self._requested
    out_ok = DECODES_INTO
    failures = []
    for i, actions in zip(ids, per_env):
      if self._autoreset == "reset" and self._state[i] not in (_RUNNING, _INTERRUPTED_BY_RESET):
        try:
          self._reset_world(i)
        except Exception as e:  # pylint: disable=broad-except
          failures.append((i, self.addresses[i], self._fault(i, e)))
          continue
      if not self._pipelined[i]:
        self._pending[i] = actions
        continue
      conn = self._connections[i]
      # Over gRPC our Connection runs on_ready only once finish_step reads the
      # answer (grpc's Python API reads a stream when asked), so only a
      # connection known to signal (the shared-memory channel) is given one.
      signals = self._signals[i] if first else False
      self._in_flight[i] = (out_ok, signals)
      on_ready = self._on_ready[i] if signals is not False else None
      try:
        if out_ok:
          conn.start_step(actions, requested, out=slots.rows[i], on_ready=on_ready)
        else:
          conn.start_step(actions, requested, zero_copy=True, on_ready=on_ready)
      except Exception as e:  # pylint: disable=broad-except
        del self._in_flight[i]
        failures.append((i, self.addresses[i], self._fault(i, e)))
        continue
      if signals is None:  # decided at the first step
        signals = self._signals[i] = _signals_readiness(conn)
        self._in_flight[i] = (out_ok, signals)
    if failures:  # the others' steps went out all the same
      raise VectorEnvError(failures, "send")

  def _reset_world(self, i: int) -> None:
    response = self._connections[i].send(dm_env_rpc_pb2.ResetRequest())
    specs = self._template._dm_env_rpc_specs  # pylint: disable=protected-access
    if not isinstance(response, dm_env_rpc_pb2.ResetResponse):
      raise RuntimeError(f"Unexpected response type: {type(response)}")
    if response.specs != specs:
      raise RuntimeError("Environment changed spec after reset: "
                         + _spec_difference(specs, response.specs))
    self._state[i] = _INTERRUPTED_BY_RESET

  def _fault(self, i: int, e: BaseException) -> BaseException:
    """Records what an environment's failure means for its connection; returns e."""
    if not isinstance(e, _ANSWERED):
      self._broken[i] = e
    return e

  def _collect(self, done: Callable[[], bool], *, wait_all: bool,
               only: Optional[Sequence[int]] = None) -> None:
    """Collects answers until done(); raises VectorEnvError for the failures.

    wait_all: on a failure, keep collecting until nothing is in flight, then
    drop every unreturned result (step_wait); otherwise raise at once, keeping
    the results for later.
    """
    if wait_all and not self._pending and not any(s for _, s in self._in_flight.values()):
      # step_wait's batch, sent without signals: read the answers in the order sent.
      for i in list(self._in_flight):
        self._finish_pipelined(i)
    # Fallback connections answer when asked, one after the other.
    for i in list(self._pending):
      if only is not None and i not in only:
        continue
      actions = self._pending.pop(i)
      try:
        self._finish(i, self._step_by_message(i, actions))
      except Exception as e:  # pylint: disable=broad-except
        self._errors[i] = self._fault(i, e)
      if self._errors and not wait_all:
        break
    while not done() and not (self._errors and not wait_all) and self._in_flight:
      # Answers that have signalled first, then the oldest request on a
      # connection that does not signal (its answer is read when asked, and
      # its request went out with the others), else wait for a signal.
      try:
        self._finish_pipelined(self._woken.get_nowait())
        continue
      except queue.Empty:
        pass
      quiet = next((i for i, (_, signals) in self._in_flight.items() if not signals), None)
      self._finish_pipelined(quiet if quiet is not None else self._woken.get())
    if self._errors and not wait_all:
      # Whatever else has already answered is taken in too, without waiting.
      while True:
        try:
          i = self._woken.get_nowait()
        except queue.Empty:
          break
        self._finish_pipelined(i)
    if self._errors:
      failures = [(i, self.addresses[i], e) for i, e in self._errors.items()]
      self._errors = {}
      if wait_all:
        self._ready = []
      raise VectorEnvError(failures)

  def _finish_pipelined(self, i: int) -> None:
    if i not in self._in_flight:
      return  # a late wake-up: a gRPC stream runs on_ready when finish_step reads

    decoded_into, _ = self._in_flight.pop(i)
    try:
      state, by_uid = self._connections[i].finish_step()
      self._finish(i, (state, by_uid), decoded_into)
    except Exception as e:  # pylint: disable=broad-except
      self._errors[i] = self._fault(i, e)

  def _step_by_message(self, i: int, actions: Dict[int, Any]):
    response = self._connections[i].send(dm_env_rpc_pb2.StepRequest(
        requested_observations=self._requested,
        actions={uid: tensor_utils.pack_tensor(value) for uid, value in actions.items()}))
    if not isinstance(response, dm_env_rpc_pb2.StepResponse):
      raise RuntimeError(f"Unexpected response type: {type(response)}")
    return response.state, {uid: tensor_utils.unpack_tensor(tensor)
                            for uid, tensor in response.observations.items()}

  def _finish(self, i: int, answer, decoded_into: bool = False) -> None:
    """Checks one environment's answer and writes it into row i of the slots."""
    state, by_uid = answer
    slots = self._slots
    if by_uid.keys() != self._requested_set:
      self._check_answer(by_uid)
    fixed = self._fixed
    if decoded_into:  # the codec checked and wrote the fixed ones into their rows
      if self._loose:
        loose = {uid: by_uid[uid] for uid in self._loose}
        self._observations.check_observations(loose)  # as DmEnvAdaptor checks
        self._other[i] = loose
    else:
      self._observations.check_observations(by_uid)  # dtype and shape, as DmEnvAdaptor checks
      observations = slots.observations
      loose = {}
      for uid, value in by_uid.items():
        if uid in fixed:
          observations[uid][i] = value
        else:
          loose[uid] = value
      self._other[i] = loose
    self._step_type[i] = _step_type(self._state[i], state)
    self._state[i] = state
    self._ready.append(i)

  def _check_answer(self, by_uid) -> None:
    missing = [self._names[uid] for uid in self._requested if uid not in by_uid]
    if missing:
      raise ValueError(f"the answer lacks requested observations {missing}")

  def _new_slots(self) -> _Slots:
    return _Slots(self.num_envs, self._fixed, rows=DECODES_INTO and any(self._pipelined))

  def _take(self, ids: Sequence[int]) -> dm_env.TimeStep:
    """Removes `ids` from the ready list; returns their batched TimeStep, rows in `ids`' order."""
    slots = self._slots
    if ids is self._all_ids:  # every environment: the slots themselves
      self._ready = []
      arrays = slots.observations
      types = self._step_type
      states = self._state
      if self._copy:  # the caller keeps these; the next steps write into new ones
        self._slots = self._new_slots()
    else:
      taken = set(ids)
      self._ready = [i for i in self._ready if i not in taken]
      index = np.asarray(ids, np.intp)
      arrays = {uid: np.take(a, index, axis=0) for uid, a in slots.observations.items()}
      types = [self._step_type[i] for i in ids]
      states = [self._state[i] for i in ids]
    step_type = np.array(types, np.int32)

    def column(uid, shown):
      if uid in self._fixed:
        return arrays[uid].copy() if shown else arrays[uid]
      return _stack([self._other[i][uid] for i in ids])

    observations = {}
    for uid, name, fixed in self._shown_info:
      observations[name] = arrays[uid] if fixed else _stack([self._other[i][uid] for i in ids])
    # The adaptor's reward and discount rules, for all rows at once.
    if self._reward_uid is not None:
      reward = column(self._reward_uid, self._reward_shown)
      if _FIRST in types:
        reward[step_type == _FIRST] = 0  # DmEnvAdaptor: None on a FIRST step
    else:
      reward = np.zeros((len(ids),) + self._reward_layout[0], self._reward_layout[1])
    if self._discount_uid is not None:
      discount = column(self._discount_uid, False)
    else:
      # 0 when an episode TERMINATED, else 1 (None on a FIRST step for DmEnvAdaptor).
      discount = np.ones((len(ids),) + self._discount_layout[0], self._discount_layout[1])
      if _LAST in types:
        discount[(step_type == _LAST) & (np.asarray(states) == _TERMINATED)] = 0
    if self._unflatten:
      observations = dm_env_flatten_utils.unflatten_dict(observations, _SEP)
    return dm_env.TimeStep(step_type, reward, discount, observations)

  def _drain_and_discard(self) -> None:
    """Collects every answer in flight and drops it (and any error)."""
    self._pending.clear()
    while self._in_flight:
      quiet = next((i for i, (_, signals) in self._in_flight.items() if not signals), None)
      self._finish_pipelined(quiet if quiet is not None else self._woken.get())
    self._errors = {}
    self._ready = []

  # -- closing ------------------------------------------------------------------------------

  def close(self) -> None:
    """Leaves every world (destroying those it created) and closes the connections it made.

    Steps in flight are collected first (a broken connection's at once).
    Idempotent; errors of environments already gone are ignored.
    """
    if self._closed:
      return
    self._closed = True
    try:
      self._drain_and_discard()
    finally:
      for i, env in enumerate(self._envs):
        owns_connection, world = self._owned[i]
        conn = self._connections[i]
        if self._broken[i] is None:
          try:
            env.close()  # LeaveWorldRequest
            if world is not None:
              conn.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
          except Exception:  # pylint: disable=broad-except
            pass  # the server is gone or refused: the stream ends below all the same
        if owns_connection:
          try:
            conn.close()
          except Exception:  # pylint: disable=broad-except
            pass

  def __enter__(self) -> "VectorEnv":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _step_type(last: int, state: int) -> int:
  """The dm_env StepType of an answer in `state` after one in `last` (DmEnvAdaptor's rule)."""
  if state == _RUNNING:
    return _MID if last == _RUNNING else _FIRST
  if last == _RUNNING:
    return _LAST
  raise RuntimeError("Environment transitioned from {} to {}".format(
      dm_env_rpc_pb2.EnvironmentStateType.Name(
          _INTERRUPTED if last == _INTERRUPTED_BY_RESET else last),
      dm_env_rpc_pb2.EnvironmentStateType.Name(state)))


# The state an environment is in after a ResetRequest: its next RUNNING answer
# is FIRST (as DmEnvAdaptor.reset does), and "reset" autoreset need not reset again.
_INTERRUPTED_BY_RESET = -1


def _stack(values: List[Any]) -> np.ndarray:
  """Stacks one observation of several environments; an object array if shapes differ."""
  try:
    return np.stack([np.asarray(v) for v in values])
  except ValueError:
    result = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
      result[k] = value
    return result


def _signals_readiness(conn) -> bool:
  """Whether `conn` runs a step's `on_ready` as soon as the answer arrives.

  Our Connection does on its shared-memory channel.  On gRPC it runs it only
  when `finish_step` reads the answer, since grpc's Python API receives a
  stream's next message only when asked for it.
  """
  return getattr(conn, "transport", None) == "shm"


class _Made(NamedTuple):
  env: dm_env_adaptor.DmEnvAdaptor
  connection: Any
  owns_connection: bool
  world: str


def _undo(made: Sequence[_Made]) -> None:
  """Leaves and destroys the worlds made, and closes the connections opened; never raises."""
  for m in made:
    try:
      m.env.close()
      m.connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=m.world))
    except Exception:  # pylint: disable=broad-except
      pass
    if m.owns_connection:
      try:
        m.connection.close()
      except Exception:  # pylint: disable=broad-except
        pass


def create_and_join_world(
    targets: Sequence[Target],
    create_world_settings: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]],
    join_world_settings: Union[Mapping[str, Any], Sequence[Mapping[str, Any]]],
    *,
    credentials=None,
    timeout: Optional[float] = None,
    transport: Optional[str] = None,
    batch_size: Optional[int] = None,
    copy: bool = True,
    autoreset: str = "step",
    **adaptor_kwargs,
) -> VectorEnv:
  """Connects to N servers, creates and joins a world on each, returns a `VectorEnv`.

  Args:
    targets: for each environment, a server address ("host:port": a
      connection is opened, and closed by `VectorEnv.close`) or a connection
      you made (left open).  The same address may appear several times (one
      world per entry).
    create_world_settings: one mapping for all, or a sequence of one per
      environment (e.g. distinct seeds); as for
      `dm_env_adaptor.create_and_join_world`.
    join_world_settings: likewise.
    credentials: gRPC channel credentials for addresses (default: local
      credentials, as `connection.create_secure_channel_and_connect`; e.g.
      `grpc.ssl_channel_credentials(...)` for servers on other hosts).
    timeout: seconds to wait for each channel to be ready (None: for ever).
    transport: "auto", "grpc" or "shm", as for `connection.Connection`.
    batch_size, copy, autoreset: see `VectorEnv`.
    **adaptor_kwargs: `requested_observations`, `nested_tensors`, as for
      `DmEnvAdaptor`.

  Returns:
    The VectorEnv.  If any environment fails to connect, create or join
    (`VectorEnvError` naming it), or its specs differ from the first one's
    (ValueError naming it), everything made so far is undone first.
  """
  targets = list(targets)
  n = len(targets)
  if n == 0:
    raise ValueError("create_and_join_world: no targets")
  creates = _per_env(create_world_settings, n, "create_world_settings")
  joins = _per_env(join_world_settings, n, "join_world_settings")
  addresses = [_describe(t) for t in targets]
  made: List[_Made] = []
  try:
    for i, target in enumerate(targets):
      conn, owns = target, False
      try:
        if isinstance(target, str):
          kwargs = {"timeout": timeout, "transport": transport}
          if credentials is not None:
            kwargs["credentials"] = credentials
          conn = connection_lib.create_secure_channel_and_connect(target, **kwargs)
          owns = True
        env, world = dm_env_adaptor.create_and_join_world(conn, creates[i], joins[i],
                                                          **adaptor_kwargs)
      except Exception as e:  # pylint: disable=broad-except
        if owns:
          conn.close()
        raise VectorEnvError([(i, addresses[i], e)], "could not create and join a world") from e
      made.append(_Made(env, conn, owns, world))
    return VectorEnv([m.env for m in made], addresses=addresses, batch_size=batch_size,
                     copy=copy, autoreset=autoreset,
                     _owned=[(m.owns_connection, m.world) for m in made])
  except BaseException:
    _undo(made)
    raise
