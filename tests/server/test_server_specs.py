"""The server's spec handling (`dm_env_rpc_fast.server._specs`), unit by unit.

Flattening and names, UIDs (sorted keys, stable across calls and processes),
bounds carried and compacted, strings, the reward and discount, the specs it
refuses, and the checks of actions and conversions of observations with the
messages that name what is wrong.
"""
import collections
import json
import subprocess

from dm_env import specs
import numpy as np
import pytest

from dm_env_rpc_fast.server import _specs
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_utils
from dm_env_rpc_fast.v1 import tensor_spec_utils

from support import server_envs
from support import server_helpers

DT = dm_env_rpc_pb2.DataType


class _Env:
  """Just the four spec methods of a dm_env.Environment."""

  def __init__(self, observations, actions=None, reward=None, discount=None):
    self._specs = (observations, actions if actions is not None else specs.Array((), np.int32),
                   reward if reward is not None else specs.Array((), np.float64),
                   discount if discount is not None else specs.BoundedArray((), np.float64, 0, 1))

  def observation_spec(self):
    return self._specs[0]

  def action_spec(self):
    return self._specs[1]

  def reward_spec(self):
    return self._specs[2]

  def discount_spec(self):
    return self._specs[3]


def names_and_uids(leaves):
  return [(leaf.uid, leaf.name) for leaf in leaves]


# --------------------------------------------------------------------------
# Flattening, names and UIDs.

def test_nests_are_flattened_with_dots_in_sorted_key_order():
  """Dicts (by sorted key), lists and tuples (by index) flatten to dotted names, UIDs counted from
  1 in that order."""
  nest = {
      "zeta": specs.Array((), np.int32),
      "alpha": {"b": specs.Array((2,), np.float32), "a": specs.Array((), np.uint8)},
      "list": [specs.Array((), np.int64), {"x": specs.Array((), np.bool_)}],
      "tuple": (specs.Array((), np.float64), specs.StringArray(())),
  }
  assert names_and_uids(_specs.leaves(nest, "observation")) == [
      (1, "alpha.a"), (2, "alpha.b"), (3, "list.0"), (4, "list.1.x"), (5, "tuple.0"),
      (6, "tuple.1"), (7, "zeta")]
  leaf = _specs.leaves(nest, "observation")[3]
  assert leaf.path == ("list", 1, "x")
  assert _specs.SEPARATOR == "."


def test_uids_do_not_depend_on_insertion_order_or_the_call():
  """The same spec gets the same UIDs whatever the dicts' insertion order, call after call."""
  forward = {"b": specs.Array((), np.int32), "a": specs.Array((), np.int32),
             "c": {"y": specs.Array((), np.int32), "x": specs.Array((), np.int32)}}
  backward = {"c": {"x": specs.Array((), np.int32), "y": specs.Array((), np.int32)},
              "a": specs.Array((), np.int32), "b": specs.Array((), np.int32)}
  expected = [(1, "a"), (2, "b"), (3, "c.x"), (4, "c.y")]
  assert names_and_uids(_specs.leaves(forward, "o")) == expected
  assert names_and_uids(_specs.leaves(backward, "o")) == expected
  env = server_envs.RichEnv(server_envs.new_seed(), register=False)
  assert _specs.EnvSpecs.of(env).message() == _specs.EnvSpecs.of(env).message()


_SPEC_DUMP = """
import json, sys
sys.path.insert(0, sys.argv[1])
import server_envs
from dm_env_rpc_fast.server import _specs
specs = _specs.EnvSpecs.of(server_envs.RichEnv(1, register=False))
print(json.dumps({"actions": [[l.uid, l.name] for l in specs.actions],
                  "observations": [[l.uid, l.name] for l in specs.observations],
                  "message": specs.message().SerializeToString(deterministic=True).hex()}))
"""


def test_uids_are_the_same_in_other_processes(backend):
  """Another interpreter, with other hash seeds, numbers the RichEnv's specs the same way."""
  here = _specs.EnvSpecs.of(server_envs.RichEnv(1, register=False))
  expected = {"actions": [[l.uid, l.name] for l in here.actions],
              "observations": [[l.uid, l.name] for l in here.observations],
              "message": here.message().SerializeToString(deterministic=True).hex()}
  assert [name for _, name in expected["actions"]] == server_envs.ACTION_NAMES
  for hash_seed in ("1", "12345"):
    env = server_helpers.subprocess_env(backend)
    env["PYTHONHASHSEED"] = hash_seed
    out = subprocess.run([server_helpers.python(), "-c", _SPEC_DUMP, str(server_helpers.HERE)],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected


def test_a_lone_spec_is_named_by_its_name_or_its_role():
  """An un-nested spec is named by its own name, else 'observation' or 'action'."""
  named = _specs.leaves(specs.Array((3,), np.float32, name="pixels"), "observation")
  assert names_and_uids(named) == [(1, "pixels")] and named[0].path == ()
  assert names_and_uids(_specs.leaves(specs.Array((), np.int32), "action")) == [(1, "action")]


def test_leaf_specs_keep_their_own_names_out_of_the_flat_name():
  """A nested spec's `name` is ignored: the path names it (the adaptor unflattens by it)."""
  nest = {"arm": {"grip": specs.Array((), np.int32, name="something else")}}
  assert _specs.leaves(nest, "action")[0].name == "arm.grip"


def test_reward_and_discount_follow_the_observations():
  """The reward and discount become the observations 'reward' and 'discount', after the others, in
  their specs' dtypes."""
  env = _Env({"b": specs.Array((), np.int32), "a": specs.Array((2,), np.uint8)},
             reward=specs.Array((), np.float32), discount=specs.BoundedArray((), np.float64, 0, 1))
  env_specs = _specs.EnvSpecs.of(env)
  assert names_and_uids(env_specs.observations) == [(1, "a"), (2, "b"), (3, "reward"),
                                                    (4, "discount")]
  assert (env_specs.reward_uid, env_specs.discount_uid) == (3, 4)
  message = env_specs.message()
  assert message.observations[3].dtype == DT.FLOAT
  assert message.observations[4].dtype == DT.DOUBLE
  bounds = tensor_spec_utils.bounds(message.observations[4])
  assert (bounds.min, bounds.max) == (0.0, 1.0)
  assert list(message.observations[1].shape) == [2]
  assert list(message.actions) == [1] and message.actions[1].name == "action"


def test_the_message_is_what_the_rich_env_declares():
  """RichEnv's specs message names and types every action and observation."""
  message = _specs.EnvSpecs.of(server_envs.RichEnv(1, register=False)).message()
  actions = {spec.name: spec for spec in message.actions.values()}
  observations = {spec.name: spec for spec in message.observations.values()}
  assert sorted(actions) == server_envs.ACTION_NAMES
  assert sorted(observations) == sorted(server_envs.OBSERVATION_NAMES + ["reward", "discount"])
  assert [actions[n].dtype for n in server_envs.ACTION_NAMES] == [
      DT.FLOAT, DT.INT32, DT.STRING, DT.BOOL, DT.FLOAT, DT.DOUBLE, DT.UINT8]
  assert list(observations["camera.rgb"].shape) == list(server_envs.IMAGE_SHAPE)
  assert observations["words"].dtype == DT.STRING and list(observations["words"].shape) == [2]
  assert observations["echo"].dtype == DT.STRING and list(observations["echo"].shape) == []


# --------------------------------------------------------------------------
# Bounds.

def _bounds_payload(spec, which):
  value = getattr(spec, which)
  kind = value.WhichOneof("payload")
  return None if kind is None else (kind, list(getattr(value, kind).array))


def test_array_bounds_are_carried_element_by_element():
  """Bounds that differ by element travel as arrays."""
  (leaf,) = _specs.leaves(
      specs.BoundedArray((3,), np.float32, [-1, -2, -3], [1, 2, 3], name="f"), "action")
  spec = leaf.tensor_spec()
  assert _bounds_payload(spec, "min") == ("floats", [-1, -2, -3])
  assert _bounds_payload(spec, "max") == ("floats", [1, 2, 3])


def test_uniform_bounds_are_compacted_to_one_value():
  """Bounds equal everywhere travel as one value; the check keeps the full bound."""
  (leaf,) = _specs.leaves(
      specs.BoundedArray((2, 3), np.int64, np.full((2, 3), -4), 9, name="g"), "action")
  spec = leaf.tensor_spec()
  assert _bounds_payload(spec, "min") == ("int64s", [-4])
  assert _bounds_payload(spec, "max") == ("int64s", [9])
  # The check still has the whole, broadcast bound.
  assert leaf.minimum.shape == (2, 3)


def test_bounds_of_every_numeric_dtype_travel_in_that_dtype():
  """Bounds travel in the payload of the spec's own dtype."""
  payloads = {np.int8: "int8s", np.int32: "int32s", np.int64: "int64s", np.uint8: "uint8s",
              np.uint32: "uint32s", np.uint64: "uint64s", np.float32: "floats",
              np.float64: "doubles"}
  for dtype, payload in payloads.items():
    (leaf,) = _specs.leaves(specs.BoundedArray((2,), dtype, 1, [3, 4]), "action")
    spec = leaf.tensor_spec()
    assert _bounds_payload(spec, "min") == (payload, [1]), dtype
    assert _bounds_payload(spec, "max") == (payload, [3, 4]), dtype


def test_infinite_float_bounds_are_dropped_and_discrete_arrays_bounded():
  """Infinite float bounds are left out; DiscreteArrays get [0, n-1]; plain Arrays and bools get
  none."""
  (open_,) = _specs.leaves(specs.BoundedArray((2,), np.float32, -np.inf, np.inf), "a")
  assert not open_.tensor_spec().HasField("min") and not open_.tensor_spec().HasField("max")
  assert open_.minimum is None and open_.maximum is None
  (half,) = _specs.leaves(specs.BoundedArray((), np.float64, -np.inf, 5.0), "a")
  assert not half.tensor_spec().HasField("min")
  assert _bounds_payload(half.tensor_spec(), "max") == ("doubles", [5.0])
  (discrete,) = _specs.leaves(specs.DiscreteArray(4, dtype=np.int32), "a")
  bounds = tensor_spec_utils.bounds(discrete.tensor_spec())
  assert (bounds.min, bounds.max) == (0, 3)
  (unbounded,) = _specs.leaves(specs.Array((2,), np.int32), "a")
  assert not unbounded.tensor_spec().HasField("min")
  (flag,) = _specs.leaves(specs.BoundedArray((), np.bool_, False, True), "a")
  assert flag.tensor_spec().dtype == DT.BOOL and not flag.tensor_spec().HasField("max")


def test_string_specs_are_strings_without_bounds():
  """StringArrays and str dtypes are STRING, without bounds."""
  nest = {"a": specs.StringArray((2,)), "b": specs.Array((), np.str_)}
  leaves = _specs.leaves(nest, "observation")
  assert [leaf.tensor_spec().dtype for leaf in leaves] == [DT.STRING, DT.STRING]
  assert [list(leaf.tensor_spec().shape) for leaf in leaves] == [[2], []]
  assert all(leaf.dtype is None and leaf.minimum is None for leaf in leaves)


# --------------------------------------------------------------------------
# Specs dm_env_rpc cannot carry.

@pytest.mark.parametrize("dtype", [np.float16, np.complex64, np.int16, np.uint16])
def test_an_unsupported_dtype_is_a_spec_error(dtype):
  """A dtype dm_env_rpc has no payload for is a SpecError naming the leaf and dtype."""
  with pytest.raises(_specs.SpecError, match=f"'a.b' has dtype {np.dtype(dtype)}"):
    _specs.leaves({"a": {"b": specs.Array((), dtype)}}, "observation")


def test_a_key_with_the_separator_is_a_spec_error():
  """A key containing '.' would make names ambiguous: SpecError."""
  with pytest.raises(_specs.SpecError, match=r"'x\.y' contains the key separator '\.'"):
    _specs.leaves({"a": {"x.y": specs.Array((), np.int32)}}, "observation")


def test_a_key_that_is_not_a_string_is_a_spec_error():
  """Non-string dict keys are a SpecError naming where."""
  with pytest.raises(_specs.SpecError, match="keys must be strings, not 3 at a"):
    _specs.leaves({"a": {3: specs.Array((), np.int32)}}, "observation")


def test_a_leaf_that_is_not_a_spec_is_a_spec_error():
  """A leaf that is not a specs.Array is a SpecError naming where."""
  with pytest.raises(_specs.SpecError, match="a.1 is a int, not a dm_env.specs.Array"):
    _specs.leaves({"a": [specs.Array((), np.int32), 5]}, "observation")


@pytest.mark.parametrize("observations", [
    {"reward": specs.Array((), np.float32)},
    {"discount": specs.Array((), np.float32)},
    specs.Array((), np.float32, name="reward"),
], ids=["reward key", "discount key", "lone spec named reward"])
def test_an_observation_named_like_the_reward_or_discount_is_a_spec_error(observations):
  """An observation named 'reward' or 'discount' would clash with those: SpecError."""
  name = "discount" if "discount" in str(observations) else "reward"
  with pytest.raises(_specs.SpecError, match=f"an observation is named '{name}'"):
    _specs.EnvSpecs.of(_Env(observations))


def test_a_nested_reward_name_is_fine():
  """'a.reward' does not clash with 'reward'."""
  env_specs = _specs.EnvSpecs.of(_Env({"a": {"reward": specs.Array((), np.float32)}}))
  assert [leaf.name for leaf in env_specs.observations] == ["a.reward", "reward", "discount"]


def test_a_nested_reward_spec_is_a_spec_error():
  """The reward spec must be one Array."""
  with pytest.raises(_specs.SpecError, match="reward spec must be a single"):
    _specs.EnvSpecs.of(_Env({"a": specs.Array((), np.int32)},
                            reward={"x": specs.Array((), np.float32)}))


def test_spec_errors_are_value_errors():
  """SpecError is a ValueError."""
  assert issubclass(_specs.SpecError, ValueError)


# --------------------------------------------------------------------------
# Rebuilding the action nest, and finding observations in theirs.

Pair = collections.namedtuple("Pair", ["left", "right"])


def test_the_action_nest_is_rebuilt_with_its_container_types():
  """env.step gets dicts, lists, tuples and namedtuples back as the action spec has them."""
  nest = {"d": {"x": specs.Array((), np.int32)},
          "l": [specs.Array((), np.int32), specs.Array((), np.int32)],
          "t": (specs.Array((), np.int32),),
          "n": Pair(specs.Array((), np.int32), specs.Array((), np.int32))}
  env_specs = _specs.EnvSpecs.of(_Env({"o": specs.Array((), np.int32)}, actions=nest))
  by_name = {leaf.name: leaf.uid for leaf in env_specs.actions}
  assert sorted(by_name) == ["d.x", "l.0", "l.1", "n.0", "n.1", "t.0"]
  values = {uid: f"value of {name}" for name, uid in by_name.items()}
  action = env_specs.build_action(values)
  assert action == {"d": {"x": "value of d.x"}, "l": ["value of l.0", "value of l.1"],
                    "t": ("value of t.0",), "n": Pair("value of n.0", "value of n.1")}
  assert type(action["l"]) is list and type(action["t"]) is tuple and type(action["n"]) is Pair


def test_a_lone_action_is_passed_as_itself():
  """An un-nested action spec gets the value itself."""
  env_specs = _specs.EnvSpecs.of(_Env({"o": specs.Array((), np.int32)}))
  assert env_specs.build_action({1: "the value"}) == "the value"


def test_lookup_finds_by_path_and_names_what_is_missing():
  """lookup walks dict keys and indices; a missing step is a KeyError naming the dotted path."""
  nest = {"a": [{"b": 1}, (2, 3)]}
  assert _specs.lookup(nest, ("a", 0, "b")) == 1
  assert _specs.lookup(nest, ("a", 1, 1)) == 3
  for path in (("a", 2), ("a", 0, "c"), ("z",), ("a", 1, 0, "deeper")):
    with pytest.raises(KeyError, match=_specs.SEPARATOR.join(map(str, path))):
      _specs.lookup(nest, path)


# --------------------------------------------------------------------------
# Checking actions.

def _leaf(spec, name="arm.force", uid=4):
  return _specs._leaf(uid, name, tuple(name.split(".")), spec)


FORCE = specs.BoundedArray((3,), np.float32, [-1, -2, -3], [1, 2, 3])


def test_a_good_action_is_returned_as_an_array():
  """A valid action comes back as it is (strings as arrays of str)."""
  value = np.array([0.5, -2, 3], np.float32)
  assert _leaf(FORCE).check(value, "action") is value
  assert _leaf(specs.StringArray((2,))).check(np.array(["a", "b"]), "action").tolist() == ["a", "b"]
  assert _leaf(specs.StringArray(())).check(np.array("a", dtype=object), "action") == "a"


@pytest.mark.parametrize("value, fragments", [
    (np.zeros(3, np.float64), ["action 'arm.force' (uid 4) has dtype float64", "says float32"]),
    (np.zeros((3, 1), np.float32), ["action 'arm.force' (uid 4) has shape [3, 1]", "says [3]"]),
    (np.float32(0), ["has shape []", "says [3]"]),
    (np.array([0, -2.5, 0], np.float32),
     ["action 'arm.force' (uid 4) is below its minimum: element [1] is -2.5, the bound is -2.0"]),
    (np.array([0, 0, 3.5], np.float32),
     ["action 'arm.force' (uid 4) is above its maximum: element [2] is 3.5, the bound is 3.0"]),
])
def test_a_bad_action_names_the_leaf_and_the_problem(value, fragments):
  """Wrong dtype, shape or a bound broken: the message names the action, its uid, the element and
  the bound."""
  with pytest.raises(ValueError) as caught:
    _leaf(FORCE).check(value, "action")
  for fragment in fragments:
    assert fragment in str(caught.value)


def test_a_scalar_out_of_bounds_is_named_without_an_element():
  """A scalar out of bounds is named without an element index; bounds are inclusive."""
  leaf = _leaf(specs.BoundedArray((), np.int32, 0, 10), name="grip", uid=2)
  expected = r"^action 'grip' \(uid 2\) is above its maximum: 11, the bound is 10$"
  with pytest.raises(ValueError, match=expected):
    leaf.check(np.int32(11), "action")
  with pytest.raises(ValueError, match="below its minimum: -1, the bound is 0"):
    leaf.check(np.int32(-1), "action")
  assert leaf.check(np.int32(10), "action") == 10  # bounds are inclusive
  assert leaf.check(np.int32(0), "action") == 0


def test_strings_are_checked_as_strings():
  """A string action must hold str values, in the spec's shape."""
  leaf = _leaf(specs.StringArray(()), name="command", uid=3)
  with pytest.raises(ValueError, match=r"action 'command' \(uid 3\) must be strings, not int32"):
    leaf.check(np.int32(1), "action")
  with pytest.raises(ValueError, match="must be strings, not object"):
    leaf.check(np.array(b"x", dtype=object), "action")
  with pytest.raises(ValueError, match="has shape"):
    leaf.check(np.array(["a", "b"]), "action")


# --------------------------------------------------------------------------
# Converting observations.

def _observation(spec, name="o", uid=1):
  return _specs._leaf(uid, name, (name,), spec)


def test_an_exact_array_is_passed_through():
  """An observation already of the spec's dtype and shape is used as it is."""
  value = np.arange(3, dtype=np.int32)
  assert _specs.observation_value(_observation(specs.Array((3,), np.int32)), value) is value


@pytest.mark.parametrize("spec, value, expected", [
    (specs.Array((), np.float32), 0.1, np.float32(0.1)),
    (specs.Array((), np.float64), 2, 2.0),
    (specs.Array((), np.int32), 7, 7),
    (specs.Array((), np.bool_), True, True),
    (specs.Array((), np.uint8), 255, 255),
    (specs.Array((3,), np.float64), np.arange(3, dtype=np.float32), [0.0, 1.0, 2.0]),
    (specs.Array((2,), np.int64), np.array([1, 2], np.uint8), [1, 2]),
    (specs.Array((), np.float32), float("inf"), np.float32("inf")),
    (specs.Array((), np.float32), -float("inf"), np.float32("-inf")),
    (specs.Array((), np.float32), float("nan"), np.float32("nan")),
    (specs.Array((), np.float32), float(np.finfo(np.float32).max), np.finfo(np.float32).max),
    (specs.Array((), np.float32), 3.40282356e38, np.finfo(np.float32).max),  # rounds down to max
    (specs.Array((), np.float32), -1e-50, np.float32(-0.0)),
    (specs.Array((), np.float64), 0.25, 0.25),
    (specs.Array((), np.float64), float("nan"), np.nan),
    (specs.Array((), np.float64), -float("inf"), -np.inf),
    (specs.StringArray((2,)), ["a", "b"], ["a", "b"]),
    (specs.StringArray(()), "word", "word"),
])
def test_python_scalars_and_safe_casts_are_converted(spec, value, expected):
  """Python scalars that fit and safe casts become the spec's dtype."""
  array = _specs.observation_value(_observation(spec), value)
  if spec.dtype != object:
    assert array.dtype == spec.dtype
  assert array.shape == spec.shape
  if array.dtype.kind == "f":  # NaN equal to NaN, and -0.0 told from 0.0
    np.testing.assert_array_equal(array, np.asarray(expected, array.dtype), strict=True)
    assert np.signbit(array).tolist() == np.signbit(np.asarray(expected)).tolist()
  else:
    assert array.tolist() == np.asarray(expected).tolist()


def _assert_observation_refused(spec, value, fragments):
  """The observation 'cam.x' (uid 9) of `spec` refuses `value`: ValueError naming it, with every
  one of `fragments` in the message."""
  with pytest.raises(ValueError) as caught:
    _specs.observation_value(_observation(spec, name="cam.x", uid=9), value)
  message = str(caught.value)
  assert message.startswith("the environment's observation 'cam.x' (uid 9)"), message
  for fragment in fragments:
    assert fragment in message, message


@pytest.mark.parametrize("spec, value, fragments", [
    (specs.Array((), np.int32), 2 ** 40, ["is 1099511627776", "does not fit", "int32"]),
    (specs.Array((), np.uint8), -1, ["is -1", "does not fit", "uint8"]),
    (specs.Array((), np.int32), 0.5, ["is 0.5", "does not fit", "int32"]),
    (specs.Array((), np.bool_), 2, ["is 2", "does not fit", "bool"]),
    (specs.Array((), np.float32), 1e300, ["is 1e+300", "does not fit", "float32"]),
    (specs.Array((), np.float32), -3.5e38, ["is -3.5e+38", "does not fit", "float32"]),
    # Halfway between float32's max and 2**128: rounds to even, which is infinity.
    (specs.Array((), np.float32), 3.4028235677973366e38, ["does not fit", "float32"]),
    (specs.Array((), np.int32), float("nan"), ["is nan", "does not fit"]),
    (specs.Array((2,), np.int32), np.zeros(2, np.int64), ["has dtype int64", "says int32"]),
    (specs.Array((2,), np.float32), np.zeros(2), ["has dtype float64", "says float32"]),
    (specs.Array((2,), np.int32), [1, 2], ["has dtype int64", "says int32"]),
    (specs.Array((2,), np.int32), np.zeros(3, np.int32), ["has shape [3]", "says [2]"]),
    (specs.Array((), np.float32), np.zeros(1, np.float32), ["has shape [1]", "says []"]),
    (specs.StringArray(()), 3, ["must be strings"]),
])
def test_an_observation_that_breaks_its_spec_names_itself(spec, value, fragments):
  """Out of range, a fraction into an int, an unsafe cast, a wrong shape: ValueError naming the
  observation."""
  _assert_observation_refused(spec, value, fragments)


# --------------------------------------------------------------------------
# Issue 13: variable dimensions, bounds a client can read, observations in bounds.

def test_a_variable_dimension_takes_any_size_but_not_another_rank():
  """A -1 dimension takes any size (0 too) in actions and observations; the rank and the other
  dimensions still must match."""
  leaf = _leaf(specs.Array((-1, 2), np.int32), name="v")
  for rows in (0, 1, 5):
    value = np.zeros((rows, 2), np.int32)
    assert leaf.check(value, "action") is value
    assert _specs.observation_value(leaf, value) is value
  for shape in ((3, 3), (2,), (1, 2, 1)):
    with pytest.raises(ValueError, match=r"its spec says \[-1, 2\]"):
      leaf.check(np.zeros(shape, np.int32), "action")
    with pytest.raises(ValueError, match=r"its spec says \[-1, 2\]"):
      _specs.observation_value(leaf, np.zeros(shape, np.int32))
  assert leaf.tensor_spec().shape == [-1, 2]
  with pytest.raises(_specs.SpecError, match="-1 for any size"):
    _leaf(specs.Array((-2,), np.int32))


def test_default_actions_are_valid_and_strings_are_str_arrays():
  """The held default of a variable spec is empty along its -1 axes; a string default is a str
  array, as strings a client sends arrive; others are the spec's generate_value()."""
  default = _leaf(specs.Array((-1, 2), np.float32)).default_action()
  assert default.shape == (0, 2) and default.dtype == np.float32
  for shape in ((), (2,), (-1,)):
    default = _leaf(specs.StringArray(shape)).default_action()
    assert type(default) is np.ndarray and default.dtype.kind == "U"
    assert default.shape == tuple(max(d, 0) for d in shape)
  assert _leaf(specs.BoundedArray((2,), np.int32, 3, 9)).default_action().tolist() == [3, 3]


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint32, np.uint64])
def test_a_maximum_at_the_dtypes_maximum_is_left_out(dtype):
  """An integer maximum equal to the dtype's is not sent (dm-env-rpc's adaptor overflows turning
  [0, max] into a DiscreteArray); the minimum is, and our client reads the same range."""
  top = np.iinfo(dtype).max
  (leaf,) = _specs.leaves(specs.BoundedArray((), dtype, 0, top), "a")
  message = leaf.tensor_spec()
  assert message.HasField("min") and not message.HasField("max")
  read = dm_env_utils.tensor_spec_to_dm_env_spec(message)
  assert (read.minimum, read.maximum, read.dtype) == (0, top, dtype)
  (below,) = _specs.leaves(specs.BoundedArray((), dtype, 0, top - 1), "a")
  assert below.tensor_spec().HasField("max")


def test_bounds_covering_the_dtype_are_not_checked():
  """uint8 in [0, 255], int32 over its range, bools and infinite float bounds check nothing;
  one side at its limit checks only the other."""
  for spec in (specs.BoundedArray((3,), np.uint8, 0, 255),
               specs.BoundedArray((), np.int32, np.iinfo(np.int32).min, np.iinfo(np.int32).max),
               specs.BoundedArray((), np.bool_, False, True),
               specs.BoundedArray((2,), np.float32, -np.inf, np.inf)):
    assert not _leaf(spec).bounded, spec
  half = _leaf(specs.BoundedArray((2,), np.uint8, 0, 200))
  assert half.bounded and half.low is None and half.high == 200


@pytest.mark.parametrize("spec, value, fragments", [
    (specs.BoundedArray((2, 2), np.float32, 0.0, 1.0), np.array([[0, 1], [1.5, 0]], np.float32),
     ["'cam.x' (uid 9) is above its maximum: element [1, 0] is 1.5, the bound is 1.0"]),
    (specs.BoundedArray((3,), np.int32, [0, -5, 0], [9, 5, 9]), np.array([0, -6, 9], np.int32),
     ["is below its minimum: element [1] is -6, the bound is -5"]),
    (specs.BoundedArray((), np.float64, 0.0, 1.0), 1.25, ["above its maximum: 1.25"]),
    (specs.BoundedArray((), np.float32, 0.0, 1.0), -0.5, ["below its minimum: -0.5"]),
    (specs.BoundedArray((2,), np.uint8, 0, 200), [201, 0], ["dtype int64"]),
    (specs.BoundedArray((2,), np.uint8, 0, 200), np.array([3, 201], np.uint8),
     ["above its maximum: element [1] is 201, the bound is 200"]),
    (specs.BoundedArray((2,), np.float32, 0.0, 1.0), np.array([np.nan, 2], np.float32),
     ["element [1] is 2.0"]),
])
def test_an_observation_out_of_its_bounds_names_itself(spec, value, fragments):
  """Bounds are checked on observations as on actions: ValueError naming the observation, the
  element, its value and the bound (NaN beside a bad element does not hide it)."""
  _assert_observation_refused(spec, value, fragments)


def test_observations_in_bounds_pass_unchanged():
  """In bounds (bounds inclusive), NaN, or empty: the array itself comes back."""
  leaf = _observation(specs.BoundedArray((2, 2), np.float32, 0.0, 1.0))
  for value in (np.array([[0, 1], [0.5, 1]], np.float32), np.full((2, 2), np.nan, np.float32)):
    assert _specs.observation_value(leaf, value) is value
  per_element = _observation(specs.BoundedArray((2,), np.int32, [0, 5], [1, 6]))
  value = np.array([1, 5], np.int32)
  assert _specs.observation_value(per_element, value) is value
  variable = _observation(specs.Array((-1,), np.float32))
  assert _specs.observation_value(variable, np.zeros(0, np.float32)).shape == (0,)
  assert _specs.observation_value(_observation(specs.BoundedArray((), np.float64, 0, 1)),
                                  1.0) == 1.0


def test_an_object_array_of_strings_is_sent_as_str():
  """dm_env's StringArray makes object arrays; observations of them travel as str arrays."""
  leaf = _observation(specs.StringArray((2,)))
  value = _specs.observation_value(leaf, specs.StringArray((2,)).generate_value())
  assert value.dtype.kind == "U" and value.tolist() == ["", ""]
