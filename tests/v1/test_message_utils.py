"""message_utils: packing requests/responses and EnvironmentRequest envelopes."""
import pytest
from google.protobuf import any_pb2
from google.protobuf import struct_pb2
from google.protobuf import wrappers_pb2
from google.rpc import status_pb2

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import message_utils

NATIVE_REQUESTS = [pb.CreateWorldRequest(), pb.JoinWorldRequest(world_name="w"),
                   pb.StepRequest(requested_observations=[1]), pb.ResetRequest(),
                   pb.ResetWorldRequest(), pb.LeaveWorldRequest(), pb.DestroyWorldRequest()]
NATIVE_RESPONSES = [pb.CreateWorldResponse(world_name="w"), pb.JoinWorldResponse(),
                    pb.StepResponse(state=pb.EnvironmentStateType.RUNNING), pb.ResetResponse(),
                    pb.ResetWorldResponse(), pb.LeaveWorldResponse(), pb.DestroyWorldResponse()]


def packed(msg):
  any_message = any_pb2.Any()
  any_message.Pack(msg)
  return any_message


@pytest.mark.parametrize("request_message", NATIVE_REQUESTS)
def test_native_requests_pass_through(request_message):
  assert message_utils.pack_rpc_request(request_message) is request_message
  assert message_utils.unpack_rpc_request(
      request_message, extension_type=struct_pb2.Value) is request_message


@pytest.mark.parametrize("response", NATIVE_RESPONSES)
def test_native_responses_pass_through(response):
  assert message_utils.pack_rpc_response(response) is response
  assert message_utils.unpack_rpc_response(
      response, extension_type=struct_pb2.Value) is response


@pytest.mark.parametrize("pack,unpack", [
    (message_utils.pack_rpc_request, message_utils.unpack_rpc_request),
    (message_utils.pack_rpc_response, message_utils.unpack_rpc_response),
])
def test_extension_round_trip(pack, unpack):
  extension = struct_pb2.Value(string_value="x")
  wrapped = pack(extension)
  assert isinstance(wrapped, any_pb2.Any)
  assert wrapped == packed(extension)
  assert pack(wrapped) is wrapped  # already packed
  assert unpack(wrapped, extension_type=struct_pb2.Value) == extension
  assert unpack(extension, extension_type=struct_pb2.Value) is extension
  # A list of types: the first that matches is used.
  unpacked = unpack(wrapped, extension_type=[wrappers_pb2.Int32Value, struct_pb2.Value])
  assert isinstance(unpacked, struct_pb2.Value) and unpacked == extension
  assert isinstance(unpack(extension, extension_type=(wrappers_pb2.Int32Value, struct_pb2.Value)),
                    struct_pb2.Value)


@pytest.mark.parametrize("unpack", [message_utils.unpack_rpc_request,
                                    message_utils.unpack_rpc_response])
def test_unpack_unknown_extension(unpack):
  wrapped = packed(struct_pb2.Value())
  with pytest.raises(ValueError) as info:
    unpack(wrapped, extension_type=[wrappers_pb2.Int32Value, wrappers_pb2.BoolValue])
  assert str(info.value) == (
      "Extension type could not be found to unpack message: Any.\nKnown Types:\n"
      f"- {wrappers_pb2.Int32Value}\n- {wrappers_pb2.BoolValue}")
  with pytest.raises(ValueError) as info:
    unpack(struct_pb2.Value(), extension_type=wrappers_pb2.Int32Value)
  assert str(info.value) == "Cannot unpack extension message with type: Value."


def test_native_response_is_not_a_native_request():
  # A response passed as a request is treated as an extension.
  response = pb.StepResponse()
  assert isinstance(message_utils.pack_rpc_request(response), any_pb2.Any)


@pytest.mark.parametrize("request_message", NATIVE_REQUESTS + [packed(struct_pb2.Value())])
def test_pack_environment_request(request_message):
  result = message_utils.pack_environment_request(request_message)
  assert isinstance(result, message_utils.EnvironmentRequestAndFieldName)
  envelope, field_name = result
  assert result.environment_request is envelope and result.field_name == field_name
  assert envelope.WhichOneof("payload") == field_name
  field = pb.EnvironmentRequest.DESCRIPTOR.fields_by_name[field_name]
  assert field.message_type is request_message.DESCRIPTOR
  assert getattr(envelope, field_name) == request_message
  assert getattr(envelope, field_name) is not request_message  # a copy


def test_pack_environment_request_field_names():
  names = [message_utils.pack_environment_request(m).field_name for m in NATIVE_REQUESTS]
  assert names == ["create_world", "join_world", "step", "reset", "reset_world",
                   "leave_world", "destroy_world"]


def test_pack_environment_request_rejects_other_messages():
  with pytest.raises(KeyError):
    message_utils.pack_environment_request(struct_pb2.Value())


def test_unpack_environment_response():
  response = pb.EnvironmentResponse(step=pb.StepResponse(state=pb.EnvironmentStateType.RUNNING))
  assert message_utils.unpack_environment_response(response, "step") == response.step


def test_unpack_environment_response_wrong_field():
  response = pb.EnvironmentResponse(reset=pb.ResetResponse())
  with pytest.raises(ValueError) as info:
    message_utils.unpack_environment_response(response, "step")
  assert str(info.value) == "Unexpected response message! expected: step, actual: reset"
  with pytest.raises(ValueError, match="actual: None"):
    message_utils.unpack_environment_response(pb.EnvironmentResponse(), "step")


def test_unpack_environment_response_error():
  status = status_pb2.Status(code=3, message="bad things")
  response = pb.EnvironmentResponse(error=status)
  with pytest.raises(error.DmEnvRpcError) as info:
    message_utils.unpack_environment_response(response, "step")
  assert info.value.code == 3 and info.value.message == "bad things"


def test_type_aliases():
  assert message_utils.DmEnvRpcPackedExtensionMessage is any_pb2.Any
  assert set(message_utils.DmEnvRpcNativeRequest.__args__) == {type(m) for m in NATIVE_REQUESTS}
  assert set(message_utils.DmEnvRpcNativeResponse.__args__) == {
      type(m) for m in NATIVE_RESPONSES}
