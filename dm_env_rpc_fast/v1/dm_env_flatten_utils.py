"""Flattening nested string-keyed mappings into one level, and back.

`flatten_dict({'a': {'b': 1}}, '.')` gives `{'a.b': 1}`; `unflatten_dict`
reverses it.
"""

import collections.abc
from typing import Any, Dict, Mapping


def flatten_dict(
    input_dict: Mapping[str, Any],
    separator: str,
    *,
    strict: bool = True,
) -> Dict[str, Any]:
  """Joins the keys of nested mappings into single keys.

  Non-empty mappings are descended into; everything else (an empty mapping
  included) is a leaf value and kept as is (not copied).

  Args:
    input_dict: the mapping to flatten; only read.
    separator: the string put between a key and its sub-keys.
    strict: refuse keys that already contain `separator`.  With False such
      keys are kept, and `unflatten_dict` can no longer restore the input.

  Returns:
    A new dict of joined key to leaf value.

  Raises:
    ValueError: `strict` is set and a key (at any depth) contains `separator`.
  """
  flat: Dict[str, Any] = {}
  for key, value in input_dict.items():
    if strict and separator in key:
      raise ValueError(
          f"Can not safely flatten dictionary: key '{key}' already contains "
          f"the separator '{separator}'!")
    if _is_mapping(value) and len(value):
      for sub_key, leaf in flatten_dict(value, separator, strict=strict).items():
        flat[f"{key}{separator}{sub_key}"] = leaf
    else:
      flat[key] = value
  return flat


def unflatten_dict(input_dict: Mapping[str, Any], separator: str) -> Dict[str, Any]:
  """Splits keys on a separator into nested dicts.

  Args:
    input_dict: the flat mapping; only read.
    separator: the string that separates a key from its sub-keys.

  Returns:
    A new nested dict (values are kept as is, not copied).

  Raises:
    ValueError: a key is a prefix of another and so would be both a leaf and
      a dict (`{'a': 1, 'a.b': 2}`), or two keys name the same leaf.
  """
  nested: Dict[str, Any] = {}
  for key, value in input_dict.items():
    if separator not in key:  # a top-level leaf (the common case): no split
      if key in nested:
        raise ValueError(f"Duplicate key {key}")
      nested[key] = value
      continue
    *parents, leaf = key.split(separator)
    node = nested
    for part in parents:
      node = node.setdefault(part, {})
      if not _is_mapping(node):
        raise ValueError(f"Sub-tree '{part}' has already been assigned a leaf value {node}")
    if leaf in node:
      raise ValueError(f"Duplicate key {key}")
    node[leaf] = value
  return nested


def _is_mapping(value) -> bool:
  # collections.abc directly: typing.Mapping's isinstance adds a slow detour.
  return type(value) is dict or isinstance(value, collections.abc.Mapping)
