"""connection.Connection: upstream's contract, the seams tests patch, the byte path."""
import contextlib
import gc
import threading
from concurrent import futures
from unittest import mock

import grpc
import numpy as np
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from support import waiting

_Req = dm_env_rpc_pb2.EnvironmentRequest
_Resp = dm_env_rpc_pb2.EnvironmentResponse


# --------------------------------------------------------------------------
# A real server on 127.0.0.1: it echoes each step's actions back as the
# observations with the same UIDs, so both directions of the byte path show.

_BROKEN_UID = 999   # a step requesting it is answered with malformed bytes
_REFUSED_UID = 998  # ... with an error


class _EchoServer:

  def __init__(self):
    self.open_streams = 0
    self.streams_ended = threading.Semaphore(0)
    self.received = []
    self._lock = threading.Lock()
    self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler("dm_env_rpc.v1.Environment", {
        "Process": grpc.stream_stream_rpc_method_handler(self._process)})
    self.server.add_generic_rpc_handlers((handler,))
    self.port = self.server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())
    self.server.start()

  def _process(self, requests, context):
    with self._lock:
      self.open_streams += 1
    try:
      for data in requests:
        self.received.append(data)
        request = _Req.FromString(data)
        kind = request.WhichOneof("payload")
        if kind == "step":
          actions, requested = codec.decode_step_request(data)
          if _BROKEN_UID in requested:  # a step answer cut short by one byte
            yield codec.encode_step_response(codec.RUNNING, {_BROKEN_UID: np.arange(3.0)})[:-1]
            continue
          if _REFUSED_UID in requested:
            yield _Resp(error=status_pb2.Status(code=3, message="refused")).SerializeToString()
            continue
          yield codec.encode_step_response(
              codec.RUNNING, {uid: actions[uid] for uid in requested if uid in actions})
        elif kind == "create_world":
          yield _Resp(create_world=dm_env_rpc_pb2.CreateWorldResponse(
              world_name="w" + str(len(request.create_world.settings)))).SerializeToString()
        elif kind == "destroy_world":
          # The wrong kind of answer, on purpose.
          yield _Resp(leave_world=dm_env_rpc_pb2.LeaveWorldResponse()).SerializeToString()
        else:
          yield _Resp(error=status_pb2.Status(code=3, message=f"no {kind} here")).SerializeToString()
    finally:
      with self._lock:
        self.open_streams -= 1
      self.streams_ended.release()


@pytest.fixture(scope="module")
def echo_server():
  server = _EchoServer()
  yield server
  server.server.stop(grace=None)


@pytest.fixture
def channel(echo_server):
  with grpc.secure_channel(f"127.0.0.1:{echo_server.port}", grpc.local_channel_credentials()) as ch:
    yield ch


def test_send_round_trips_a_request_on_a_real_channel(channel):
  with dm_connection.Connection(channel) as conn:
    response = conn.send(dm_env_rpc_pb2.CreateWorldRequest(settings={"a": dm_env_rpc_pb2.Tensor()}))
  assert response == dm_env_rpc_pb2.CreateWorldResponse(world_name="w1")


def test_a_real_channel_carries_raw_bytes(channel):
  with dm_connection.Connection(channel) as conn:
    assert conn._stream._raw


def test_error_response_raises_dm_env_rpc_error(channel):
  with dm_connection.Connection(channel) as conn:
    with pytest.raises(error.DmEnvRpcError, match="no reset here") as info:
      conn.send(dm_env_rpc_pb2.ResetRequest())
    assert info.value.code == 3
    # The stream survives an error answer.
    assert conn.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name == "w0"


def test_unexpected_response_kind_raises_value_error(channel):
  with dm_connection.Connection(channel) as conn:
    with pytest.raises(ValueError, match="Unexpected response message"):
      conn.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name="x"))


_ACTION_VALUES = [
    np.arange(12, dtype=np.float32).reshape(3, 4),
    np.array([[1, -2], [3, 4]], dtype=np.int64),
    np.array([0, 255, 7], dtype=np.uint8),
    np.float64(2.5),
    np.array([True, False]),
    np.array(["a", "bc"]),
]


@pytest.mark.parametrize("value", _ACTION_VALUES, ids=lambda v: f"{v.dtype}{np.shape(v)}")
def test_send_step_round_trips_values(channel, value):
  with dm_connection.Connection(channel) as conn:
    state, observations = conn.send_step({7: value}, [7])
  assert state == dm_env_rpc_pb2.RUNNING
  assert list(observations) == [7]
  got = observations[7]
  assert np.asarray(got).dtype == np.asarray(value).dtype
  np.testing.assert_array_equal(got, value)


def test_send_step_copies_by_default_and_views_with_zero_copy(channel):
  value = np.linspace(0, 1, 300, dtype=np.float32).reshape(10, 30)
  with dm_connection.Connection(channel) as conn:
    _, copied = conn.send_step({1: value}, [1])
    _, viewed = conn.send_step({1: value}, [1], zero_copy=True)
  assert copied[1].flags.writeable
  assert not viewed[1].flags.writeable
  np.testing.assert_array_equal(viewed[1], value)
  np.testing.assert_array_equal(copied[1], value)


def test_send_step_sends_exactly_the_codec_bytes(channel, echo_server):
  actions, requested = {3: np.array([1, 2], np.int32)}, [3, 4]
  with dm_connection.Connection(channel) as conn:
    conn.send_step(actions, requested)
  assert echo_server.received[-1] == codec.encode_step_request(actions, requested)
  # ... which are what protobuf makes of the same request.
  expected = _Req(step=dm_env_rpc_pb2.StepRequest(
      actions={3: dm_env_rpc_pb2.Tensor(int32s=dm_env_rpc_pb2.Tensor.Int32Array(array=[1, 2]), shape=[2])},
      requested_observations=requested))
  assert _Req.FromString(echo_server.received[-1]) == expected


def test_send_step_error_raises_and_the_stream_goes_on(channel):
  with dm_connection.Connection(channel) as conn:
    with pytest.raises(error.DmEnvRpcError, match="no reset here"):
      conn.send(dm_env_rpc_pb2.ResetRequest())
    state, obs = conn.send_step({1: np.int32(5)}, [1])
  assert state == dm_env_rpc_pb2.RUNNING and obs[1] == 5


def test_send_step_decodes_the_answer_on_grpcs_thread(channel, monkeypatch):
  """On a raw stream the step answer is decoded by gRPC's receiving thread, as
  the stream's deserializer, and send_step returns what that decode made."""
  decoded_on = []
  original = codec.decode_step_response

  def recording(buf, *, zero_copy=False):
    decoded_on.append((threading.current_thread(), zero_copy))
    return original(buf, zero_copy=zero_copy)

  monkeypatch.setattr(codec, "decode_step_response", recording)
  value = np.arange(6, dtype=np.float32)
  with dm_connection.Connection(channel) as conn:
    _, copied = conn.send_step({1: value}, [1])
    _, viewed = conn.send_step({1: value}, [1], zero_copy=True)
  assert [flag for _, flag in decoded_on] == [False, True]
  assert all(thread is not threading.current_thread() for thread, _ in decoded_on)
  assert copied[1].flags.writeable and not viewed[1].flags.writeable
  np.testing.assert_array_equal(copied[1], value)
  np.testing.assert_array_equal(viewed[1], value)


def test_a_malformed_step_answer_raises_here_and_the_stream_goes_on(channel):
  """What the decode raises on gRPC's thread reaches the caller; the stream
  (which a raising deserializer would end) keeps working."""
  with dm_connection.Connection(channel) as conn:
    with pytest.raises(ValueError):
      conn.send_step({1: np.int32(5)}, [_BROKEN_UID])
    state, obs = conn.send_step({1: np.int32(5)}, [1])
    assert state == dm_env_rpc_pb2.RUNNING and obs[1] == 5
    assert conn.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name == "w0"


def test_an_error_answer_to_a_step_raises_and_later_requests_are_not_decoded(channel):
  """An error answer to a step is left to the caller (DmEnvRpcError), and
  the next request's answer is not taken for a step."""
  with dm_connection.Connection(channel) as conn:
    with pytest.raises(error.DmEnvRpcError, match="refused"):
      conn.send_step({1: np.int32(5)}, [_REFUSED_UID])
    assert conn.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name == "w0"
    # A step-shaped answer read through the byte path stays bytes.
    conn._stream.write_bytes(codec.encode_step_request({1: np.int32(7)}, [1]))
    data = conn._stream.read_bytes()
    assert type(data) is bytes and codec.decode_step_response(data)[1][1] == 7


def test_send_step_rejects_a_non_step_answer(channel):
  # A CreateWorld answer to a step-shaped exchange: send a create request's
  # bytes through the byte path and check the decoder names the problem.
  with dm_connection.Connection(channel) as conn:
    conn._stream.write_bytes(_Req(create_world=dm_env_rpc_pb2.CreateWorldRequest()).SerializeToString())
    with pytest.raises(ValueError):
      codec.decode_step_response(conn._stream.read_bytes())


# --------------------------------------------------------------------------
# close(): the stream and its request thread really end.

def test_close_ends_the_stream_on_the_server(channel, echo_server):
  conn = dm_connection.Connection(channel)
  conn.send(dm_env_rpc_pb2.CreateWorldRequest())
  assert echo_server.open_streams >= 1
  before = echo_server.open_streams
  conn.close()
  assert echo_server.streams_ended.acquire(timeout=10), "server never saw the stream end"
  assert waiting.wait_until(lambda: echo_server.open_streams == before - 1)


def _client_threads():
  # The in-process server's pool threads come and stay; count the others.
  return sum(1 for t in threading.enumerate() if not t.name.startswith("ThreadPoolExecutor"))


def test_close_ends_the_request_thread(channel):
  baseline = _client_threads()
  conns = [dm_connection.Connection(channel) for _ in range(4)]
  for conn in conns:
    conn.send(dm_env_rpc_pb2.CreateWorldRequest())
  assert _client_threads() >= baseline + 4  # gRPC's request consumers
  for conn in conns:
    conn.close()
  assert waiting.wait_until(lambda: _client_threads() <= baseline), (
      f"{_client_threads() - baseline} request threads left after close()")


def test_close_twice_and_send_after_close(channel):
  conn = dm_connection.Connection(channel)
  conn.close()
  conn.close()
  with pytest.raises(ValueError, match="stream is closed"):
    conn.send(dm_env_rpc_pb2.CreateWorldRequest())
  with pytest.raises(ValueError, match="stream is closed"):
    conn.send_step({}, [])


def test_context_manager_closes(channel, echo_server):
  with dm_connection.Connection(channel) as conn:
    conn.send(dm_env_rpc_pb2.CreateWorldRequest())
  assert conn._stream is None
  assert echo_server.streams_ended.acquire(timeout=10)


# --------------------------------------------------------------------------
# Message mode: test doubles patched in where upstream's users patch them.

def _mock_process(responses):
  def process(request_iterator, **kwargs):
    del kwargs
    for request in request_iterator:
      yield responses(request)
  return process


@contextlib.contextmanager
def _patched_stub(responses):
  with mock.patch.object(dm_connection, "dm_env_rpc_pb2_grpc") as grpc_module:
    stub = mock.MagicMock()
    stub.Process = _mock_process(responses)
    grpc_module.EnvironmentStub.return_value = stub
    yield mock.MagicMock()


def _step_answer(request):
  if request.WhichOneof("payload") != "step":
    return _Resp(error=status_pb2.Status(code=3, message="only steps"))
  observations = {uid: request.step.actions[uid] for uid in request.step.requested_observations}
  return _Resp(step=dm_env_rpc_pb2.StepResponse(state=dm_env_rpc_pb2.RUNNING, observations=observations))


def test_mocked_stub_gets_and_yields_messages():
  seen = []

  def answer(request):
    seen.append(request)
    return _Resp(create_world=dm_env_rpc_pb2.CreateWorldResponse(world_name="mocked"))

  with _patched_stub(answer) as channel:
    with dm_connection.Connection(channel) as conn:
      assert conn.send(dm_env_rpc_pb2.CreateWorldRequest()).world_name == "mocked"
  assert isinstance(seen[0], _Req)
  assert seen[0].WhichOneof("payload") == "create_world"


def test_send_step_works_on_a_mocked_stub():
  value = np.arange(6, dtype=np.int32).reshape(2, 3)
  with _patched_stub(_step_answer) as channel:
    with dm_connection.Connection(channel) as conn:
      state, obs = conn.send_step({5: value}, [5])
      with pytest.raises(error.DmEnvRpcError, match="only steps"):
        conn.send(dm_env_rpc_pb2.ResetRequest())
  assert state == dm_env_rpc_pb2.RUNNING
  np.testing.assert_array_equal(obs[5], value)
  assert obs[5].flags.writeable


def test_extension_requests_travel_as_any():
  payload = dm_env_rpc_pb2.CreateWorldResponse(world_name="ext")

  def answer(request):
    assert request.WhichOneof("payload") == "extension"
    response = _Resp()
    response.extension.Pack(payload)
    return response

  request = any_pb2.Any()
  request.Pack(dm_env_rpc_pb2.CreateWorldRequest())
  with _patched_stub(answer) as channel:
    with dm_connection.Connection(channel) as conn:
      response = conn.send(request)
  assert isinstance(response, any_pb2.Any)
  assert response.Unpack(dm_env_rpc_pb2.CreateWorldResponse()) and response.TypeName().endswith("CreateWorldResponse")


def test_metadata_reaches_process():
  metadata = (("key", "value"),)
  with mock.patch.object(dm_connection, "dm_env_rpc_pb2_grpc") as grpc_module:
    stub = mock.MagicMock()
    grpc_module.EnvironmentStub.return_value = stub
    dm_connection.Connection(mock.MagicMock(), metadata=metadata)
  stub.Process.assert_called_once_with(mock.ANY, metadata=metadata)


def test_stream_reader_writer_is_the_seam():
  with mock.patch.object(dm_connection, "StreamReaderWriter") as srw:
    with mock.patch.object(dm_connection, "dm_env_rpc_pb2_grpc"):
      conn = dm_connection.Connection(mock.MagicMock(), metadata=[("a", "b")])
  srw.assert_called_once_with(mock.ANY, [("a", "b")])
  conn.close()
  srw.return_value.close.assert_called_once()


def test_intercepted_channel_carries_messages_and_steps_still_work(echo_server):
  seen = []

  class Spy(grpc.StreamStreamClientInterceptor):
    def intercept_stream_stream(self, continuation, details, request_iterator):
      def spy(requests):
        for r in requests:
          seen.append(type(r))
          yield r
      return continuation(details, spy(request_iterator))

  with grpc.secure_channel(f"127.0.0.1:{echo_server.port}", grpc.local_channel_credentials()) as raw_channel:
    channel = grpc.intercept_channel(raw_channel, Spy())
    with dm_connection.Connection(channel) as conn:
      assert not conn._stream._raw
      _, obs = conn.send_step({2: np.float32(1.5)}, [2])
  assert obs[2] == np.float32(1.5)
  assert seen == [_Req]  # interceptors see messages, as with dm-env-rpc


# --------------------------------------------------------------------------
# The connect helper.

@mock.patch.object(grpc, "secure_channel")
@mock.patch.object(grpc, "channel_ready_future")
def test_connect_helper_waits_and_closes_its_channel(ready, secure_channel):
  fake_channel = mock.MagicMock()
  secure_channel.return_value = fake_channel
  with dm_connection.create_secure_channel_and_connect("somewhere:1", timeout=3) as conn:
    assert isinstance(conn, dm_connection.Connection)
  ready.assert_called_once_with(fake_channel)
  ready.return_value.result.assert_called_once_with(3)
  options = dict(secure_channel.call_args.kwargs["options"])
  assert options == {"grpc.max_send_message_length": -1, "grpc.max_receive_message_length": -1}
  fake_channel.close.assert_called_once()


@mock.patch.object(grpc, "secure_channel")
@mock.patch.object(grpc, "channel_ready_future")
def test_dropped_connection_closes_its_channel(ready, secure_channel):
  del ready
  fake_channel = mock.MagicMock()
  secure_channel.return_value = fake_channel
  dm_connection.create_secure_channel_and_connect("somewhere:1")
  gc.collect()
  fake_channel.close.assert_called_once()


def test_connect_helper_times_out():
  with pytest.raises(grpc.FutureTimeoutError):
    dm_connection.create_secure_channel_and_connect("127.0.0.1:1", timeout=0.3)


def test_connect_helper_against_a_real_server(echo_server):
  with dm_connection.create_secure_channel_and_connect(f"127.0.0.1:{echo_server.port}", timeout=10) as conn:
    _, obs = conn.send_step({1: np.arange(3, dtype=np.uint32)}, [1])
  np.testing.assert_array_equal(obs[1], np.arange(3, dtype=np.uint32))
