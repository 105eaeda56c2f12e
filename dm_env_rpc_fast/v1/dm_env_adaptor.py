"""A `dm_env.Environment` backed by a dm_env_rpc connection.

`DmEnvAdaptor` turns `reset()` / `step(actions)` into dm_env_rpc requests on a
connection that has already joined a world, and the responses into
`dm_env.TimeStep`s.  The helpers `create_world`, `join_world` and
`create_and_join_world` do the set-up.

Steps take the fast path when the connection's class offers `send_step` (our
`Connection` and `AsyncConnection`'s synchronous users do): actions are cast and
checked against their specs in numpy and encoded straight to wire bytes, and
observations are decoded straight from the response bytes.  With any other
connection (dm-env-rpc's own, a test double) steps go through `StepRequest` and
`StepResponse` messages.  Both paths check the same things and give the same
results.
"""
import enum
from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import dm_env
import immutabledict
import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import connection as dm_env_rpc_connection
from dm_env_rpc_fast.v1 import dm_env_flatten_utils
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_utils
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import spec_manager
from dm_env_rpc_fast.v1 import tensor_utils

DEFAULT_REWARD_KEY = "reward"
DEFAULT_DISCOUNT_KEY = "discount"
DEFAULT_KEY_SEPARATOR = "."

_RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING
_TERMINATED = dm_env_rpc_pb2.EnvironmentStateType.TERMINATED
_INTERRUPTED = dm_env_rpc_pb2.EnvironmentStateType.INTERRUPTED

_SPECS_CHANGED = 'Environment changed spec after reset.\nbefore: "{specs}"\nafter: "{new_specs}"'


def _expect(response, expected_type):
  """Returns `response` if it is an `expected_type`, else raises RuntimeError."""
  if isinstance(response, expected_type):
    return response
  raise RuntimeError(
      f"Unexpected response type: {type(response)}, expected {expected_type}")


class AutoObservations(enum.Flag):
  """Ask for every observation the world offers, optionally with reward/discount."""

  REQUEST_REGULAR_OBSERVATIONS = 0
  REQUEST_REWARD = 1
  REQUEST_DISCOUNT = 2
  REQUEST_ALL_OBSERVATIONS = (
      REQUEST_REGULAR_OBSERVATIONS | REQUEST_REWARD | REQUEST_DISCOUNT)


def _shape_matches(shape, spec_shape) -> bool:
  # A spec dimension below zero accepts any size.
  return shape == spec_shape or len(shape) == len(spec_shape) and all(
      want < 0 or got == want for got, want in zip(shape, spec_shape))


def _shape_error(name, shape, spec_shape) -> ValueError:
  return ValueError(
      f"Received dm_env_rpc tensor {name} with shape {np.asarray(shape)} but "
      f"spec has shape {np.asarray(spec_shape)}.")


class _FastSpecs:
  """The per-UID facts the byte-level step path checks, computed once."""

  def __init__(self, manager: spec_manager.SpecManager):
    self.uid = {}
    self.name = {}
    self.shape = {}
    self.dtype = {}      # the spec's DataType, for casting actions
    self.np_dtype = {}   # the numpy dtype a decoded value must have (any width for str)
    for uid, spec in manager.specs_by_uid.items():
      self.uid[spec.name] = uid
      self.name[uid] = spec.name
      self.shape[uid] = tuple(spec.shape)
      self.dtype[uid] = spec.dtype
      self.np_dtype[uid] = tensor_utils.data_type_to_np_type(spec.dtype)
    # What check_observations needs of each UID, in one lookup.
    self.expected = {uid: (self.name[uid], self.np_dtype[uid].type, self.shape[uid])
                     for uid in self.name}

  def prepare_actions(self, actions: Mapping[str, Any]):
    """{name: value} -> {uid: array}, cast and shape-checked like `SpecManager.pack`."""
    prepared = {}
    for name, value in actions.items():
      uid = self.uid[name]
      if type(value) in _NUMPY_VALUES and value.dtype == self.np_dtype[uid] and value.dtype.kind in "biuf":
        # Already the spec's numeric dtype: nothing to cast (the common case).
        shape, array = value.shape, value
      else:
        _, array, shape = codec.prepare(value, self.dtype[uid])
        array = array.reshape(shape)
      if not _shape_matches(shape, self.shape[uid]):
        raise _shape_error(name, shape, self.shape[uid])
      prepared[uid] = array
    return prepared

  def check_observations(self, observations: Mapping[int, Any]):
    """{uid: value} -> {name: value}, checked like `SpecManager.unpack`."""
    named = {}
    expected = self.expected
    for uid, value in observations.items():
      name, spec_type, spec_shape = expected[uid]
      dtype = getattr(value, "dtype", None)
      np_type = dtype.type if dtype is not None else _decoded_type(value)
      if np_type is not spec_type:
        raise ValueError(
            f"Received dm_env_rpc tensor {name} with dtype {np.dtype(np_type)} but spec "
            f"has dtype {self.np_dtype[uid]}.")
      shape = getattr(value, "shape", ())
      if shape != spec_shape and not _shape_matches(shape, spec_shape):
        raise _shape_error(name, shape, spec_shape)
      named[name] = value
    return named


_NUMPY_VALUES = frozenset((np.ndarray, np.float32, np.float64, np.int8, np.int32, np.int64,
                           np.uint8, np.uint32, np.uint64, np.bool_))


def _decoded_type(value):
  """The numpy scalar type of a value as `unpack_tensor` returns it."""
  dtype = getattr(value, "dtype", None)
  if dtype is not None:
    return dtype.type
  if isinstance(value, str):
    return np.str_
  return np.object_


class DmEnvAdaptor(dm_env.Environment):
  """A dm_env.Environment whose world lives behind a dm_env_rpc connection.

  `extensions` maps attribute names to objects (protocol extensions such as
  `properties.PropertiesExtension`) that become attributes of the adaptor.
  """

  _HAS_DYNAMIC_ATTRIBUTES = True

  def __init__(
      self,
      connection: dm_env_rpc_connection.ConnectionType,
      specs: dm_env_rpc_pb2.ActionObservationSpecs,
      requested_observations: Optional[
          Union[Sequence[str], AutoObservations]
      ] = AutoObservations.REQUEST_REGULAR_OBSERVATIONS,
      nested_tensors: bool = True,
      extensions: Mapping[str, Any] = immutabledict.immutabledict(),
      zero_copy: bool = False,
  ):
    """Wraps a connection that has joined a world.

    Args:
      connection: a connection after a successful JoinWorldRequest.
      specs: the world's ActionObservationSpecs (from the JoinWorldResponse).
      requested_observations: the names of the observations each step asks
        for, or an `AutoObservations` flag for all of them.  By default every
        observation except `reward` and `discount`, which are still requested
        when offered, to compute the TimeStep's reward and discount.
      nested_tensors: flatten nested action dicts and unflatten observation
        names at `DEFAULT_KEY_SEPARATOR`.
      extensions: {attribute name: object} to attach to the adaptor.
      zero_copy: on the fast step path, return fixed-width observations
        (float32, float64, int8, uint8) as read-only views of the response
        bytes instead of writable copies.  A view keeps its response alive.

    Raises:
      ValueError: an observation named in `requested_observations` is not in
        the specs, a spec has more than one variable dimension or names
        repeat, or an extension name clashes with an attribute.
    """
    self._dm_env_rpc_specs = specs
    self._action_specs = spec_manager.SpecManager(specs.actions)
    self._observation_specs = spec_manager.SpecManager(specs.observations)
    self._connection = connection
    self._last_state = _TERMINATED
    self._nested_tensors = nested_tensors
    self._zero_copy = bool(zero_copy)

    if requested_observations is None:
      requested_observations = AutoObservations.REQUEST_REGULAR_OBSERVATIONS
    available = self._observation_specs.names()
    if isinstance(requested_observations, AutoObservations):
      self._is_reward_requested = AutoObservations.REQUEST_REWARD in requested_observations
      self._is_discount_requested = AutoObservations.REQUEST_DISCOUNT in requested_observations
      wanted = set(available)
    else:
      self._is_reward_requested = DEFAULT_REWARD_KEY in requested_observations
      self._is_discount_requested = DEFAULT_DISCOUNT_KEY in requested_observations
      wanted = set(requested_observations)

    # Reward and discount travel as observations when the world offers them.
    self._default_reward_spec = None
    self._default_discount_spec = None
    if DEFAULT_REWARD_KEY in available:
      self._default_reward_spec = dm_env_utils.tensor_spec_to_dm_env_spec(
          self._observation_specs.name_to_spec(DEFAULT_REWARD_KEY))
      wanted.add(DEFAULT_REWARD_KEY)
    if DEFAULT_DISCOUNT_KEY in available:
      self._default_discount_spec = dm_env_utils.tensor_spec_to_dm_env_spec(
          self._observation_specs.name_to_spec(DEFAULT_DISCOUNT_KEY))
      wanted.add(DEFAULT_DISCOUNT_KEY)

    unsupported = wanted.difference(available)
    if unsupported:
      raise ValueError(f"Unsupported observations requested: {unsupported}")
    self._requested_observation_uids = sorted(
        self._observation_specs.name_to_uid(name) for name in wanted)

    # The byte-level path, when the connection's class offers it (a mock's
    # auto-created attributes do not count).
    self._send_step = None
    if getattr(type(connection), "send_step", None) is not None:
      self._send_step = connection.send_step
      self._fast_actions = _FastSpecs(self._action_specs)
      self._fast_observations = _FastSpecs(self._observation_specs)

    self._extension_names = extensions.keys()
    for name, extension in extensions.items():
      if hasattr(self, name):
        raise ValueError(f'DmEnvAdaptor already has attribute "{name}"!')
      setattr(self, name, extension)

  def reset(self):
    """Implements dm_env.Environment.reset: resets the world and returns its FIRST step."""
    if self._connection is None:
      raise ValueError("Cannot reset environment after connection is closed.")
    response = _expect(
        self._connection.send(dm_env_rpc_pb2.ResetRequest()),
        dm_env_rpc_pb2.ResetResponse)
    if self._dm_env_rpc_specs != response.specs:
      raise RuntimeError(_SPECS_CHANGED.format(
          specs=self._dm_env_rpc_specs, new_specs=response.specs))
    self._last_state = _INTERRUPTED
    return self.step({})

  def step(self, actions):
    """Implements dm_env.Environment.step.

    Args:
      actions: {name: value} (nested dicts when `nested_tensors`), cast to
        each action spec's dtype.

    Returns:
      A dm_env.TimeStep.  Observations are writable arrays (int8 and uint8:
      read-only views) unless the adaptor was made with `zero_copy=True`.

    Raises:
      ValueError: the connection is closed, an action is unknown or has the
        wrong shape, or an observation disagrees with its spec.
      DmEnvRpcError: the server answered with an error.
      RuntimeError: the world moved between states in a way the protocol
        does not allow.
    """
    if self._nested_tensors:
      actions = dm_env_flatten_utils.flatten_dict(actions, DEFAULT_KEY_SEPARATOR)
    if self._connection is None:
      raise ValueError("Cannot step environment, connection is closed.")
    if self._send_step is not None:
      state, by_uid = self._send_step(
          self._fast_actions.prepare_actions(actions),
          self._requested_observation_uids,
          zero_copy=self._zero_copy)
      observations = self._fast_observations.check_observations(by_uid)
    else:
      response = _expect(
          self._connection.send(dm_env_rpc_pb2.StepRequest(
              requested_observations=self._requested_observation_uids,
              actions=self._action_specs.pack(actions))),
          dm_env_rpc_pb2.StepResponse)
      state = response.state
      observations = self._observation_specs.unpack(response.observations)
    return self._time_step(state, observations)

  def _time_step(self, state, observations) -> dm_env.TimeStep:
    last = self._last_state
    if state == _RUNNING:
      step_type = dm_env.StepType.MID if last == _RUNNING else dm_env.StepType.FIRST
    elif last == _RUNNING:
      step_type = dm_env.StepType.LAST
    else:
      raise RuntimeError("Environment transitioned from {} to {}".format(
          dm_env_rpc_pb2.EnvironmentStateType.Name(last),
          dm_env_rpc_pb2.EnvironmentStateType.Name(state)))
    self._last_state = state

    reward = self.reward(state=state, step_type=step_type, observations=observations)
    discount = self.discount(state=state, step_type=step_type, observations=observations)
    if not self._is_reward_requested:
      observations.pop(DEFAULT_REWARD_KEY, None)
    if not self._is_discount_requested:
      observations.pop(DEFAULT_DISCOUNT_KEY, None)
    if self._nested_tensors:
      observations = dm_env_flatten_utils.unflatten_dict(observations, DEFAULT_KEY_SEPARATOR)
    return dm_env.TimeStep(step_type, reward, discount, observations)

  def reward(self, state, step_type, observations):
    """The TimeStep's reward; override for a different reward function.

    Args:
      state: the EnvironmentStateType value of the step.
      step_type: the dm_env StepType of the step.
      observations: {name: value}, flat, reward and discount included.

    Returns:
      None on a FIRST step, else the `reward` observation when the world
      offers one, else 0.0.
    """
    if step_type == dm_env.StepType.FIRST:
      return None
    if self._default_reward_spec:
      return observations[DEFAULT_REWARD_KEY]
    return 0.0

  def discount(self, state, step_type, observations):
    """The TimeStep's discount; override for a different discount function.

    Args:
      state: the EnvironmentStateType value of the step.
      step_type: the dm_env StepType of the step.
      observations: {name: value}, flat, reward and discount included.

    Returns:
      The `discount` observation when the world offers one (on every step);
      otherwise None on a FIRST step, 1.0 while RUNNING or INTERRUPTED, else
      0.0.
    """
    if self._default_discount_spec:
      return observations[DEFAULT_DISCOUNT_KEY]
    if step_type == dm_env.StepType.FIRST:
      return None
    if state in (_RUNNING, _INTERRUPTED):
      return 1.0
    return 0.0

  def observation_spec(self):
    """Implements dm_env.Environment.observation_spec (the requested ones)."""
    specs = {
        self._observation_specs.uid_to_name(uid): dm_env_utils.tensor_spec_to_dm_env_spec(
            self._observation_specs.uid_to_spec(uid))
        for uid in self._requested_observation_uids
    }
    if not self._is_reward_requested:
      specs.pop(DEFAULT_REWARD_KEY, None)
    if not self._is_discount_requested:
      specs.pop(DEFAULT_DISCOUNT_KEY, None)
    if self._nested_tensors:
      return dm_env_flatten_utils.unflatten_dict(specs, DEFAULT_KEY_SEPARATOR)
    return specs

  def action_spec(self):
    """Implements dm_env.Environment.action_spec."""
    specs = dm_env_utils.dm_env_spec(self._action_specs)
    if self._nested_tensors:
      return dm_env_flatten_utils.unflatten_dict(specs, DEFAULT_KEY_SEPARATOR)
    return specs

  def reward_spec(self):
    """Implements dm_env.Environment.reward_spec."""
    return self._default_reward_spec or super().reward_spec()

  def discount_spec(self):
    """Implements dm_env.Environment.discount_spec."""
    return self._default_discount_spec or super().discount_spec()

  def close(self):
    """Leaves the world and drops the connection (which stays open) and extensions."""
    for name in self._extension_names:
      setattr(self, name, None)
    if self._connection is not None:
      self._connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
      self._connection = None
      self._send_step = None


def _pack_settings(settings: Mapping[str, Any]):
  flat = dm_env_flatten_utils.flatten_dict(settings, DEFAULT_KEY_SEPARATOR, strict=False)
  return {
      key: value if isinstance(value, dm_env_rpc_pb2.Tensor) else tensor_utils.pack_tensor(value)
      for key, value in flat.items()
  }


def create_world(
    connection: dm_env_rpc_connection.ConnectionType,
    create_world_settings: Mapping[str, Any],
) -> str:
  """Creates a world and returns its name.

  Args:
    connection: a connection to a dm_env_rpc server.
    create_world_settings: {name: value}; nested dicts are flattened with
      `DEFAULT_KEY_SEPARATOR`; values are packed with `pack_tensor` unless
      they are Tensor messages already.

  Returns:
    The new world's name.

  Raises:
    RuntimeError: the server answered with something other than a
      CreateWorldResponse.
    DmEnvRpcError: the server answered with an error.
  """
  response = _expect(
      connection.send(dm_env_rpc_pb2.CreateWorldRequest(
          settings=_pack_settings(create_world_settings))),
      dm_env_rpc_pb2.CreateWorldResponse)
  return response.world_name


def join_world(
    connection: dm_env_rpc_connection.ConnectionType,
    world_name: str,
    join_world_settings: Mapping[str, Any],
    **adaptor_kwargs,
) -> DmEnvAdaptor:
  """Joins a world and returns a DmEnvAdaptor over it.

  Args:
    connection: a connection to a dm_env_rpc server.
    world_name: the world to join.
    join_world_settings: as `create_world_settings` in `create_world`.
    **adaptor_kwargs: passed to DmEnvAdaptor (e.g. `zero_copy=True`).

  Returns:
    The adaptor.  If making it fails with ValueError, the world is left
    before the error propagates.

  Raises:
    RuntimeError: the server answered with something other than a
      JoinWorldResponse.
    DmEnvRpcError: the server answered with an error.
  """
  response = _expect(
      connection.send(dm_env_rpc_pb2.JoinWorldRequest(
          world_name=world_name, settings=_pack_settings(join_world_settings))),
      dm_env_rpc_pb2.JoinWorldResponse)
  try:
    return DmEnvAdaptor(connection, response.specs, **adaptor_kwargs)
  except ValueError:
    connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
    raise


class DmEnvAndWorldName(NamedTuple):
  """What `create_and_join_world` returns."""

  env: DmEnvAdaptor
  world_name: str


def create_and_join_world(
    connection: dm_env_rpc_connection.ConnectionType,
    create_world_settings: Mapping[str, Any],
    join_world_settings: Mapping[str, Any],
    **adaptor_kwargs,
) -> DmEnvAndWorldName:
  """Creates a world, joins it and returns (adaptor, world name).

  Args:
    connection: a connection to a dm_env_rpc server.
    create_world_settings: see `create_world`.
    join_world_settings: see `join_world`.
    **adaptor_kwargs: passed to DmEnvAdaptor (e.g. `zero_copy=True`).

  Returns:
    A DmEnvAndWorldName.  If joining fails with DmEnvRpcError or ValueError,
    the new world is destroyed before the error propagates.
  """
  world_name = create_world(connection, create_world_settings)
  try:
    env = join_world(connection, world_name, join_world_settings, **adaptor_kwargs)
  except (error.DmEnvRpcError, ValueError):
    connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world_name))
    raise
  return DmEnvAndWorldName(env, world_name)
