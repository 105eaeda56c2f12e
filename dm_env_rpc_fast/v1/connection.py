"""A synchronous client for one dm_env_rpc stream.

`Connection.send(request)` takes any dm_env_rpc request message, wraps it in an
`EnvironmentRequest`, waits for the answer and returns the unwrapped response
message; an `error` answer raises `DmEnvRpcError`.  That is dm-env-rpc's
contract, kept to the letter.

What we add is the step path.  On a real gRPC channel the stream carries raw
bytes (identity serialisers), so `Connection.send_step` can send bytes made by
`codec.encode_step_request` and decode the answer with
`codec.decode_step_response`: no protobuf objects are built for the tensors of a
step.  Every other request is serialised and parsed by protobuf as before.
The step response is decoded on the gRPC thread that receives it, as the
stream's response deserializer, right after gRPC has copied it out of its
buffers and while the caller waits anyway: its bytes are still in that core's
cache, which makes the decode (a copy, by default) several times cheaper than
on the caller's thread after the hand-over.

On the same host as a dm_env_rpc_fast server, steps go through shared memory
instead of the stream (`dm_env_rpc_fast.shm`): the first step asks the server
for a channel over the stream's `extension` payload, and stays on gRPC if the
server does not offer one or the attach fails.  `transport` chooses ("auto",
"grpc", "shm"; the default comes from DM_ENV_RPC_FAST_TRANSPORT) and
`Connection.transport` says which one steps use.

When the stub is not the generated one (a test double patched in through
`connection.dm_env_rpc_pb2_grpc`) or the channel is not grpc's own (an
intercepted channel, whose interceptors expect messages), the stream carries
protobuf messages and `send_step` converts at the edge, so its results are the
same either way.
"""
import logging
import os
import queue
import sys
from typing import Callable, Dict, Mapping, Optional, Protocol, Sequence, Tuple

import grpc

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.shm import _wire as shm_wire
from dm_env_rpc_fast.shm import client as shm_client
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2_grpc
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import message_utils

Metadata = Sequence[Tuple[str, str]]

_log = logging.getLogger(__name__)

# Where Connection reads its default transport, and the values it takes.
TRANSPORT_ENV = "DM_ENV_RPC_FAST_TRANSPORT"
TRANSPORTS = ("auto", "grpc", "shm")
ChannelError = shm_client.ChannelError

# The one method of the dm_env_rpc service.
PROCESS_METHOD = "/dm_env_rpc.v1.Environment/Process"

_GENERATED_STUB = dm_env_rpc_pb2_grpc.EnvironmentStub
_EnvironmentRequest = dm_env_rpc_pb2.EnvironmentRequest
_EnvironmentResponse = dm_env_rpc_pb2.EnvironmentResponse


class ConnectionType(Protocol):
  """What `DmEnvAdaptor` and the helpers need from a connection."""

  def send(
      self,
      request: message_utils.DmEnvRpcRequest) -> message_utils.DmEnvRpcResponse:
    """Sends one request and blocks until its response arrives."""

  def close(self):
    """Ends the connection."""


def _is_grpc_channel(channel) -> bool:
  # grpc's own channel class, not a subclass, a mock or an intercepted channel.
  return type(channel).__module__ == "grpc._channel" and isinstance(channel, grpc.Channel)


class _RawEnvironmentStub:
  """A stub whose Process stream carries bytes in both directions.

  `Process` takes an optional `response_deserializer`: a function of each
  response's bytes, run on the gRPC thread that receives it.
  """

  raw = True

  def __init__(self, channel: grpc.Channel):
    self._channel = channel

  def Process(self, request_iterator, metadata=None, response_deserializer=None):  # pylint: disable=invalid-name
    return self._channel.stream_stream(
        PROCESS_METHOD, request_serializer=None,
        response_deserializer=response_deserializer)(request_iterator, metadata=metadata)


# The first byte of an EnvironmentResponse whose payload is a step (its tag).
_STEP_RESPONSE_TAG = bytes((
    dm_env_rpc_pb2.EnvironmentResponse.DESCRIPTOR.fields_by_name["step"].number << 3 | 2,))


class _StepDecoder:
  """gRPC's response deserializer for a raw stream: decodes a step's answer on
  gRPC's thread, passes every other response through as bytes.

  `pending` says how to decode the next response if it is a step's:
  (zero_copy, out), or None.  `write_step` sets it; one request is in flight
  at a time, so the response it meets is that step's.  It must neither raise
  nor return None (either would end the stream), so what decoding raises is
  carried to the reader.
  """

  __slots__ = ("pending",)

  def __init__(self):
    self.pending = None

  def __call__(self, data: bytes):
    pending, self.pending = self.pending, None
    if pending is None or data[:1] != _STEP_RESPONSE_TAG:
      return data
    zero_copy, out = pending
    try:
      return _Decoded(codec.decode_step_response(data, zero_copy=zero_copy, out=out)
                      if out is not None else
                      codec.decode_step_response(data, zero_copy=zero_copy), None)
    except Exception as e:  # pylint: disable=broad-except
      return _Decoded(None, e)


class _Decoded:
  """A step response decoded on gRPC's thread: the result, or what it raised."""

  __slots__ = ("result", "error")

  def __init__(self, result, error: Optional[BaseException]):
    self.result = result
    self.error = error


def _call_quietly(callback) -> None:
  """Runs a readiness callback; what it raises is logged, never propagated."""
  try:
    callback()
  except Exception:  # pylint: disable=broad-except
    _log.exception("a step's on_ready callback raised")


class StreamReaderWriter(object):
  """Writes requests to, and reads responses from, one Process stream.

  Requests go through a queue that gRPC drains on its own thread; `close()`
  puts the end marker in that queue, so the thread finishes and the stream is
  half-closed, then cancels the call so that nothing stays blocked.

  With a raw stub (`stub.raw` true) the stream carries bytes: `write` and `read`
  still take and return messages, while `write_bytes` and `read_bytes` skip
  protobuf.  With any other stub the stream carries messages, and the byte
  methods convert.
  """

  def __init__(self,
               stub: dm_env_rpc_pb2_grpc.EnvironmentStub,
               metadata: Optional[Metadata] = None):
    self._raw = getattr(stub, "raw", False) is True
    self._requests = queue.SimpleQueue()
    # The deserializer is an object of its own, not a bound method: the gRPC
    # call holds it, and a bound method would make the call and this object a
    # reference cycle, which some grpcio releases (1.64) leave holding the
    # call's socket until the garbage collector runs.
    self._decoder = _StepDecoder()
    if isinstance(stub, _RawEnvironmentStub):
      self._stream = stub.Process(iter(self._requests.get, None), metadata=metadata,
                                  response_deserializer=self._decoder)
    else:
      self._stream = stub.Process(iter(self._requests.get, None), metadata=metadata)

  def write(self, request: dm_env_rpc_pb2.EnvironmentRequest):
    """Queues `request` for sending; returns at once."""
    self._decoder.pending = None
    self._requests.put(request.SerializeToString() if self._raw else request)

  def read(self) -> dm_env_rpc_pb2.EnvironmentResponse:
    """Blocks until the next response arrives and returns it."""
    response = next(self._stream)
    return _EnvironmentResponse.FromString(response) if self._raw else response

  def write_bytes(self, data: bytes):
    """Queues a serialised `EnvironmentRequest` for sending."""
    self._decoder.pending = None
    self._requests.put(data if self._raw else _EnvironmentRequest.FromString(data))

  def read_bytes(self) -> bytes:
    """Blocks until the next response arrives and returns its wire bytes."""
    response = next(self._stream)
    return response if self._raw else response.SerializeToString()

  def write_step(self, data: bytes, zero_copy: bool, out=None, on_ready=None):
    """Queues a serialised step request; `read_step` returns its decoded answer.

    `out` and `on_ready` are as for `Connection.start_step`.
    """
    if self._raw:
      self._decoder.pending = (bool(zero_copy), out)
      self._requests.put(data)
    else:
      self._decoder.pending = None
      self._requests.put(_EnvironmentRequest.FromString(data))
    # gRPC's Python stream receives a message only when it is read, so the
    # arrival of an answer cannot be seen from here: the step counts as ready
    # at once and read_step waits (see Connection.signals_readiness).
    if on_ready is not None:
      _call_quietly(on_ready)

  def read_step(self, zero_copy: bool, out=None) -> Tuple[int, Dict[int, object]]:
    """Blocks for the answer to `write_step`: `codec.decode_step_response` of it."""
    response = next(self._stream)
    if type(response) is _Decoded:
      if response.error is not None:
        raise response.error
      return response.result
    # Not decoded on gRPC's thread: an error answer, or a stream of messages.
    self._decoder.pending = None
    if not self._raw:
      response = response.SerializeToString()
    if out is not None:
      return codec.decode_step_response(response, zero_copy=zero_copy, out=out)
    return codec.decode_step_response(response, zero_copy=zero_copy)

  def close(self):
    """Ends the request stream and cancels the call.  Idempotent."""
    self._requests.put(None)
    cancel = getattr(self._stream, "cancel", None)
    if cancel is not None:
      cancel()


class Connection(object):
  """A client for a dm_env_rpc server: one request, one response, in order.

  Not thread-safe: one caller at a time, as the protocol pairs each response
  with the request before it.
  """

  def __init__(self,
               channel: grpc.Channel,
               metadata: Optional[Metadata] = None,
               *,
               transport: Optional[str] = None):
    """Opens a Process stream on `channel`.

    Args:
      channel: a gRPC channel to the server.  On grpc's own channel class the
        stream carries raw bytes (see the module docstring).
      metadata: optional (key, value) pairs sent as gRPC metadata.
      transport: how steps travel: "auto" (the default) uses the shared-memory
        channel when the server is dm_env_rpc_fast on this host and gRPC
        otherwise; "grpc" always uses the stream; "shm" requires the channel
        (the first step raises `ChannelError` if it cannot be had).  None
        reads `DM_ENV_RPC_FAST_TRANSPORT` (default "auto").

    Raises:
      ValueError: `transport` (or the environment variable) is not one of
        "auto", "grpc", "shm"; or DM_ENV_RPC_FAST_SPIN_US is not a number of
        microseconds from 0 to 1000000.
    """
    choice = transport if transport is not None else (
        os.environ.get(TRANSPORT_ENV, "").strip().lower() or "auto")
    if choice not in TRANSPORTS:
      source = "transport" if transport is not None else TRANSPORT_ENV
      raise ValueError(f"{source} must be one of {', '.join(TRANSPORTS)}, not {choice!r}")
    stub = dm_env_rpc_pb2_grpc.EnvironmentStub(channel)
    raw = type(stub) is _GENERATED_STUB and _is_grpc_channel(channel)
    if raw:
      stub = _RawEnvironmentStub(channel)
    self._stream = StreamReaderWriter(stub, metadata)
    self._in_flight = None  # (zero_copy, out, channel or None) between start and finish
    self._fast: Optional[shm_client.ClientChannel] = None
    # Negotiated at the first step, and only where steps already travel as
    # raw bytes: a patched stub or an intercepted channel sees no extra request.
    self._negotiate = choice != "grpc" and (raw or choice == "shm")
    self._require_fast = choice == "shm"
    # Read now, like the transport, so a bad value fails here and not silently at attach.
    self._spin_ns = shm_wire.spin_setting() if self._negotiate else 0

  @property
  def signals_readiness(self) -> bool:
    """Whether `start_step`'s `on_ready` waits for the answer (True over shared
    memory) or runs at once (False: over gRPC, or before the first step)."""
    return self._fast is not None

  @property
  def transport(self) -> Optional[str]:
    """How steps travel: "shm" or "grpc"; None until the first step decides."""
    if self._fast is not None:
      return "shm"
    return None if self._negotiate else "grpc"

  def _open_fast_channel(self) -> None:
    """Asks the server for a shared-memory channel; stays on gRPC if refused."""
    self._negotiate = False
    if not self._stream._raw:  # pylint: disable=protected-access
      reason = "the stream is not grpc's own raw channel"
    elif not shm_wire.SUPPORTED:
      reason = "this platform has no shared-memory channel"
    else:
      try:
        answer = self.send(shm_client.offer_request())
        self._fast = shm_client.attach(shm_client.parse_offer(answer), self._spin_ns)
        reason = ""
      except (error.DmEnvRpcError, shm_client.ChannelError, ValueError) as e:
        reason = str(e)
    if self._fast is None:
      _log.info("dm_env_rpc_fast: steps go over gRPC: %s", reason)
      if self._require_fast:
        raise shm_client.ChannelError(f"transport 'shm' is not available: {reason}")

  def send(
      self,
      request: message_utils.DmEnvRpcRequest) -> message_utils.DmEnvRpcResponse:
    """Sends a request and returns the server's response, unwrapped.

    Args:
      request: a dm_env_rpc request message (`CreateWorldRequest`,
        `StepRequest`, ...) or a `google.protobuf.Any` for an extension.

    Returns:
      The matching response message (`CreateWorldResponse` for a
      `CreateWorldRequest`, an `Any` for an extension, and so on).

    Raises:
      DmEnvRpcError: the server answered with an error.
      ValueError: the connection is closed, or the server answered with a
        different kind of response.
    """
    environment_request, field_name = message_utils.pack_environment_request(request)
    stream = self._stream
    if stream is None:
      raise ValueError("Cannot send request after stream is closed.")
    if self._in_flight is not None:
      raise ValueError("send: a step is in flight; call finish_step first.")
    stream.write(environment_request)
    return message_utils.unpack_environment_response(stream.read(), field_name)

  def send_step(
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
        would (cast them to the spec's dtype first).
      requested_observations: the observation UIDs to return.
      zero_copy: when True, fixed-width observations (float, double, int8,
        uint8) are read-only views of the response bytes (which they keep
        alive) instead of writable copies.

    Returns:
      (state, observations): the `EnvironmentStateType` value and
      {uid: array or scalar}, as `tensor_utils.unpack_tensor` would give them.

    Raises:
      DmEnvRpcError: the server answered with an error.
      ValueError: the connection is closed, or the answer is not a step
        response or is malformed.
    """
    fast = self._fast
    if fast is None or self._in_flight is not None:
      self.start_step(actions, requested_observations, zero_copy=zero_copy)
      return self.finish_step()
    # Over shared memory nothing is left in flight between the two halves:
    # start_step's and finish_step's bookkeeping would only be undone.
    fast.start(codec.encode_step_request(actions, requested_observations))
    return fast.finish(bool(zero_copy))

  def start_step(
      self,
      actions: Mapping[int, object],
      requested_observations: Sequence[int],
      *,
      zero_copy: bool = False,
      out: Optional[Mapping[int, object]] = None,
      on_ready: Optional[Callable[[], None]] = None,
  ) -> None:
    """Sends a step request without waiting for its answer.

    `send_step` is `start_step` then `finish_step`.  The split lets one thread
    keep requests to many connections in flight at once (the batched client
    in `dm_env_rpc_fast.vector` does).  Exactly one `finish_step` must follow
    each `start_step`, before any other request on this connection.

    Args:
      actions, requested_observations, zero_copy: as for `send_step`.
      out: optional {uid: writable numpy array}: those observations are
        decoded straight into the given arrays (see `codec.decode_step_response`).
      on_ready: optional callable, run once when `finish_step` need not
        wait: over the shared-memory channel, on another thread when the
        answer has arrived (or the channel failed); over gRPC, before this
        method returns, since gRPC's Python stream receives only when read
        (`signals_readiness` says which).  It must be quick and must not call
        back into this connection; what it raises is logged.

    Raises:
      ValueError: the connection is closed, a step is already in flight, or
        an action cannot be encoded.
    """
    stream = self._stream
    if stream is None:
      raise ValueError("Cannot send request after stream is closed.")
    if self._in_flight is not None:
      raise ValueError("start_step: a step is already in flight; call finish_step first.")
    data = codec.encode_step_request(actions, requested_observations)
    if self._negotiate:
      self._open_fast_channel()
    fast = self._fast
    if fast is not None:
      fast.start(data, on_ready)
    else:
      stream.write_step(data, zero_copy, out, on_ready)
    self._in_flight = (bool(zero_copy), out, fast)

  def finish_step(self) -> Tuple[int, Dict[int, object]]:
    """Waits for the answer to `start_step` and returns it as `send_step` does.

    Raises:
      DmEnvRpcError: the server answered with an error.
      ValueError: no step is in flight, the connection is closed, or the
        answer is malformed.
    """
    stream = self._stream
    if stream is None:
      raise ValueError("Cannot send request after stream is closed.")
    pending, self._in_flight = self._in_flight, None
    if pending is None:
      raise ValueError("finish_step: no step in flight; call start_step first.")
    zero_copy, out, fast = pending
    if fast is not None:
      return fast.finish(zero_copy, out)
    return stream.read_step(zero_copy, out)

  def close(self):
    """Ends the stream and its request thread.  Closing again does nothing."""
    stream, self._stream = self._stream, None
    fast, self._fast = self._fast, None
    if fast is not None:
      fast.close()
    if stream is not None:
      stream.close()

  def __exit__(self, *args, **kwargs):
    self.close()

  def __enter__(self):
    return self


_UNLIMITED_MESSAGES = (("grpc.max_send_message_length", -1),
                       ("grpc.max_receive_message_length", -1))


class _ChannelOwningConnection(Connection):
  """A Connection that also closes the channel it was made with."""

  def __init__(self, channel, metadata, transport=None):
    super().__init__(channel=channel, metadata=metadata, transport=transport)
    self._channel = channel

  def close(self):
    super().close()
    channel, self._channel = self._channel, None
    if channel is not None:
      channel.close()

  def __del__(self):
    # A connection dropped without close() must not leave its stream's thread
    # and channel behind.  At interpreter exit gRPC's own threads are gone and
    # closing the channel would wait for them for ever: the process's end
    # frees everything anyway.
    if getattr(self, "_channel", None) is not None and not sys.is_finalizing():
      self.close()


def create_secure_channel_and_connect(
    server_address: str,
    credentials: grpc.ChannelCredentials = grpc.local_channel_credentials(),
    timeout: Optional[float] = None,
    metadata: Optional[Metadata] = None,
    *,
    transport: Optional[str] = None,
) -> Connection:
  """Opens a secure channel to `server_address` and a Connection over it.

  Message sizes are unlimited both ways, since observations can be large.

  Args:
    server_address: the server's address, e.g. "localhost:12345".
    credentials: gRPC channel credentials (default: local credentials).
    timeout: seconds to wait for the channel to become ready; None waits
      for ever.
    metadata: optional (key, value) pairs sent as gRPC metadata.
    transport: "auto", "grpc" or "shm", as for `Connection`.

  Returns:
    A Connection that closes the channel when it is closed.

  Raises:
    grpc.FutureTimeoutError: the channel was not ready within `timeout`.
  """
  channel = grpc.secure_channel(server_address, credentials, options=_UNLIMITED_MESSAGES)
  grpc.channel_ready_future(channel).result(timeout)
  return _ChannelOwningConnection(channel=channel, metadata=metadata, transport=transport)
