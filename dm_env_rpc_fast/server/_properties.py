"""The properties extension, for environments that offer properties.

The protocol (ours): an environment offers properties by having a method

    def dm_env_rpc_properties(self) -> Mapping[str, Property]: ...

Keys are dotted paths ("camera.fov"); the server calls the method on every
properties request, so the set may change over time.  A property is readable
when it has `read`, writable when it has `write`; `write` gets the value
already checked against `spec` (dtype and shape, and bounds for a
`BoundedArray`) and may raise ValueError to refuse it.  Listing a key gives
its direct children: a property, a prefix of other keys (listable), or both.
"""
import dataclasses
import warnings
from typing import Any, Callable, Mapping, Optional

from dm_env import specs
import numpy as np
from google.protobuf import any_pb2
from google.rpc import code_pb2

from dm_env_rpc_fast.server import _specs
from dm_env_rpc_fast.v1 import tensor_utils
from dm_env_rpc_fast.v1.extensions import properties_pb2

METHOD = "dm_env_rpc_properties"


@dataclasses.dataclass(frozen=True)
class Property:
  """One property of an environment (see `dm_env_rpc_fast.server`'s docs).

  Attributes:
    spec: its dtype and shape (`specs.BoundedArray` adds bounds for writes).
    read: returns the current value; None if the property cannot be read.
    write: takes a new value; None if the property cannot be written.
    description: free text shown to clients that list properties.
  """
  spec: specs.Array
  read: Optional[Callable[[], Any]] = None
  write: Optional[Callable[[Any], None]] = None
  description: str = ""


class PropertyError(Exception):
  """A properties request that cannot be served: a google.rpc code and a message."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code


def offered(env) -> bool:
  return callable(getattr(env, METHOD, None))


def _table(env) -> Mapping[str, Property]:
  try:
    table = getattr(env, METHOD)()
  except Exception as e:  # the environment's own failure
    raise PropertyError(code_pb2.INTERNAL,
                        f"the environment's {METHOD}() raised {type(e).__name__}: {e}") from e
  return table


def _leaf(key: str, prop: Property) -> _specs.Leaf:
  return _specs._leaf(0, key, (), prop.spec)


def _fitted(value, leaf: _specs.Leaf):
  """`value` in the property's dtype when it converts exactly (7 from an int64 for an int32).

  Clients pack Python numbers with numpy's default dtypes, so a write of `7`
  arrives as int64; a property is no action and may take it.
  """
  array = np.asarray(value)
  if leaf.dtype is None or array.dtype == leaf.dtype or array.dtype.kind not in "biuf":
    return value
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    cast = array.astype(leaf.dtype)
  return cast if np.array_equal(cast, array) else value


def _find(table: Mapping[str, Property], key: str) -> Property:
  prop = table.get(key)
  if prop is None:
    raise PropertyError(code_pb2.NOT_FOUND, f"no property {key!r}")
  return prop


def _read(table, request: properties_pb2.ReadPropertyRequest) -> properties_pb2.PropertyResponse:
  prop = _find(table, request.key)
  if prop.read is None:
    raise PropertyError(code_pb2.PERMISSION_DENIED, f"property {request.key!r} is not readable")
  try:
    value = prop.read()
  except Exception as e:
    raise PropertyError(code_pb2.INTERNAL,
                        f"reading property {request.key!r} raised {type(e).__name__}: {e}") from e
  leaf = _leaf(request.key, prop)
  try:
    value = _specs.observation_value(leaf, value)
  except ValueError as e:
    raise PropertyError(code_pb2.INTERNAL, str(e).replace("observation", "property")) from None
  response = properties_pb2.PropertyResponse()
  response.read_property.value.CopyFrom(tensor_utils.pack_tensor(value, dtype=leaf.kind))
  return response


def _write(table, request: properties_pb2.WritePropertyRequest) -> properties_pb2.PropertyResponse:
  prop = _find(table, request.key)
  if prop.write is None:
    raise PropertyError(code_pb2.PERMISSION_DENIED, f"property {request.key!r} is not writable")
  leaf = _leaf(request.key, prop)
  try:
    value = leaf.check(_fitted(tensor_utils.unpack_tensor(request.value), leaf), "property")
  except (ValueError, TypeError) as e:
    raise PropertyError(code_pb2.INVALID_ARGUMENT, str(e)) from None
  try:
    prop.write(value)
  except ValueError as e:
    raise PropertyError(code_pb2.INVALID_ARGUMENT,
                        f"property {request.key!r} refused the value: {e}") from None
  except Exception as e:
    raise PropertyError(code_pb2.INTERNAL,
                        f"writing property {request.key!r} raised {type(e).__name__}: {e}") from e
  response = properties_pb2.PropertyResponse()
  response.write_property.SetInParent()
  return response


def _list(table, request: properties_pb2.ListPropertyRequest) -> properties_pb2.PropertyResponse:
  prefix = request.key
  if prefix and prefix not in table and not any(k.startswith(prefix + ".") for k in table):
    raise PropertyError(code_pb2.NOT_FOUND, f"no property {prefix!r}")
  children = {}
  for key in table:
    if prefix:
      if not key.startswith(prefix + "."):
        continue
      rest = key[len(prefix) + 1:]
    else:
      rest = key
    child = (prefix + "." if prefix else "") + rest.split(".", 1)[0]
    children.setdefault(child, False)
    if child != key:
      children[child] = True  # a prefix of a deeper key: listable
  response = properties_pb2.PropertyResponse()
  for child in sorted(children):
    entry = response.list_property.values.add()
    entry.is_listable = children[child]
    entry.spec.name = child
    prop = table.get(child)
    if prop is not None:
      entry.spec.CopyFrom(_leaf(child, prop).tensor_spec())
      entry.is_readable = prop.read is not None
      entry.is_writable = prop.write is not None
      entry.description = prop.description
  return response


def handle(env, packed: any_pb2.Any) -> any_pb2.Any:
  """Answers one Any-packed PropertyRequest; PropertyError when it cannot."""
  if not offered(env):
    raise PropertyError(code_pb2.UNIMPLEMENTED, "this environment offers no properties")
  request = properties_pb2.PropertyRequest()
  if not packed.Unpack(request):
    raise PropertyError(code_pb2.INVALID_ARGUMENT, "malformed PropertyRequest")
  table = _table(env)
  kind = request.WhichOneof("payload")
  if kind == "read_property":
    response = _read(table, request.read_property)
  elif kind == "write_property":
    response = _write(table, request.write_property)
  elif kind == "list_property":
    response = _list(table, request.list_property)
  else:
    raise PropertyError(code_pb2.INVALID_ARGUMENT, "PropertyRequest without a payload")
  result = any_pb2.Any()
  result.Pack(response)
  return result


def before_join(packed: any_pb2.Any) -> any_pb2.Any:
  """Answers a PropertyRequest of a stream that has joined no world.

  Properties belong to the joined world's environment; this server has no
  universal ones.  Listing the root answers that truthfully (an empty list, so
  a client may look before joining); any other request is FAILED_PRECONDITION.
  """
  request = properties_pb2.PropertyRequest()
  if not packed.Unpack(request):
    raise PropertyError(code_pb2.INVALID_ARGUMENT, "malformed PropertyRequest")
  if request.WhichOneof("payload") == "list_property" and not request.list_property.key:
    response = properties_pb2.PropertyResponse()
    response.list_property.SetInParent()
    result = any_pb2.Any()
    result.Pack(response)
    return result
  raise PropertyError(code_pb2.FAILED_PRECONDITION,
                      "a properties request before JoinWorld: this server's properties belong to "
                      "the joined world's environment (there are no universal ones; listing the "
                      "root before joining gives none), so join a world first")


def is_property_request(packed: any_pb2.Any) -> bool:
  return packed.Is(properties_pb2.PropertyRequest.DESCRIPTOR)

