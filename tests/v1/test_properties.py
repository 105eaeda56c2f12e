"""PropertiesExtension over a fake connection that serves a small property store."""
import numpy as np
import pytest
from dm_env import specs
from google.protobuf import any_pb2
from google.rpc import code_pb2
from google.rpc import status_pb2

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_spec_utils
from dm_env_rpc_fast.v1 import tensor_utils
from dm_env_rpc_fast.v1.extensions import properties
from dm_env_rpc_fast.v1.extensions import properties_pb2

DT = dm_env_rpc_pb2.DataType


def _spec(name, dtype=DT.INVALID_DATA_TYPE, shape=(), **flags):
  return properties_pb2.PropertySpec(
      spec=dm_env_rpc_pb2.TensorSpec(name=name, dtype=dtype, shape=list(shape)), **flags)


class FakeConnection:
  """Answers property requests from dicts, like a server would; records requests."""

  def __init__(self):
    self.values = {"speed": tensor_utils.pack_tensor(np.float32(2.5)),
                   "grid": tensor_utils.pack_tensor(np.arange(4, dtype=np.int32).reshape(2, 2))}
    bounded = _spec("level", DT.INT32, is_readable=True)
    tensor_spec_utils.set_bounds(bounded.spec, 0, 9)
    self.listing = {
        "": [_spec("speed", DT.FLOAT, is_readable=True, is_writable=True,
                   description="metres per second"),
             _spec("grid", DT.INT32, (2, 2), is_readable=True),
             _spec("sub", is_listable=True), bounded],
        "sub": [_spec("sub.x", DT.STRING, is_readable=True)],
    }
    self.errors = {"secret": code_pb2.PERMISSION_DENIED, "broken": code_pb2.INVALID_ARGUMENT,
                   "weird": code_pb2.INTERNAL}
    self.requests = []

  def send(self, request):
    assert isinstance(request, any_pb2.Any)
    property_request = properties_pb2.PropertyRequest()
    assert request.Unpack(property_request)
    self.requests.append(property_request)
    kind = property_request.WhichOneof("payload")
    key = getattr(property_request, kind).key
    if key in self.errors:
      raise error.DmEnvRpcError(status_pb2.Status(code=self.errors[key], message=key))
    response = properties_pb2.PropertyResponse()
    if kind == "read_property":
      if key not in self.values:
        raise error.DmEnvRpcError(status_pb2.Status(code=code_pb2.NOT_FOUND))
      response.read_property.value.CopyFrom(self.values[key])
    elif kind == "write_property":
      self.values[key] = property_request.write_property.value
      response.write_property.SetInParent()
    else:
      if key not in self.listing:
        raise error.DmEnvRpcError(status_pb2.Status(code=code_pb2.NOT_FOUND))
      response.list_property.values.extend(self.listing[key])
    packed = any_pb2.Any()
    packed.Pack(response)
    return packed


@pytest.fixture
def connection():
  return FakeConnection()


@pytest.fixture
def extension(connection):
  return properties.PropertiesExtension(connection)


def test_read(extension, connection):
  speed = extension.read("speed")
  assert type(speed) is np.float32 and speed == 2.5
  grid = extension["grid"]
  np.testing.assert_array_equal(grid, np.arange(4).reshape(2, 2))
  assert grid.dtype == np.int32
  assert connection.requests[0] == properties_pb2.PropertyRequest(
      read_property=properties_pb2.ReadPropertyRequest(key="speed"))


def test_write_then_read(extension, connection):
  extension.write("speed", 4.0)
  assert connection.requests[-1].write_property.key == "speed"
  assert connection.requests[-1].write_property.value == tensor_utils.pack_tensor(4.0)
  extension["name"] = ["a", "b"]
  assert extension["name"].tolist() == ["a", "b"]
  assert extension["speed"] == 4.0


def test_list_and_specs(extension):
  listed = extension.list()
  assert isinstance(listed, tuple)
  assert [p.key for p in listed] == ["speed", "grid", "sub", "level"]
  by_key = extension.specs()
  assert list(by_key) == ["speed", "grid", "sub", "level"]
  speed = by_key["speed"]
  assert (speed.readable, speed.writable, speed.listable) == (True, True, False)
  assert speed.description == "metres per second"
  assert speed.spec == specs.Array(shape=(), dtype=np.float32, name="speed")
  assert by_key["grid"].spec == specs.Array(shape=(2, 2), dtype=np.int32, name="grid")
  assert by_key["level"].spec == specs.DiscreteArray(num_values=10, dtype=np.int32, name="level")
  sub = by_key["sub"]
  assert sub.listable and not sub.readable and sub.spec is None
  assert list(extension.specs("sub")) == ["sub.x"]
  assert extension.specs("sub")["sub.x"].spec == specs.StringArray(shape=(), name="sub.x")


def test_repr(extension):
  text = repr(extension.specs()["speed"])
  assert text.startswith("PropertySpec(key=speed, readable=True, writable=True, listable=False, spec=")
  assert text.endswith(", description=metres per second)")


@pytest.mark.parametrize("key,exception,message", [
    ("missing", KeyError, "'Property key not found!'"),
    ("secret", PermissionError, "Property permission denied!"),
    ("broken", ValueError, "Property value error!"),
])
def test_errors_are_translated(extension, key, exception, message):
  with pytest.raises(exception) as info:
    extension[key]
  assert str(info.value) == message
  assert isinstance(info.value.__cause__, error.DmEnvRpcError)


def test_errors_on_write_and_list(extension):
  with pytest.raises(PermissionError):
    extension["secret"] = 1
  with pytest.raises(KeyError):
    extension.list("nowhere")


def test_other_errors_pass_through(extension):
  with pytest.raises(error.DmEnvRpcError) as info:
    extension["weird"]
  assert info.value.code == code_pb2.INTERNAL


def test_write_packs_before_sending(extension, connection):
  with pytest.raises(TypeError):
    extension.write("speed", np.float16(1))
  assert connection.requests == []
