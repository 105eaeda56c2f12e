"""From dm_env specs to dm_env_rpc TensorSpecs, and the checks a step makes.

A dm_env spec may be one `specs.Array` or a nest of them in dicts, lists and
tuples.  dm_env_rpc's specs are flat maps of UID to named TensorSpec, so a
nest is flattened: each leaf is named by its path joined with the key
separator of dm_env_rpc's adaptor ("."), list and tuple positions by their
index.  Dict keys are taken in sorted order, so the same spec always gets the
same UIDs, counted from 1 in that order.  A lone, un-nested spec is named by
its own `name`, or "action" / "observation" when it has none.

A dimension of -1 means any size along that axis (dm_env_rpc's TensorSpec
rule): values are checked with that axis free, and the default action of
such a spec is empty along it.

Bounds that bound nothing are left out of the TensorSpec, so that every
client reads it: infinite float bounds, and an integer maximum equal to its
dtype's maximum (dm-env-rpc's adaptor turns a scalar integer spec from 0 into
a DiscreteArray of `max + 1` values, computed in the dtype, which overflows
there).  A client reads a missing bound as its dtype's limit: the same range.
"""
import dataclasses
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from dm_env import specs
import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_spec_utils

SEPARATOR = "."
REWARD = "reward"
DISCOUNT = "discount"

_FLOAT64 = np.dtype(np.float64)
_FLOAT32 = np.dtype(np.float32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_OBSERVATION = "the environment's observation"


class SpecError(ValueError):
  """The environment's specs cannot be expressed in dm_env_rpc."""


def _walk(nest, path: Tuple) -> Iterator[Tuple[Tuple, specs.Array]]:
  if isinstance(nest, specs.Array):
    yield path, nest
  elif isinstance(nest, Mapping):
    for key in sorted(nest):
      if not isinstance(key, str):
        raise SpecError(f"spec keys must be strings, not {key!r} at {_name(path) or 'the top'}")
      if SEPARATOR in key:
        raise SpecError(f"spec key {key!r} contains the key separator {SEPARATOR!r}")
      yield from _walk(nest[key], path + (key,))
  elif isinstance(nest, (list, tuple)):
    for index, item in enumerate(nest):
      yield from _walk(item, path + (index,))
  else:
    raise SpecError(f"{_name(path) or 'the spec'} is a {type(nest).__name__}, not a dm_env.specs.Array")


def _name(path: Tuple) -> str:
  return SEPARATOR.join(str(part) for part in path)


def _is_string(spec: specs.Array) -> bool:
  return isinstance(spec, specs.StringArray) or np.dtype(spec.dtype).kind in "OUS"


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One tensor of a spec: where it sits in the nest and what it must be.

  `minimum` and `maximum` are the bounds the TensorSpec carries (broadcast to
  the shape, or 0-d for a variable shape); `low` and `high`, derived from them,
  are what values are checked against: None where the bound covers the whole
  dtype (nothing to check), one scalar when every element's bound is the same.
  """
  uid: int
  name: str
  path: Tuple
  spec: specs.Array
  kind: int                 # dm_env_rpc DataType
  dtype: Optional[np.dtype]  # None for strings
  shape: Tuple[int, ...]
  minimum: Optional[np.ndarray]
  maximum: Optional[np.ndarray]
  low: Any = dataclasses.field(init=False, repr=False, compare=False)
  high: Any = dataclasses.field(init=False, repr=False, compare=False)
  bounded: bool = dataclasses.field(init=False, repr=False, compare=False)
  variable: bool = dataclasses.field(init=False, repr=False, compare=False)

  def __post_init__(self):
    low, high = _compact(self.minimum), _compact(self.maximum)
    if self.dtype is not None and self.dtype.kind in "iu":
      info = np.iinfo(self.dtype)
      low = None if low is not None and np.ndim(low) == 0 and low == info.min else low
      high = None if high is not None and np.ndim(high) == 0 and high == info.max else high
    object.__setattr__(self, "low", low)
    object.__setattr__(self, "high", high)
    object.__setattr__(self, "bounded", low is not None or high is not None)
    object.__setattr__(self, "variable", any(d < 0 for d in self.shape))

  def fits(self, shape: Tuple[int, ...]) -> bool:
    """Whether `shape` is this leaf's shape, a -1 dimension taking any size."""
    return shape == self.shape or (self.variable and len(shape) == len(self.shape) and all(
        want < 0 or got == want for got, want in zip(shape, self.shape)))

  def default_action(self):
    """The value an action holds before a client sends one: the spec's
    `generate_value()`, except that a -1 dimension is empty and strings are
    arrays of numpy str_ (dtype "<U"), as the strings a client sends arrive."""
    if self.dtype is not None and not self.variable:
      return self.spec.generate_value()
    shape = tuple(max(d, 0) for d in self.shape)
    if self.dtype is not None:
      return np.zeros(shape, self.dtype)
    return np.full(shape, "", dtype=np.str_)

  @property
  def label(self) -> str:
    """How errors name it: "'name' (uid N)", or "'name'" where it has no UID (a property)."""
    return f"'{self.name}' (uid {self.uid})" if self.uid else f"'{self.name}'"

  def tensor_spec(self) -> dm_env_rpc_pb2.TensorSpec:
    result = dm_env_rpc_pb2.TensorSpec(name=self.name, shape=self.shape, dtype=self.kind)
    if self.minimum is not None or self.maximum is not None:
      tensor_spec_utils.set_bounds(result, _compact(self.minimum), _compact(self.maximum))
    return result

  def check(self, value, what: str):
    """`value` as this leaf's array, or ValueError naming what is wrong with it."""
    if self.dtype is None:
      array = np.asarray(value)
      if array.dtype.kind not in "US" and not (array.dtype.kind == "O" and all(
          isinstance(v, str) for v in array.flat)):
        raise ValueError(f"{what} {self.label} must be strings, not {array.dtype}")
    else:
      array = value if isinstance(value, np.ndarray) else np.asarray(value)
      if array.dtype != self.dtype:
        raise ValueError(f"{what} {self.label} has dtype {array.dtype}; its spec says {self.dtype}")
    if array.shape != self.shape and not self.fits(array.shape):
      raise ValueError(f"{what} {self.label} has shape {list(array.shape)}; "
                       f"its spec says {list(self.shape)}")
    return self.check_bounds(array, what) if self.bounded else array

  def check_bounds(self, array: np.ndarray, what: str) -> np.ndarray:
    """`array` (of this leaf's dtype and shape), or ValueError naming the first
    element out of bounds.  NaN is in bounds (as for dm_env's `validate`)."""
    low, high = self.low, self.high
    if not array.ndim:
      # The common case (a bounded scalar), in plain Python: a step runs this for
      # every action, and numpy ufuncs on a 0-d array cost more than the rest.
      item = array.item()
      if ((low is None or low <= item) and (high is None or item <= high)) or item != item:
        return array
    elif not array.size:
      return array
    else:
      # One reduction per side, with no temporary array; `not >=` so that a NaN
      # (which min() and max() propagate) takes the exact path below.
      # (A bound is a numpy scalar when uniform, else an array of the leaf's shape.)
      fine = True
      if low is not None:
        fine = (array.min() >= low if type(low) is not np.ndarray
                else not np.less(array, low).any())
      if fine and high is not None:
        fine = (array.max() <= high if type(high) is not np.ndarray
                else not np.greater(array, high).any())
      if fine:
        return array
    for bound, fails, side in ((low, np.less, "below its minimum"),
                               (high, np.greater, "above its maximum")):
      if bound is not None:
        bad = fails(array, bound)
        if bad.any():
          index = tuple(int(i) for i in np.argwhere(bad)[0]) if array.ndim else ()
          where = f"element {list(index)} is " if index else ""
          limit = bound[index] if np.ndim(bound) else bound
          raise ValueError(f"{what} {self.label} is {side}: {where}{array[index].item()!r}, "
                           f"the bound is {limit.item()!r}")
    return array  # out of the fast check only by NaN


def _compact(bound: Optional[np.ndarray]):
  """A scalar when every element of the bound is the same (a shorter spec)."""
  if bound is None:
    return None
  flat = bound.ravel()
  if flat.size and (flat == flat[0]).all():
    return flat[0]
  return bound


def _leaf(uid: int, name: str, path: Tuple, spec: specs.Array) -> Leaf:
  shape = tuple(int(d) for d in spec.shape)
  if any(d < -1 for d in shape):
    raise SpecError(f"{name!r} has shape {list(shape)}: a dimension is a size, or -1 for any size")
  if _is_string(spec):
    return Leaf(uid, name, path, spec, dm_env_rpc_pb2.DataType.STRING, None, shape, None, None)
  dtype = np.dtype(spec.dtype)
  try:
    kind = codec.kind_of(dtype)
  except TypeError:
    raise SpecError(f"{name!r} has dtype {dtype}, which dm_env_rpc cannot carry") from None
  minimum = maximum = None
  if isinstance(spec, specs.BoundedArray) and dtype.kind in "iuf":
    minimum = np.asarray(spec.minimum, dtype)
    maximum = np.asarray(spec.maximum, dtype)
    if any(d < 0 for d in shape):
      if minimum.size != 1 or maximum.size != 1:  # dm_env_rpc's rule for variable shapes
        raise SpecError(f"{name!r} has a variable shape {list(shape)}: its bounds must be scalars")
      minimum, maximum = minimum.reshape(()), maximum.reshape(())
    else:
      minimum = np.broadcast_to(minimum, shape)
      maximum = np.broadcast_to(maximum, shape)
    if dtype.kind == "f":  # infinite bounds bound nothing
      minimum = None if np.isneginf(minimum).all() else minimum
      maximum = None if np.isposinf(maximum).all() else maximum
    elif (maximum == np.iinfo(dtype).max).all():  # see the module docstring
      maximum = None
  return Leaf(uid, name, path, spec, kind, dtype, shape, minimum, maximum)


def leaves(nest, default_name: str, first_uid: int = 1) -> List[Leaf]:
  """The leaves of a spec nest, with names and UIDs (see the module docstring)."""
  result = []
  for uid, (path, spec) in enumerate(_walk(nest, ()), start=first_uid):
    name = _name(path) if path else (spec.name or default_name)
    result.append(_leaf(uid, name, path, spec))
  return result


def _scalar_spec(spec, what: str) -> specs.Array:
  if not isinstance(spec, specs.Array):
    raise SpecError(f"the {what} spec must be a single dm_env.specs.Array, not {type(spec).__name__}")
  return spec


@dataclasses.dataclass
class EnvSpecs:
  """An environment's specs, flattened: what JoinWorld sends and Step checks."""
  actions: List[Leaf]
  observations: List[Leaf]
  nested_actions: Any  # the action spec as the environment gave it
  reward_uid: int
  discount_uid: int

  @classmethod
  def of(cls, env) -> "EnvSpecs":
    """Reads `env`'s four specs; SpecError if dm_env_rpc cannot express them."""
    actions = leaves(env.action_spec(), "action")
    observations = leaves(env.observation_spec(), "observation")
    names = [leaf.name for leaf in observations]
    for reserved in (REWARD, DISCOUNT):
      if reserved in names:
        raise SpecError(f"an observation is named {reserved!r}, the name dm_env_rpc gives the "
                        f"{reserved}; rename it")
    reward_uid = len(observations) + 1
    observations.append(_leaf(reward_uid, REWARD, None, _scalar_spec(env.reward_spec(), REWARD)))
    discount_uid = reward_uid + 1
    observations.append(_leaf(discount_uid, DISCOUNT, None,
                              _scalar_spec(env.discount_spec(), DISCOUNT)))
    return cls(actions, observations, env.action_spec(), reward_uid, discount_uid)

  def message(self) -> dm_env_rpc_pb2.ActionObservationSpecs:
    result = dm_env_rpc_pb2.ActionObservationSpecs()
    for leaf in self.actions:
      result.actions[leaf.uid].CopyFrom(leaf.tensor_spec())
    for leaf in self.observations:
      result.observations[leaf.uid].CopyFrom(leaf.tensor_spec())
    return result

  def build_action(self, values: Mapping[int, Any]):
    """The action nest `env.step` takes, from {uid: value} for every action leaf."""
    if len(self.actions) == 1 and not self.actions[0].path:
      return values[self.actions[0].uid]
    return _rebuild(self.nested_actions, (), {leaf.path: values[leaf.uid] for leaf in self.actions})


def _rebuild(nest, path: Tuple, by_path: Dict[Tuple, Any]):
  if isinstance(nest, specs.Array):
    return by_path[path]
  if isinstance(nest, Mapping):
    return {key: _rebuild(nest[key], path + (key,), by_path) for key in nest}
  items = [_rebuild(item, path + (i,), by_path) for i, item in enumerate(nest)]
  if not isinstance(nest, tuple):
    return items
  if hasattr(nest, "_fields"):  # a namedtuple takes its fields as arguments
    return type(nest)(*items)
  return type(nest)(items)


def lookup(nest, path: Sequence):
  """The value at `path` in an observation nest; KeyError naming the path."""
  node = nest
  for part in path:
    try:
      node = node[part]
    except (KeyError, IndexError, TypeError):
      raise KeyError(_name(path)) from None
  return node


def observation_value(leaf: Leaf, value):
  """An environment's observation as the array its spec promises.

  Python scalars and safe casts (float32 into a float64 spec, say) are
  converted; anything else that breaks the spec (dtype, shape, or a value out
  of a `BoundedArray`'s bounds) is the environment's bug and raises ValueError
  naming the observation.  Bounds are checked with one min() and one max()
  reduction, and not at all when they cover the whole dtype (uint8 in [0, 255],
  bool, infinite float bounds, an unbounded side).
  """
  if type(value) is np.ndarray and value.dtype == leaf.dtype and value.shape == leaf.shape:
    return leaf.check_bounds(value, _OBSERVATION) if leaf.bounded else value
  if type(value) is float and leaf.shape == ():
    # Every step's reward and discount (dm_env gives Python floats), without
    # the general path's errstate and checks: these casts cannot fail.
    if leaf.dtype == _FLOAT64:
      array = np.float64(value)
      return leaf.check_bounds(array, _OBSERVATION) if leaf.bounded else array
    if leaf.dtype == _FLOAT32 and abs(value) <= _FLOAT32_MAX:  # (NaN and inf go below)
      array = np.float32(value)
      return leaf.check_bounds(array, _OBSERVATION) if leaf.bounded else array
  if leaf.dtype is None:
    array = leaf.check(value, _OBSERVATION)
    # dm_env's StringArray holds str in object arrays; the wire codec takes str arrays.
    return array.astype(np.str_) if array.dtype.kind == "O" else array
  if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
    if isinstance(value, int) and leaf.dtype.kind in "iu":
      info = np.iinfo(leaf.dtype)  # numpy < 2 wraps an int out of range (and warns)
      if not info.min <= value <= info.max:
        raise ValueError(f"the environment's observation {leaf.label} is {value!r}, which does "
                         f"not fit its spec's dtype {leaf.dtype}")
    try:
      with np.errstate(over="ignore", invalid="ignore"):  # what does not fit is refused below
        array = np.asarray(value, dtype=leaf.dtype)
    except (OverflowError, ValueError):  # out of an integer's range; NaN into an integer
      array = None
    if array is None:
      fits = False
    elif isinstance(value, float) and leaf.dtype.kind == "f":
      fits = bool(np.isfinite(array)) or not np.isfinite(value)  # rounded is fine, infinite not
    else:
      fits = array.item() == value  # an int out of range, a fraction into an int or bool
    if not fits:
      raise ValueError(f"the environment's observation {leaf.label} is {value!r}, which does not "
                       f"fit its spec's dtype {leaf.dtype}")
  else:
    array = np.asarray(value)
    if array.dtype != leaf.dtype:
      if not np.can_cast(array.dtype, leaf.dtype, "safe"):
        raise ValueError(f"the environment's observation {leaf.label} has dtype {array.dtype}; "
                         f"its spec says {leaf.dtype}")
      array = array.astype(leaf.dtype)
  if array.shape != leaf.shape and not leaf.fits(array.shape):
    raise ValueError(f"the environment's observation {leaf.label} has shape {list(array.shape)}; "
                     f"its spec says {list(leaf.shape)}")
  return leaf.check_bounds(array, _OBSERVATION) if leaf.bounded else array
