"""Compliance tests for `Step`."""
import abc
import functools
import itertools

from absl.testing import absltest
import numpy as np

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_spec_utils
from dm_env_rpc_fast.v1 import tensor_utils

_RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING

# How the subtests of the bounds tests name the element pushed out of bounds.
_OUT_OF_BOUNDS_SUBTEST = {"min": "below_min_index", "max": "above_max_index"}


def _find_uid_not_in_set(uids):
  """Returns the smallest non-negative UID that is not in `uids`."""
  taken = set(uids)
  return next(uid for uid in itertools.count() if uid not in taken)


def _is_numeric_type(data_type):
  """True for DataTypes whose numpy type is a number (not bool, str, proto)."""
  if data_type == dm_env_rpc_pb2.DataType.PROTO:
    return False
  return np.issubdtype(tensor_utils.data_type_to_np_type(data_type), np.number)


def _concrete_shape(spec):
  """The spec's shape with each variable (negative) dimension taken as 1."""
  return tuple(1 if dim < 0 else dim for dim in spec.shape)


def _test_value(spec, dtype=None):
  """An array of the spec's shape, filled with a value the spec accepts.

  Numeric specs get their minimum (elementwise, when the bounds are arrays);
  others the default value of their type ('' or False).

  Args:
    spec: a `TensorSpec`.
    dtype: the numpy dtype of the result; None keeps the bound's or type's.

  Returns:
    A new, writable numpy array.
  """
  if _is_numeric_type(spec.dtype):
    fill = tensor_spec_utils.bounds(spec).min
  else:
    fill = tensor_utils.data_type_to_np_type(spec.dtype).type()
  return np.full(_concrete_shape(spec), fill, dtype=dtype)


def _test_tensor(spec, dtype=None):
  """A `Tensor` of `_test_value(spec, dtype)`."""
  return tensor_utils.pack_tensor(_test_value(spec, dtype))


def _values_out_of_bounds(spec, bound):
  """Yields (value, index): test values with one element beyond a bound.

  Each value is `_test_value(spec)` with the element at `index` set to the
  extreme of the dtype's range on the side of `bound`.  Elements whose bound
  already is that extreme cannot be pushed past it and are skipped.

  Args:
    spec: a numeric `TensorSpec`.
    bound: 'min' or 'max'.
  """
  if not spec.HasField(bound):
    return
  range_info = tensor_spec_utils.np_range_info(
      tensor_utils.data_type_to_np_type(spec.dtype))
  limits = getattr(tensor_spec_utils.bounds(spec), bound)
  extreme = getattr(range_info, bound)
  for index in np.ndindex(*_concrete_shape(spec)):
    limit = limits if np.isscalar(limits) else limits[index]
    beyond = extreme < limit if bound == "min" else extreme > limit
    if beyond:
      value = _test_value(spec)
      value[index] = extreme
      yield value, index


def _find_scalar_within_bounds(spec):
  """Returns one scalar every element of the spec accepts, or None."""
  if not _is_numeric_type(spec.dtype):
    return tensor_utils.data_type_to_np_type(spec.dtype).type()
  bounds = tensor_spec_utils.bounds(spec)
  highest_min = np.amax(bounds.min)
  lowest_max = np.amin(bounds.max)
  # Kept strict, as in dm-env-rpc: a spec pinned to one value is skipped.
  return highest_min if highest_min < lowest_max else None


def _step_before_test(test):
  """Runs one step (which starts the sequence) before `test`.

  The first step's actions are ignored by the protocol, so the tests of action
  validation start only once a sequence is running.
  """
  @functools.wraps(test)
  def wrapper(self, *args, **kwargs):
    self.assertEqual(self.step().state, _RUNNING)
    return test(self, *args, **kwargs)
  return wrapper


class Step(absltest.TestCase, metaclass=abc.ABCMeta):
  """Checks how a server answers Step requests.

  A subclass provides `connection` (a Connection already joined to a world)
  and `specs` (the specs of the JoinWorldResponse); it may override
  `required_actions`.  Each test should start on a freshly joined world, as
  the first step of a sequence ignores its actions.
  """

  @property
  @abc.abstractmethod
  def connection(self):
    """The dm_env_rpc Connection, already joined to a world."""

  @property
  @abc.abstractmethod
  def specs(self):
    """The `ActionObservationSpecs` from the JoinWorldResponse."""

  @property
  def observation_uids(self):
    """The set of observation UIDs in `specs`."""
    return set(self.specs.observations.keys())

  @property
  def action_uids(self):
    """The set of action UIDs in `specs`."""
    return set(self.specs.actions.keys())

  @property
  def required_actions(self):
    """{uid: Tensor}: actions sent with every step."""
    return {}

  @property
  def numeric_actions(self):
    """{uid: TensorSpec} of the actions with numeric dtypes."""
    return {uid: spec for uid, spec in self.specs.actions.items()
            if _is_numeric_type(spec.dtype)}

  @property
  def nonnumeric_actions(self):
    """{uid: TensorSpec} of the actions with bool, string or proto dtypes."""
    return {uid: spec for uid, spec in self.specs.actions.items()
            if not _is_numeric_type(spec.dtype)}

  def step(self, actions=None, **kwargs):
    """Sends a step with `required_actions` updated by `actions`.

    Args:
      actions: {uid: Tensor} to send besides (or instead of) the required
        actions.
      **kwargs: other `StepRequest` fields, e.g. requested_observations.

    Returns:
      The StepResponse.
    """
    all_actions = {**self.required_actions, **(actions or {})}
    return self.connection.send(
        dm_env_rpc_pb2.StepRequest(actions=all_actions, **kwargs))

  def _expect_error(self, **step_kwargs):
    """Asserts that a step with `step_kwargs` is answered with an error."""
    with self.assertRaises(error.DmEnvRpcError):
      self.step(**step_kwargs)

  def _assert_all(self, holds, value, what):
    """Fails unless every element of `holds` is true; names the others."""
    holds = np.asarray(holds)
    if not holds.all():
      offending = np.asarray(value)[~holds] if holds.ndim else value
      self.fail(f"observation values {offending} are {what}")

  # Observations.

  def test_no_observations_returned_if_not_requested(self):
    self.assertEmpty(self.step().observations)

  def test_requested_observations_are_returned(self):
    response = self.step(requested_observations=self.observation_uids)
    self.assertEqual(self.observation_uids, set(response.observations.keys()))

  def test_cannot_request_invalid_observation_uid(self):
    bad_uid = _find_uid_not_in_set(self.observation_uids)
    # The error must name the offending UID.
    with self.assertRaisesRegex(error.DmEnvRpcError, str(bad_uid)):
      self.step(requested_observations=[bad_uid])

  def test_all_observation_dtypes_match_spec_dtypes(self):
    response = self.step(requested_observations=self.observation_uids)
    for uid, observation in response.observations.items():
      spec = self.specs.observations[uid]
      with self.subTest(uid=uid, name=spec.name):
        self.assertEqual(tensor_utils.data_type_to_np_type(spec.dtype),
                         tensor_utils.get_tensor_type(observation))

  def test_all_numerical_observations_in_range(self):
    numeric_uids = [uid for uid, spec in self.specs.observations.items()
                    if _is_numeric_type(spec.dtype)]
    response = self.step(requested_observations=numeric_uids)
    for uid, observation in response.observations.items():
      spec = self.specs.observations[uid]
      with self.subTest(uid=uid, name=spec.name):
        value = tensor_utils.unpack_tensor(observation)
        bounds = tensor_spec_utils.bounds(spec)
        if spec.max.WhichOneof("payload") is not None:
          self._assert_all(value <= bounds.max, value, f"above max {bounds.max}")
        if spec.min.WhichOneof("payload") is not None:
          self._assert_all(value >= bounds.min, value, f"below min {bounds.min}")

  def test_duplicated_requested_observations_are_redundant(self):
    response = self.step(
        requested_observations=list(self.observation_uids) * 2)
    self.assertEqual(self.observation_uids, set(response.observations.keys()))

  def test_can_request_each_observation_individually(self):
    for uid in self.observation_uids:
      spec = self.specs.observations[uid]
      with self.subTest(uid=uid, name=spec.name):
        response = self.step(requested_observations=[uid])
        self.assertEqual([uid], list(response.observations.keys()))

  # Actions.

  def test_first_step_actions_are_ignored(self):
    bad_uid = _find_uid_not_in_set(self.action_uids)
    self.step(actions={bad_uid: tensor_utils.pack_tensor(0)})

  @_step_before_test
  def test_can_send_each_action_individually(self):
    for uid, spec in self.specs.actions.items():
      with self.subTest(uid=uid, name=spec.name):
        self.step(actions={uid: _test_tensor(spec)})

  @_step_before_test
  def test_cannot_send_wrong_numeric_type_action(self):
    for uid, spec in self.numeric_actions.items():
      with self.subTest(uid=uid, name=spec.name):
        np_type = tensor_utils.data_type_to_np_type(spec.dtype)
        wrong = np.float32 if np.issubdtype(np_type, np.float64) else np.float64
        self._expect_error(actions={uid: _test_tensor(spec, dtype=wrong)})

  @_step_before_test
  def test_cannot_send_wrong_type_to_nonnumeric_actions(self):
    for uid, spec in self.nonnumeric_actions.items():
      with self.subTest(uid=uid, name=spec.name):
        tensor = tensor_utils.pack_tensor(0, dtype=np.int32)
        tensor.shape[:] = _concrete_shape(spec)
        self._expect_error(actions={uid: tensor})

  @_step_before_test
  def test_cannot_send_invalid_action_uid(self):
    bad_uid = _find_uid_not_in_set(self.action_uids)
    self._expect_error(actions={bad_uid: tensor_utils.pack_tensor(0)})

  def _check_out_of_bounds_refused(self, bound):
    for uid, spec in self.numeric_actions.items():
      with self.subTest(uid=uid, name=spec.name):
        for value, index in _values_out_of_bounds(spec, bound):
          with self.subTest(**{_OUT_OF_BOUNDS_SUBTEST[bound]: index}):
            tensor = tensor_utils.pack_tensor(value, dtype=spec.dtype)
            tensor.shape[:] = _concrete_shape(spec)
            self._expect_error(actions={uid: tensor})

  @_step_before_test
  def test_cannot_send_action_below_min(self):
    self._check_out_of_bounds_refused("min")

  @_step_before_test
  def test_cannot_send_action_above_max(self):
    self._check_out_of_bounds_refused("max")

  @_step_before_test
  def test_cannot_send_action_with_wrong_shape(self):
    for uid, spec in self.specs.actions.items():
      with self.subTest(uid=uid, name=spec.name):
        tensor = _test_tensor(spec)
        tensor.shape.append(1)  # One dimension too many.
        self._expect_error(actions={uid: tensor})

  @_step_before_test
  def test_can_send_variable_dimension_tensor_action(self):
    for uid, spec in self.specs.actions.items():
      if not spec.shape:
        continue
      with self.subTest(uid=uid, name=spec.name):
        tensor = _test_tensor(spec)
        tensor.shape[0] = -1
        self.step(actions={uid: tensor})

  @_step_before_test
  def test_cannot_send_tensor_with_too_many_variable_dimensions(self):
    for uid, spec in self.specs.actions.items():
      if len(spec.shape) < 2:
        continue
      with self.subTest(uid=uid, name=spec.name):
        tensor = _test_tensor(spec)
        tensor.shape[0] = -1
        tensor.shape[1] = -1
        self._expect_error(actions={uid: tensor})

  @_step_before_test
  def test_can_send_broadcastable_actions(self):
    for uid, spec in self.specs.actions.items():
      with self.subTest(uid=uid, name=spec.name):
        scalar = _find_scalar_within_bounds(spec)
        if scalar is None:
          continue  # No single value satisfies every element's bounds.
        tensor = tensor_utils.pack_tensor(scalar, dtype=spec.dtype)
        tensor.shape[:] = _concrete_shape(spec)
        self.step(actions={uid: tensor})
