"""Client side of the dm_env_rpc properties extension.

An environment may expose named properties that a client can read, write and
list.  The requests and responses travel packed in the `extension` field of
EnvironmentRequest / EnvironmentResponse; `PropertiesExtension` hides that:

  properties = PropertiesExtension(connection)
  value = properties['my_property']        # read
  properties['my_property'] = new_value    # write
  spec = properties.specs()['my_property'] # list
"""

import contextlib
import typing
from typing import Mapping, Optional, Sequence

from dm_env import specs as dm_env_specs
from google.protobuf import any_pb2
from google.rpc import code_pb2

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_utils
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils
from dm_env_rpc_fast.v1.extensions import properties_pb2

if typing.TYPE_CHECKING:
  from dm_env_rpc_fast.v1 import connection as dm_env_rpc_connection

# Status codes with a Python exception of their own.
_ERRORS_BY_CODE = {
    code_pb2.NOT_FOUND: (KeyError, "Property key not found!"),
    code_pb2.PERMISSION_DENIED: (PermissionError, "Property permission denied!"),
    code_pb2.INVALID_ARGUMENT: (ValueError, "Property value error!"),
}


@contextlib.contextmanager
def _convert_dm_env_rpc_error():
  """Re-raises NOT_FOUND, PERMISSION_DENIED and INVALID_ARGUMENT errors.

  They become KeyError, PermissionError and ValueError (with the
  DmEnvRpcError as their cause); other errors pass through unchanged.
  """
  try:
    yield
  except error.DmEnvRpcError as e:
    mapped = _ERRORS_BY_CODE.get(e.code)
    if mapped is None:
      raise
    exception_type, text = mapped
    raise exception_type(text) from e


class PropertySpec(object):
  """What the environment says about one property."""

  def __init__(self, property_spec_proto: properties_pb2.PropertySpec):
    """Wraps a PropertySpec message.

    Args:
      property_spec_proto: the message; kept by reference.
    """
    self._property_spec_proto = property_spec_proto

  @property
  def key(self) -> str:
    """The property's key (its spec's name)."""
    return self._property_spec_proto.spec.name

  @property
  def readable(self) -> bool:
    """Whether the property can be read."""
    return self._property_spec_proto.is_readable

  @property
  def writable(self) -> bool:
    """Whether the property can be written."""
    return self._property_spec_proto.is_writable

  @property
  def listable(self) -> bool:
    """Whether the property has sub-properties to list."""
    return self._property_spec_proto.is_listable

  @property
  def spec(self) -> Optional[dm_env_specs.Array]:
    """The property's value spec as a dm_env spec.

    Returns:
      A new dm_env spec, or None when the spec's dtype is INVALID_DATA_TYPE
      (typically a property that is only listable).
    """
    tensor_spec = self._property_spec_proto.spec
    if tensor_spec.dtype == dm_env_rpc_pb2.DataType.INVALID_DATA_TYPE:
      return None
    return dm_env_utils.tensor_spec_to_dm_env_spec(tensor_spec)

  @property
  def description(self) -> str:
    """The property's free-text description (may be empty)."""
    return self._property_spec_proto.description

  def __repr__(self):
    return (f"PropertySpec(key={self.key}, readable={self.readable}, "
            f"writable={self.writable}, listable={self.listable}, "
            f"spec={self.spec}, description={self.description})")


class PropertiesExtension(object):
  """Reads, writes and lists an environment's properties over a connection."""

  def __init__(self, connection: "dm_env_rpc_connection.ConnectionType"):
    """Creates the helper.

    Args:
      connection: a connection to a dm_env_rpc server (anything with
        `send(request) -> response`); kept by reference, not closed here.
    """
    self._connection = connection

  def __getitem__(self, key: str):
    """Same as `read(key)`."""
    return self.read(key)

  def __setitem__(self, key: str, value) -> None:
    """Same as `write(key, value)`."""
    self.write(key, value)

  def _request(self, request: properties_pb2.PropertyRequest):
    """Sends a property request; returns the response (still packed, an Any)."""
    packed = any_pb2.Any()
    packed.Pack(request)
    with _convert_dm_env_rpc_error():
      return self._connection.send(packed)

  def _query(self, request: properties_pb2.PropertyRequest) -> properties_pb2.PropertyResponse:
    """Sends a property request and unpacks the PropertyResponse."""
    response = properties_pb2.PropertyResponse()
    self._request(request).Unpack(response)
    return response

  def specs(self, key: str = "") -> Mapping[str, PropertySpec]:
    """The properties under `key`, keyed by their keys.

    Args:
      key: where to list; empty for the root.

    Returns:
      A new dict of key to PropertySpec.
    """
    return {spec.key: spec for spec in self.list(key)}

  def read(self, key: str):
    """Reads a property's value.

    Args:
      key: the property's key.

    Returns:
      The value as `tensor_utils.unpack_tensor` gives it: a numpy scalar for
      an empty shape, else a numpy array.

    Raises:
      KeyError: the property does not exist.
      PermissionError: the property cannot be read.
      ValueError: the request was invalid.
      DmEnvRpcError: any other error from the environment.
    """
    response = self._query(properties_pb2.PropertyRequest(
        read_property=properties_pb2.ReadPropertyRequest(key=key)))
    return tensor_utils.unpack_tensor(response.read_property.value)

  def write(self, key: str, value) -> None:
    """Writes a property's value.

    Args:
      key: the property's key.
      value: a scalar, numpy array or nested sequence, packed with
        `tensor_utils.pack_tensor` (dtype inferred).

    Raises:
      KeyError: the property does not exist.
      PermissionError: the property cannot be written.
      ValueError: the value was refused.
      DmEnvRpcError: any other error from the environment.
    """
    self._request(properties_pb2.PropertyRequest(
        write_property=properties_pb2.WritePropertyRequest(
            key=key, value=tensor_utils.pack_tensor(value))))

  def list(self, key: str = "") -> Sequence[PropertySpec]:
    """Lists the properties directly under `key`.

    Args:
      key: where to list; empty for the root.

    Returns:
      A tuple of PropertySpec, in the environment's order.

    Raises:
      KeyError: the key does not exist.
      PermissionError: the key cannot be listed.
      ValueError: the request was invalid.
      DmEnvRpcError: any other error from the environment.
    """
    response = self._query(properties_pb2.PropertyRequest(
        list_property=properties_pb2.ListPropertyRequest(key=key)))
    return tuple(PropertySpec(spec) for spec in response.list_property.values)
