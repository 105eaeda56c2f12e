"""dm_env_flatten_utils: flatten and unflatten nested dicts."""
import collections

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dm_env_rpc_fast.v1 import dm_env_flatten_utils as flatten_utils


def test_flatten_nested():
  nested = {"a": {"b": 1, "c": {"d": [2]}}, "e": 3}
  assert flatten_utils.flatten_dict(nested, ".") == {"a.b": 1, "a.c.d": [2], "e": 3}


def test_flatten_keeps_leaves_by_identity_and_empty_mappings_as_leaves():
  leaf = [1, 2]
  flat = flatten_utils.flatten_dict({"a": {"b": leaf}, "empty": {}}, "/")
  assert flat["a/b"] is leaf
  assert flat["empty"] == {}


def test_flatten_other_mapping_types():
  nested = collections.OrderedDict(x=collections.OrderedDict(y=1))
  assert flatten_utils.flatten_dict(nested, "::") == {"x::y": 1}


def test_flatten_strict_rejects_separator_in_key():
  with pytest.raises(ValueError) as info:
    flatten_utils.flatten_dict({"a": {"b.c": 1}}, ".")
  assert str(info.value) == (
      "Can not safely flatten dictionary: key 'b.c' already contains the separator '.'!")


def test_flatten_not_strict_allows_separator_in_key():
  assert flatten_utils.flatten_dict({"a.b": {"c": 1}}, ".", strict=False) == {"a.b.c": 1}


def test_unflatten():
  assert flatten_utils.unflatten_dict({"a.b": 1, "a.c.d": 2, "e": 3}, ".") == {
      "a": {"b": 1, "c": {"d": 2}}, "e": 3}


def test_unflatten_leaf_then_subtree_conflict():
  with pytest.raises(ValueError) as info:
    flatten_utils.unflatten_dict({"foo": True, "foo.bar": "baz"}, ".")
  assert str(info.value) == "Sub-tree 'foo' has already been assigned a leaf value True"


def test_unflatten_subtree_then_leaf_conflict():
  with pytest.raises(ValueError) as info:
    flatten_utils.unflatten_dict({"foo.bar": 1, "foo": 2}, ".")
  assert str(info.value) == "Duplicate key foo"


def test_unflatten_empty_key_parts():
  assert flatten_utils.unflatten_dict({"a..b": 1}, ".") == {"a": {"": {"b": 1}}}


_keys = st.text(alphabet="abc", min_size=1, max_size=3)
_trees = st.recursive(
    st.integers(), lambda children: st.dictionaries(_keys, children, min_size=1, max_size=3),
    max_leaves=10)


@given(st.dictionaries(_keys, _trees, max_size=4))
def test_round_trip_property(tree):
  flat = flatten_utils.flatten_dict(tree, ".")
  assert all(not isinstance(v, dict) for v in flat.values())
  assert flatten_utils.unflatten_dict(flat, ".") == tree
