"""The properties extension, through the client's `PropertiesExtension`.

RichEnv offers: gain (float32 in [0, 10], read/write), counter (int32,
read/write, refuses odd values), camera (string, read-only) and camera.fov
(float64 (2,), read/write), arm.length (read-only) and arm.limits.max
(read-only), secret (write-only), broken (its read raises) and liar (its read
returns a value its spec cannot hold).
"""
from dm_env import specs
from google.protobuf import any_pb2
from google.rpc import code_pb2
import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1.extensions import properties
from dm_env_rpc_fast.v1.extensions import properties_pb2

from support import server_envs
from support import server_helpers

DT = dm_env_rpc_pb2.DataType


@pytest.fixture
def props(joined):
  """(PropertiesExtension on a joined stream, the world's environment)."""
  j = joined()
  return properties.PropertiesExtension(j.connection), j.env


def _summary(spec):
  return (spec.readable, spec.writable, spec.listable)


def test_listing_the_root_gives_properties_and_prefixes(props):
  """Listing the root gives each top-level key: properties with their specs, permissions and
  descriptions, prefixes as listable."""
  extension, _ = props
  listed = extension.specs()
  assert list(listed) == ["arm", "broken", "camera", "counter", "gain", "liar", "secret"]
  assert _summary(listed["arm"]) == (False, False, True)  # only a prefix
  assert listed["arm"].spec is None
  assert _summary(listed["camera"]) == (True, False, True)  # a property and a prefix
  assert _summary(listed["gain"]) == (True, True, False)
  assert _summary(listed["secret"]) == (False, True, False)
  assert listed["gain"].description == "a bounded gain"
  assert listed["camera"].description == "the camera model"
  gain = listed["gain"].spec
  assert gain.dtype == np.float32 and gain.shape == ()
  assert (gain.minimum, gain.maximum) == (0.0, 10.0)
  assert isinstance(listed["camera"].spec, specs.StringArray)


def test_listing_a_prefix_gives_its_direct_children(props):
  """Listing a key gives its direct children only, deeper prefixes as listable."""
  extension, _ = props
  assert {k: _summary(s) for k, s in extension.specs("arm").items()} == {
      "arm.length": (True, False, False), "arm.limits": (False, False, True)}
  assert list(extension.specs("arm.limits")) == ["arm.limits.max"]
  assert list(extension.specs("camera")) == ["camera.fov"]
  assert extension.specs("camera")["camera.fov"].spec.shape == (2,)
  assert extension.specs("gain") == {}  # a property without children


def test_listing_an_unknown_key_is_a_key_error(props):
  """Listing a key that is neither property nor prefix is NOT_FOUND (KeyError on the client)."""
  extension, _ = props
  with pytest.raises(KeyError) as caught:
    extension.list("nope")
  assert caught.value.__cause__.code == code_pb2.NOT_FOUND
  assert "no property 'nope'" in caught.value.__cause__.message
  with pytest.raises(KeyError):
    extension.list("ar")  # a prefix of a key's text is no prefix of its path


def test_reading_gives_values_of_their_specs(props):
  """Reads return each property's value in its spec's dtype and shape."""
  extension, _ = props
  gain = extension["gain"]
  assert type(gain) is np.float32 and gain == 1.5
  assert extension["counter"] == 7 and type(extension["counter"]) is np.int32
  assert extension["camera"] == "pinhole"
  fov = extension["camera.fov"]
  assert fov.dtype == np.float64 and fov.tolist() == [60.0, 45.0]
  assert extension["arm.length"] == 0.75
  assert extension["arm.limits.max"].tolist() == [1.0, 2.0, 3.0]
  assert extension["arm.limits.max"].dtype == np.float32


def test_writing_changes_the_environment(props):
  """Writes reach the environment, and reads see them."""
  extension, env = props
  extension["gain"] = np.float32(2.5)
  assert env.gain == 2.5 and extension["gain"] == 2.5
  extension["camera.fov"] = [90.0, 70.0]
  assert extension["camera.fov"].tolist() == [90.0, 70.0]
  extension["secret"] = 12
  assert env.secret == 12


def test_a_python_int_can_be_written_to_an_int32_property(props):
  """The client packs 8 as int64; it fits an int32, so the property takes it, as an int32."""
  extension, env = props
  extension["counter"] = 8
  assert env.counter == 8 and env.counter.dtype == np.int32
  assert extension["counter"] == 8
  extension["gain"] = 3  # an int64 that a float32 holds exactly
  assert env.gain == 3.0 and env.gain.dtype == np.float32


@pytest.mark.parametrize("key, value, fragment", [
    ("gain", np.float32(11), "above its maximum"),
    ("gain", np.float32(-1), "below its minimum"),
    ("gain", 0.1, "dtype float64"),  # 0.1 is no float32
    ("counter", 2 ** 40, "dtype int64"),  # does not fit an int32
    ("counter", "three", "dtype"),
    ("camera.fov", [1.0, 2.0, 3.0], "shape [3]"),
    ("counter", 9, "refused the value: counter must be even, not 9"),
])
def test_a_bad_value_is_a_value_error(props, key, value, fragment):
  """A value out of bounds, of the wrong dtype or shape, or refused by the property, is
  INVALID_ARGUMENT (ValueError) and changes nothing."""
  extension, env = props
  before = (env.gain, env.counter, env.fov.tolist())
  with pytest.raises(ValueError) as caught:
    extension[key] = value
  cause = caught.value.__cause__
  assert isinstance(cause, error.DmEnvRpcError) and cause.code == code_pb2.INVALID_ARGUMENT
  assert f"property {key!r}" in cause.message, cause.message
  assert fragment in cause.message, cause.message
  assert (env.gain, env.counter, env.fov.tolist()) == before
  assert extension["gain"] == before[0]  # the stream goes on


def test_permissions_are_permission_errors(props):
  """Writing a read-only property or reading a write-only one is PERMISSION_DENIED
  (PermissionError)."""
  extension, _ = props
  for action in (lambda: extension.write("camera", "fisheye"),
                 lambda: extension.read("secret"),
                 lambda: extension.write("arm.length", 1.0)):
    with pytest.raises(PermissionError) as caught:
      action()
    assert caught.value.__cause__.code == code_pb2.PERMISSION_DENIED
    assert "is not readable" in caught.value.__cause__.message or (
        "is not writable" in caught.value.__cause__.message)


def test_an_unknown_key_is_a_key_error(props):
  """Reading or writing a key that is no property (a prefix included) is NOT_FOUND (KeyError)."""
  extension, _ = props
  for action in (lambda: extension.read("nope"), lambda: extension.write("nope", 1),
                 lambda: extension.read("arm")):  # a prefix, not a property
    with pytest.raises(KeyError) as caught:
      action()
    assert caught.value.__cause__.code == code_pb2.NOT_FOUND


def test_a_failing_read_is_internal(props):
  """A read that raises, or returns what its spec cannot hold, is INTERNAL naming the property."""
  extension, _ = props
  with pytest.raises(error.DmEnvRpcError) as caught:
    extension.read("broken")
  assert caught.value.code == code_pb2.INTERNAL
  assert "RuntimeError" in caught.value.message and "sensor unplugged" in caught.value.message
  with pytest.raises(error.DmEnvRpcError) as caught:
    extension.read("liar")
  assert caught.value.code == code_pb2.INTERNAL
  assert "'liar'" in caught.value.message and "float64" in caught.value.message
  assert extension["counter"] == 7


def test_an_environment_without_properties_is_unimplemented(start_server, connect):
  """An environment without dm_env_rpc_properties() answers properties requests with UNIMPLEMENTED.
  An environment without dm_env_rpc_properties() answers properties requests with UNIMPLEMENTED."""
  running = start_server(server_envs.make_plain_env)
  connection = connect(running.address)
  world = connection.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name
  connection.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
  extension = properties.PropertiesExtension(connection)
  with pytest.raises(error.DmEnvRpcError) as caught:
    extension.specs()
  assert caught.value.code == code_pb2.UNIMPLEMENTED
  assert "offers no properties" in caught.value.message
  assert connection.send(dm_env_rpc_pb2.StepRequest()).state == (
      dm_env_rpc_pb2.EnvironmentStateType.RUNNING)


def test_properties_need_a_joined_world(rich_server, connect):
  """A properties request before JoinWorld is FAILED_PRECONDITION."""
  connection = connect(rich_server.address)
  extension = properties.PropertiesExtension(connection)
  with pytest.raises(error.DmEnvRpcError) as caught:
    extension.read("gain")
  assert caught.value.code == code_pb2.FAILED_PRECONDITION
  assert "before JoinWorld" in caught.value.message


def test_a_property_request_without_a_payload_is_invalid_argument(props):
  """A PropertyRequest without a payload is INVALID_ARGUMENT; the stream goes on."""
  extension, _ = props
  packed = any_pb2.Any()
  packed.Pack(properties_pb2.PropertyRequest())
  connection = extension._connection
  server_helpers.expect_error(connection.send, packed, code_pb2.INVALID_ARGUMENT,
                              "PropertyRequest without a payload")
  assert extension["counter"] == 7


def test_properties_reach_the_world_the_stream_joined(joined):
  """Two worlds, two streams: each reads and writes its own environment's properties."""
  first, second = joined(), joined()
  a = properties.PropertiesExtension(first.connection)
  b = properties.PropertiesExtension(second.connection)
  a["counter"] = 2
  b["counter"] = 4
  assert (first.env.counter, second.env.counter) == (2, 4)
  assert (a["counter"], b["counter"]) == (2, 4)
