"""Name-keyed Python values to and from UID-keyed dm_env_rpc Tensors."""

from typing import Any, Collection, Mapping, MutableMapping

import numpy as np

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils


def _check_shape(tensor: dm_env_rpc_pb2.Tensor, spec: dm_env_rpc_pb2.TensorSpec):
  """Raises ValueError unless the tensor's shape fits the spec's.

  A negative dimension in the spec (variable length) matches any size; the
  ranks must be equal.
  """
  got = np.asarray(tensor.shape)
  want = np.asarray(spec.shape)
  if got.size != want.size or not np.all((got == want) | (want < 0)):
    raise ValueError(
        f"Received dm_env_rpc tensor {spec.name} with shape {got} but spec has "
        f"shape {want}.")


class SpecManager(object):
  """Translates between a world's UIDs and the names of its TensorSpecs.

  dm_env_rpc addresses actions and observations by UID; Python code prefers
  names.  A SpecManager packs `{name: value}` dicts into `{uid: Tensor}` maps
  and unpacks them back, checking shapes and dtypes against the specs.
  """

  def __init__(self, specs: Mapping[int, dm_env_rpc_pb2.TensorSpec]):
    """Creates a manager for one set of specs.

    Args:
      specs: {uid: TensorSpec}, as in `ActionObservationSpecs.actions` or
        `.observations`.  Kept by reference (see `specs_by_uid`).

    Raises:
      ValueError: a spec has more than one variable (negative) dimension, or
        two specs share a name.
    """
    for spec in specs.values():
      if np.count_nonzero(np.asarray(spec.shape) < 0) > 1:
        raise ValueError(
            f'"{spec.name}" shape has > 1 variable length dimension. Spec:\n{spec}')

    self._name_to_uid = {spec.name: uid for uid, spec in specs.items()}
    self._uid_to_name = {uid: spec.name for uid, spec in specs.items()}
    if len(self._name_to_uid) != len(self._uid_to_name):
      raise ValueError("There are duplicate names in the tensor specs.")
    self._specs_by_uid = specs
    self._specs_by_name = {spec.name: spec for spec in specs.values()}

  @property
  def specs_by_uid(self) -> Mapping[int, dm_env_rpc_pb2.TensorSpec]:
    """The specs as given to the constructor, keyed by UID."""
    return self._specs_by_uid

  @property
  def specs_by_name(self) -> Mapping[str, dm_env_rpc_pb2.TensorSpec]:
    """The specs keyed by name."""
    return self._specs_by_name

  def name_to_uid(self, name: str) -> int:
    """The UID of the spec called `name`; KeyError if there is none."""
    return self._name_to_uid[name]

  def uid_to_name(self, uid: int) -> str:
    """The name of the spec with UID `uid`; KeyError if there is none."""
    return self._uid_to_name[uid]

  def name_to_spec(self, name: str) -> dm_env_rpc_pb2.TensorSpec:
    """The TensorSpec called `name`; KeyError if there is none."""
    return self._specs_by_name[name]

  def uid_to_spec(self, uid: int) -> dm_env_rpc_pb2.TensorSpec:
    """The TensorSpec with UID `uid`; KeyError if there is none."""
    return self._specs_by_uid[uid]

  def names(self) -> Collection[str]:
    """The names of all specs, in no particular order."""
    return self._name_to_uid.keys()

  def uids(self) -> Collection[int]:
    """The UIDs of all specs, in no particular order."""
    return self._uid_to_name.keys()

  def unpack(
      self, dm_env_rpc_tensors: Mapping[int, dm_env_rpc_pb2.Tensor]
  ) -> MutableMapping[str, Any]:
    """Converts {uid: Tensor} to {name: value}.

    Args:
      dm_env_rpc_tensors: Tensors keyed by UID; only read.

    Returns:
      A new dict of name to numpy array or scalar, as `tensor_utils.unpack_tensor`
      returns them.

    Raises:
      KeyError: a UID has no spec.
      ValueError: a tensor's shape or dtype does not match its spec.
    """
    unpacked = {}
    for uid, tensor in dm_env_rpc_tensors.items():
      name = self._uid_to_name[uid]
      spec = self.name_to_spec(name)
      _check_shape(tensor, spec)
      tensor_dtype = tensor_utils.get_tensor_type(tensor)
      spec_dtype = tensor_utils.data_type_to_np_type(spec.dtype)
      if tensor_dtype != spec_dtype:
        raise ValueError(
            f"Received dm_env_rpc tensor {name} with dtype {tensor_dtype} but spec "
            f"has dtype {spec_dtype}.")
      unpacked[name] = tensor_utils.unpack_tensor(tensor)
    return unpacked

  def pack(self, tensors: Mapping[str, Any]) -> MutableMapping[int, dm_env_rpc_pb2.Tensor]:
    """Converts {name: value} to {uid: Tensor}, cast to each spec's dtype.

    Args:
      tensors: values keyed by spec name: scalars, numpy arrays or nested
        sequences; only read.

    Returns:
      A new dict of UID to new Tensor messages.

    Raises:
      KeyError: a name has no spec.
      ValueError: a value's shape does not match its spec, or it cannot be
        packed (see `tensor_utils.pack_tensor`).
      TypeError: as `tensor_utils.pack_tensor`.
    """
    packed = {}
    for name, value in tensors.items():
      spec = self.name_to_spec(name)
      tensor = tensor_utils.pack_tensor(value, dtype=spec.dtype)
      _check_shape(tensor, spec)
      packed[self.name_to_uid(name)] = tensor
    return packed
