"""The committed *_pb2 / *_pb2_grpc modules are what protos/ compiles to (not stale)."""

import importlib.util
import pathlib

import pytest
from google.protobuf import descriptor_pb2

from dm_env_rpc_fast._proto import dm_env_rpc_pb2 as generated_dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2, dm_env_rpc_pb2_grpc
from dm_env_rpc_fast.shm import channel_pb2
from dm_env_rpc_fast.v1.extensions import properties_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = {
    "dm_env_rpc/v1/dm_env_rpc.proto": dm_env_rpc_pb2,
    "dm_env_rpc/v1/extensions/properties.proto": properties_pb2,
    "dm_env_rpc_fast/shm/channel.proto": channel_pb2,
}


def _gen_protos():
  """tools/gen_protos.py, imported by path (tools/ is not a package)."""
  spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "tools" / "gen_protos.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
  """{file name: FileDescriptorProto} compiled from protos/ by the installed grpc_tools."""
  from grpc_tools import protoc

  gen = _gen_protos()
  out = tmp_path_factory.mktemp("protos") / "set.pb"
  includes = [f"-I{d}" for d in gen.include_dirs()]
  sources = [str(gen.PROTO_ROOT / name) for name in MODULES]
  rc = protoc.main(["protoc", *includes, f"--descriptor_set_out={out}", *sources])
  assert rc == 0, f"protoc failed on {sources}"
  files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
  return {f.name: f for f in files}


def _without_json_names(file_proto):
  """protoc's python_out leaves json_name out of the descriptors it embeds; drop it here too."""
  out = descriptor_pb2.FileDescriptorProto()
  out.CopyFrom(file_proto)

  def strip(messages):
    for message in messages:
      for field in list(message.field) + list(message.extension):
        field.ClearField("json_name")
      strip(message.nested_type)

  strip(out.message_type)
  for field in out.extension:
    field.ClearField("json_name")
  return out


@pytest.mark.parametrize("name", sorted(MODULES))
def test_committed_descriptors_match_the_protos(compiled, name):
  committed = descriptor_pb2.FileDescriptorProto.FromString(MODULES[name].DESCRIPTOR.serialized_pb)
  assert name in compiled, f"protoc did not produce {name}: {sorted(compiled)}"
  fresh = _without_json_names(compiled[name])
  assert not any(f.HasField("json_name") for m in committed.message_type for f in m.field)
  if committed != fresh:
    # Name what differs, so a stale module is easy to spot.
    for field in ("message_type", "enum_type", "service", "dependency", "options", "package"):
      assert getattr(committed, field) == getattr(fresh, field), f"{name}: {field} differs"
  assert committed == fresh, f"{name}: run tools/gen_protos.py"


def test_message_full_names_are_upstreams():
  """Any type URLs carry these names: they must be upstream's."""
  assert dm_env_rpc_pb2.DESCRIPTOR.package == "dm_env_rpc.v1"
  assert dm_env_rpc_pb2.Tensor.DESCRIPTOR.full_name == "dm_env_rpc.v1.Tensor"
  assert dm_env_rpc_pb2.EnvironmentResponse.DESCRIPTOR.fields_by_name["error"].message_type \
      .full_name == "google.rpc.Status"
  assert properties_pb2.DESCRIPTOR.package == "dm_env_rpc.v1.extensions.properties"


def test_environment_service():
  service = dm_env_rpc_pb2.DESCRIPTOR.services_by_name["Environment"]
  assert service.full_name == "dm_env_rpc.v1.Environment"
  method = service.methods_by_name["Process"]
  assert method.input_type.full_name == "dm_env_rpc.v1.EnvironmentRequest"
  assert method.output_type.full_name == "dm_env_rpc.v1.EnvironmentResponse"
  assert method.client_streaming and method.server_streaming


class _RecordingChannel:
  def __init__(self):
    self.calls = []

  def _record(self, kind):
    def register(path, request_serializer=None, response_deserializer=None, **kwargs):
      self.calls.append((kind, path, request_serializer, response_deserializer))
      return object()
    return register

  def __getattr__(self, kind):
    if kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
      return self._record(kind)
    raise AttributeError(kind)


def test_grpc_module_process_method():
  channel = _RecordingChannel()
  dm_env_rpc_pb2_grpc.EnvironmentStub(channel)
  assert len(channel.calls) == 1
  kind, path, serializer, deserializer = channel.calls[0]
  assert (kind, path) == ("stream_stream", "/dm_env_rpc.v1.Environment/Process")
  request = dm_env_rpc_pb2.EnvironmentRequest(step=dm_env_rpc_pb2.StepRequest())
  assert serializer(request) == request.SerializeToString()
  response = dm_env_rpc_pb2.EnvironmentResponse(step=dm_env_rpc_pb2.StepResponse(state=1))
  assert deserializer(response.SerializeToString()) == response
  assert hasattr(dm_env_rpc_pb2_grpc.EnvironmentServicer, "Process")
  assert callable(dm_env_rpc_pb2_grpc.add_EnvironmentServicer_to_server)


def test_v1_serves_the_generated_messages_themselves():
  """v1.dm_env_rpc_pb2 re-exports _proto's module: every public name, the same objects."""
  public = {name for name in vars(generated_dm_env_rpc_pb2) if not name.startswith("_")}
  assert public == {name for name in vars(dm_env_rpc_pb2) if not name.startswith("_")}
  for name in public:
    assert getattr(dm_env_rpc_pb2, name) is getattr(generated_dm_env_rpc_pb2, name), name
  assert dm_env_rpc_pb2.Tensor is generated_dm_env_rpc_pb2.Tensor
  assert dm_env_rpc_pb2.DESCRIPTOR is generated_dm_env_rpc_pb2.DESCRIPTOR


def test_generated_modules_import_our_package_not_upstreams():
  for path in (ROOT / "dm_env_rpc_fast").rglob("*_pb2*.py"):
    text = path.read_text()
    assert "from dm_env_rpc.v1" not in text and "import dm_env_rpc.v1" not in text, path
