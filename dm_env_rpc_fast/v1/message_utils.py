"""Wrapping and unwrapping dm_env_rpc requests, responses and extension messages.

A request is either one of the native request messages (CreateWorldRequest,
StepRequest, ...) or an extension: any other protobuf message, which travels
packed in a `google.protobuf.Any`.  Responses mirror this.
"""

import typing
from typing import Iterable, NamedTuple, Type, Union

import immutabledict
from google.protobuf import any_pb2
from google.protobuf import message

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error

# Message type name -> the EnvironmentRequest field that carries it
# ('StepRequest' -> 'step', 'Any' -> 'extension').
_MESSAGE_TYPE_TO_FIELD = immutabledict.immutabledict(
    (field.message_type.name, field.name)
    for field in dm_env_rpc_pb2.EnvironmentRequest.DESCRIPTOR.fields)

# Any message that is not a native request or response: an extension.  (Every
# protobuf message matches this alias, native ones included.)
DmEnvRpcExtensionMessage = message.Message

# An extension message packed for the wire.
DmEnvRpcPackedExtensionMessage = any_pb2.Any

# The requests dm_env_rpc itself defines.
DmEnvRpcNativeRequest = Union[
    dm_env_rpc_pb2.CreateWorldRequest,
    dm_env_rpc_pb2.JoinWorldRequest,
    dm_env_rpc_pb2.StepRequest,
    dm_env_rpc_pb2.ResetRequest,
    dm_env_rpc_pb2.ResetWorldRequest,
    dm_env_rpc_pb2.LeaveWorldRequest,
    dm_env_rpc_pb2.DestroyWorldRequest,
]

# The responses dm_env_rpc itself defines.
DmEnvRpcNativeResponse = Union[
    dm_env_rpc_pb2.CreateWorldResponse,
    dm_env_rpc_pb2.JoinWorldResponse,
    dm_env_rpc_pb2.StepResponse,
    dm_env_rpc_pb2.ResetResponse,
    dm_env_rpc_pb2.ResetWorldResponse,
    dm_env_rpc_pb2.LeaveWorldResponse,
    dm_env_rpc_pb2.DestroyWorldResponse,
]

# What goes on the wire: a native message or a packed extension.
DmEnvRpcRequest = Union[DmEnvRpcNativeRequest, DmEnvRpcPackedExtensionMessage]
DmEnvRpcResponse = Union[DmEnvRpcNativeResponse, DmEnvRpcPackedExtensionMessage]

_NATIVE_REQUESTS = typing.get_args(DmEnvRpcNativeRequest)
_NATIVE_RESPONSES = typing.get_args(DmEnvRpcNativeResponse)

_ExtensionTypes = Union[Type[message.Message], Iterable[Type[message.Message]]]


def _pack_message(msg) -> any_pb2.Any:
  """`msg` packed in an Any (an Any is returned as is)."""
  if isinstance(msg, any_pb2.Any):
    return msg
  packed = any_pb2.Any()
  packed.Pack(msg)
  return packed


def _unpack_message(msg: message.Message, *, extension_type: _ExtensionTypes):
  """Unwraps an extension message into the first matching type.

  Args:
    msg: an instance of one of `extension_type`, or an Any holding one.
    extension_type: a message class or an iterable of them, tried in order.

  Returns:
    `msg` itself if it is already of a listed type, else a new message of the
    first listed type that the Any holds.

  Raises:
    ValueError: `msg` is an Any holding none of the types, or neither an Any
      nor an instance of them.
  """
  types = (extension_type,) if isinstance(extension_type, type) else tuple(extension_type)
  if isinstance(msg, types):
    return msg
  if isinstance(msg, any_pb2.Any):
    for candidate in types:
      if msg.Is(candidate.DESCRIPTOR):
        unpacked = candidate()
        msg.Unpack(unpacked)
        return unpacked
    known = "\n".join(f"- {t}" for t in types)
    raise ValueError(
        "Extension type could not be found to unpack message: "
        f"{type(msg).__name__}.\nKnown Types:\n{known}")
  raise ValueError(f"Cannot unpack extension message with type: {type(msg).__name__}.")


def pack_rpc_request(
    request: Union[DmEnvRpcRequest, DmEnvRpcExtensionMessage],
) -> DmEnvRpcRequest:
  """Makes a request ready to send.

  Args:
    request: a native request, a packed extension (Any) or an extension
      message.

  Returns:
    Native requests and Any messages unchanged (the same object); any other
    message packed into a new Any.
  """
  if isinstance(request, _NATIVE_REQUESTS):
    return request
  return _pack_message(request)


def unpack_rpc_request(
    request: Union[DmEnvRpcRequest, DmEnvRpcExtensionMessage],
    *,
    extension_type: _ExtensionTypes,
) -> Union[DmEnvRpcRequest, DmEnvRpcExtensionMessage]:
  """Takes the wrapper off a received extension request.

  Args:
    request: a native request, an extension message, or an Any holding one.
    extension_type: the extension message class(es) to accept, tried in order.

  Returns:
    Native requests and instances of `extension_type` unchanged; an Any
    unpacked into a new message of the first matching type.

  Raises:
    ValueError: an Any holding none of `extension_type`, or a message that is
      neither native, an Any, nor of `extension_type`.
  """
  if isinstance(request, _NATIVE_REQUESTS):
    return request
  return _unpack_message(request, extension_type=extension_type)


def pack_rpc_response(
    response: Union[DmEnvRpcResponse, DmEnvRpcExtensionMessage],
) -> DmEnvRpcResponse:
  """Makes a response ready to send.

  Args:
    response: a native response, a packed extension (Any) or an extension
      message.

  Returns:
    Native responses and Any messages unchanged (the same object); any other
    message packed into a new Any.
  """
  if isinstance(response, _NATIVE_RESPONSES):
    return response
  return _pack_message(response)


def unpack_rpc_response(
    response: Union[DmEnvRpcResponse, DmEnvRpcExtensionMessage],
    *,
    extension_type: _ExtensionTypes,
) -> Union[DmEnvRpcRequest, DmEnvRpcExtensionMessage]:
  """Takes the wrapper off a received extension response.

  Args:
    response: a native response, an extension message, or an Any holding one.
    extension_type: the extension message class(es) to accept, tried in order.

  Returns:
    Native responses and instances of `extension_type` unchanged; an Any
    unpacked into a new message of the first matching type.

  Raises:
    ValueError: an Any holding none of `extension_type`, or a message that is
      neither native, an Any, nor of `extension_type`.
  """
  if isinstance(response, _NATIVE_RESPONSES):
    return response
  return _unpack_message(response, extension_type=extension_type)


class EnvironmentRequestAndFieldName(NamedTuple):
  """An EnvironmentRequest and the name of its payload field that is set."""
  environment_request: dm_env_rpc_pb2.EnvironmentRequest
  field_name: str


def pack_environment_request(request: DmEnvRpcRequest) -> EnvironmentRequestAndFieldName:
  """Wraps a request in a new EnvironmentRequest.

  Args:
    request: a native request message or an Any (sent as `extension`); copied,
      not kept.

  Returns:
    (environment_request, field_name): the new envelope and the payload field
    holding the copy, e.g. 'step'.

  Raises:
    KeyError: `request` is of no type an EnvironmentRequest can carry.
  """
  field_name = _MESSAGE_TYPE_TO_FIELD[type(request).__name__]
  environment_request = dm_env_rpc_pb2.EnvironmentRequest()
  getattr(environment_request, field_name).CopyFrom(request)
  return EnvironmentRequestAndFieldName(environment_request, field_name)


def unpack_environment_response(
    environment_response: dm_env_rpc_pb2.EnvironmentResponse,
    expected_field_name: str) -> DmEnvRpcResponse:
  """The response message inside an EnvironmentResponse.

  Args:
    environment_response: the received envelope.
    expected_field_name: the payload field the answer should be in, e.g. 'step'.

  Returns:
    The payload message (a reference into `environment_response`, not a copy).

  Raises:
    DmEnvRpcError: the payload is an error status.
    ValueError: the payload is in another field than `expected_field_name`.
  """
  field_name = environment_response.WhichOneof("payload")
  if field_name == "error":
    raise error.DmEnvRpcError(environment_response.error)
  if field_name != expected_field_name:
    raise ValueError(
        f"Unexpected response message! expected: {expected_field_name}, actual: {field_name}")
  return getattr(environment_response, expected_field_name)
