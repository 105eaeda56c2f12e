"""An asyncio client for one dm_env_rpc stream.

`AsyncConnection.send(request)` is a coroutine: it wraps any dm_env_rpc request
message (or a `google.protobuf.Any`, for extensions) in an `EnvironmentRequest`,
writes it, awaits the answer and returns the unwrapped response message; an
`error` answer raises `DmEnvRpcError`.  That is dm-env-rpc's contract:

    async def main():
      channel = grpc.aio.secure_channel(address, grpc.local_channel_credentials())
      with async_connection.AsyncConnection(channel) as connection:
        response = await connection.send(
            dm_env_rpc_pb2.CreateWorldRequest(settings={...}))

`AsyncConnection.send_step` is the fast path for steps.  On grpc's own aio
channel the stream carries raw bytes (identity serialisers): a step goes out as
bytes from `codec.encode_step_request` and its answer is decoded by
`codec.decode_step_response`, so no protobuf objects are built for its tensors.
Other requests are serialised and parsed by protobuf as usual.  When the stub
is a test double (patched in through `async_connection.dm_env_rpc_pb2_grpc`) or
the channel is not grpc's own (a mock, or a channel with stream interceptors,
which expect messages), the stream carries messages and `send_step` converts at
the edge, so it returns the same results either way.
"""
import asyncio
from typing import Dict, Mapping, Optional, Sequence, Tuple

import grpc

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2_grpc
from dm_env_rpc_fast.v1 import message_utils

try:
  # grpc's own aio channel class: grpc.aio exports only its abstract base.
  from grpc.aio._channel import Channel as _GrpcAioChannel
except ImportError:  # A grpc laid out differently: stay on messages.
  _GrpcAioChannel = None

Metadata = Sequence[Tuple[str, str]]

# The one method of the dm_env_rpc service.
PROCESS_METHOD = "/dm_env_rpc.v1.Environment/Process"

# Captured at import, so that a test patching the module attribute
# `dm_env_rpc_pb2_grpc` cannot make its mock pass for the generated stub.
_GENERATED_STUB = dm_env_rpc_pb2_grpc.EnvironmentStub
_EnvironmentRequest = dm_env_rpc_pb2.EnvironmentRequest
_EnvironmentResponse = dm_env_rpc_pb2.EnvironmentResponse


def _carries_raw_bytes(stub, channel) -> bool:
  """Whether the stream on `channel` may carry bytes instead of messages.

  Only with the generated stub on grpc's own aio channel class, and only when
  that channel has no stream interceptors: an interceptor is entitled to see
  the request and response messages.
  """
  return (type(stub) is _GENERATED_STUB and
          _GrpcAioChannel is not None and
          type(channel) is _GrpcAioChannel and
          not getattr(channel, "_stream_stream_interceptors", True))


def _check_not_eof(response):
  if response is grpc.aio.EOF:
    raise ValueError("The server ended the stream.")
  return response


class AsyncConnection:
  """An asyncio client for a dm_env_rpc server.

  Requests are answered in the order they are sent; concurrent `send` calls
  from several tasks are serialised, so each gets its own response.
  """

  def __init__(self,
               channel: grpc.aio.Channel,
               metadata: Optional[Metadata] = None):
    """Opens a Process stream on `channel`.

    Call it with an event loop running: grpc.aio binds the stream to it.

    Args:
      channel: a grpc.aio channel to the server.  On grpc's own channel class
        (without stream interceptors) the stream carries raw bytes; see the
        module docstring.
      metadata: optional (key, value) pairs sent to the server as gRPC
        metadata.
    """
    stub = dm_env_rpc_pb2_grpc.EnvironmentStub(channel)
    self._raw = _carries_raw_bytes(stub, channel)
    if self._raw:
      process = channel.stream_stream(
          PROCESS_METHOD, request_serializer=None, response_deserializer=None)
    else:
      process = stub.Process
    self._stream = process(metadata=metadata)
    # One request/response exchange at a time: the protocol pairs responses
    # with requests by order alone.
    self._lock = asyncio.Lock()

  async def _exchange(self, request):
    """Writes one message and returns the next one read, in stream format."""
    async with self._lock:
      stream = self._stream
      if stream is None:
        raise ValueError("Cannot send request after stream is closed.")
      await stream.write(request)
      return _check_not_eof(await stream.read())

  async def send(
      self,
      request: message_utils.DmEnvRpcRequest) -> message_utils.DmEnvRpcResponse:
    """Sends `request` and returns the server's response, unwrapped.

    Args:
      request: a dm_env_rpc request message (`CreateWorldRequest`,
        `StepRequest`, ...) or a `google.protobuf.Any` for an extension.

    Returns:
      The matching response message (a `CreateWorldResponse` for a
      `CreateWorldRequest`, an `Any` for an extension, and so on).

    Raises:
      DmEnvRpcError: the server answered with an error.
      ValueError: the connection is closed, the server ended the stream, or
        it answered with a different kind of response.
    """
    environment_request, field_name = message_utils.pack_environment_request(
        request)
    if self._raw:
      data = await self._exchange(environment_request.SerializeToString())
      response = _EnvironmentResponse.FromString(data)
    else:
      response = await self._exchange(environment_request)
    return message_utils.unpack_environment_response(response, field_name)

  async def send_step(
      self,
      actions: Mapping[int, object],
      requested_observations: Sequence[int],
      *,
      zero_copy: bool = False,
  ) -> Tuple[int, Dict[int, object]]:
    """Steps the joined world without building protobuf objects for tensors.

    Args:
      actions: {uid: value}; values are numpy arrays, scalars, nested
        sequences or `Tensor` messages, encoded as `tensor_utils.pack_tensor`
        would encode them (cast them to the spec's dtype first).
      requested_observations: the UIDs of the observations to return.
      zero_copy: when True, fixed-width observations (float, double, int8,
        uint8) are read-only views of the response bytes, which they keep
        alive, instead of writable copies.

    Returns:
      (state, observations): the `EnvironmentStateType` value as an int and
      {uid: array or scalar}, as `tensor_utils.unpack_tensor` gives them.

    Raises:
      DmEnvRpcError: the server answered with an error.
      ValueError: the connection is closed, the server ended the stream, or
        the answer is not a step response or is malformed.
    """
    data = codec.encode_step_request(actions, requested_observations)
    if self._raw:
      response = await self._exchange(data)
    else:
      message = await self._exchange(_EnvironmentRequest.FromString(data))
      response = message.SerializeToString()
    return codec.decode_step_response(response, zero_copy=zero_copy)

  def close(self):
    """Ends the stream: cancels the call.  Closing again does nothing.

    A `send` awaiting its answer when the stream is cancelled raises
    `asyncio.CancelledError`; later sends raise ValueError.
    """
    stream, self._stream = self._stream, None
    if stream is None:
      return
    cancel = getattr(stream, "cancel", None)
    if cancel is None:
      return
    try:
      cancel()
    except RuntimeError:
      # The stream's event loop is already closed, and the call with it.
      pass

  def __exit__(self, *args, **kwargs):
    self.close()

  def __enter__(self):
    return self


_UNLIMITED_MESSAGES = (("grpc.max_send_message_length", -1),
                       ("grpc.max_receive_message_length", -1))


class _ChannelOwningConnection(AsyncConnection):
  """An AsyncConnection that also closes the channel it was made with."""

  def __init__(self, channel, metadata):
    super().__init__(channel=channel, metadata=metadata)
    self._channel = channel

  def close(self):
    """Ends the stream, then closes the channel.

    Returns:
      With an event loop running: the task closing the channel (await it to
      know the channel is closed).  Without one, the channel is closed on a
      fresh loop before returning, and the result is None.  Closing again
      does nothing and returns None.
    """
    super().close()
    channel, self._channel = self._channel, None
    if channel is None:
      return None
    try:
      loop = asyncio.get_running_loop()
    except RuntimeError:
      loop = None
    if loop is not None and loop.is_running():
      return asyncio.ensure_future(channel.close())
    return asyncio.run(channel.close())

  def __del__(self):
    # A connection dropped without close() must not leave its channel open.
    if getattr(self, "_channel", None) is not None:
      self.close()


async def create_secure_async_channel_and_connect(
    server_address: str,
    credentials: grpc.ChannelCredentials = grpc.local_channel_credentials(),
    metadata: Optional[Metadata] = None,
) -> AsyncConnection:
  """Opens a secure aio channel to `server_address` and a connection over it.

  Message sizes are unlimited both ways, since observations can be large.

  Args:
    server_address: the server's address, e.g. "localhost:12345".
    credentials: gRPC channel credentials (default: local credentials).
    metadata: optional (key, value) pairs sent to the server as gRPC
      metadata.

  Returns:
    An AsyncConnection whose `close()` also closes the channel.
  """
  channel = grpc.aio.secure_channel(
      server_address, credentials, options=_UNLIMITED_MESSAGES)
  await channel.channel_ready()
  return _ChannelOwningConnection(channel=channel, metadata=metadata)
