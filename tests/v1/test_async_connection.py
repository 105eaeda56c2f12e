"""async_connection.AsyncConnection: upstream's contract, its seams, the byte path.

The first half drives the connection through the seams users' tests patch (a
mocked `dm_env_rpc_pb2_grpc` stub, a mocked `grpc.aio.secure_channel`); the
second half talks to the toy server over real grpc.aio channels, in both the
raw-bytes mode and the message mode.  Coroutines run under `asyncio.run`.
"""
import asyncio
import contextlib
import threading
from unittest import mock

import grpc
import numpy as np
import pytest
from google.protobuf import any_pb2
from google.protobuf import struct_pb2
from google.rpc import code_pb2
from google.rpc import status_pb2

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import async_connection
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from dm_env_rpc_fast.v1 import tensor_utils
from support import toy_server

_Req = dm_env_rpc_pb2.EnvironmentRequest
_Resp = dm_env_rpc_pb2.EnvironmentResponse
_OBS = toy_server.OBSERVATION_UIDS
_ACT = toy_server.ACTION_UIDS


# --------------------------------------------------------------------------
# A fake Process stream: answers each written request with a canned response.

class _FakeStream:
  """Stands in for grpc.aio's StreamStreamCall: async write/read of messages."""

  def __init__(self, answer, metadata=None):
    self.metadata = metadata
    self.written = []
    self.cancel = mock.Mock(return_value=True)
    self._answer = answer
    self._pending = []

  async def write(self, request):
    self.written.append(request)
    self._pending.append(self._answer(request))

  async def read(self):
    return self._pending.pop(0)


def _canned(request):
  kind = request.WhichOneof("payload")
  if kind == "create_world":
    if not request.create_world.settings:
      return _Resp(error=status_pb2.Status(code=code_pb2.INVALID_ARGUMENT,
                                           message="A test error."))
    return _Resp(create_world=dm_env_rpc_pb2.CreateWorldResponse(
        world_name="world_" + ",".join(sorted(request.create_world.settings))))
  if kind == "destroy_world":  # The wrong kind of answer, on purpose.
    return _Resp(leave_world=dm_env_rpc_pb2.LeaveWorldResponse())
  if kind == "extension":
    value = struct_pb2.Value()
    request.extension.Unpack(value)
    answer = any_pb2.Any()
    answer.Pack(struct_pb2.Value(string_value=value.string_value + "!"))
    return _Resp(extension=answer)
  if kind == "step":
    # Echo the actions back as the observations with the same UIDs.
    step = request.step
    if 99 in step.requested_observations:
      return _Resp(error=status_pb2.Status(code=code_pb2.INVALID_ARGUMENT,
                                           message="uid 99 is not valid"))
    return _Resp(step=dm_env_rpc_pb2.StepResponse(
        state=dm_env_rpc_pb2.EnvironmentStateType.RUNNING,
        observations={uid: step.actions[uid]
                      for uid in step.requested_observations}))
  raise AssertionError(f"unexpected request {kind}")


@contextlib.contextmanager
def _mocked_stub(answer=_canned):
  """Patches the module's stub, as users' tests do; yields the streams made."""
  streams = []

  def process(metadata=None):
    streams.append(_FakeStream(answer, metadata))
    return streams[-1]

  with mock.patch.object(async_connection, "dm_env_rpc_pb2_grpc") as grpc_module:
    grpc_module.EnvironmentStub.return_value.Process = process
    yield streams


def _run(coroutine):
  return asyncio.run(coroutine)


def test_send_returns_the_unwrapped_response():
  async def main():
    with _mocked_stub() as streams:
      with async_connection.AsyncConnection(mock.MagicMock()) as connection:
        response = await connection.send(dm_env_rpc_pb2.CreateWorldRequest(
            settings={"b": tensor_utils.pack_tensor(1),
                      "a": tensor_utils.pack_tensor(2)}))
    assert response == dm_env_rpc_pb2.CreateWorldResponse(world_name="world_a,b")
    # The stream carried messages (the stub is a test double).
    assert [type(r) for r in streams[0].written] == [_Req]
  _run(main())


def test_error_response_raises():
  async def main():
    with _mocked_stub():
      with async_connection.AsyncConnection(mock.MagicMock()) as connection:
        with pytest.raises(error.DmEnvRpcError, match="test error") as caught:
          await connection.send(dm_env_rpc_pb2.CreateWorldRequest())
        assert caught.value.code == code_pb2.INVALID_ARGUMENT
        # The connection is still usable.
        response = await connection.send(dm_env_rpc_pb2.CreateWorldRequest(
            settings={"x": tensor_utils.pack_tensor(1)}))
        assert response.world_name == "world_x"
  _run(main())


def test_extension_round_trip():
  async def main():
    request = any_pb2.Any()
    request.Pack(struct_pb2.Value(string_value="hello"))
    with _mocked_stub():
      with async_connection.AsyncConnection(mock.MagicMock()) as connection:
        response = await connection.send(request)
    value = struct_pb2.Value()
    assert response.Unpack(value)
    assert value.string_value == "hello!"
  _run(main())


def test_wrong_kind_of_response_raises():
  async def main():
    with _mocked_stub():
      with async_connection.AsyncConnection(mock.MagicMock()) as connection:
        with pytest.raises(ValueError, match="Unexpected response message"):
          await connection.send(
              dm_env_rpc_pb2.DestroyWorldRequest(world_name="foo"))
  _run(main())


def test_metadata_reaches_process():
  metadata = (("key", "value"),)
  with mock.patch.object(async_connection, "dm_env_rpc_pb2_grpc") as grpc_module:
    channel = mock.MagicMock()
    async_connection.AsyncConnection(channel, metadata=metadata)
    grpc_module.EnvironmentStub.assert_called_once_with(channel)
    grpc_module.EnvironmentStub.return_value.Process.assert_called_once_with(
        metadata=metadata)


def test_close_cancels_the_stream_once_and_sends_then_fail():
  async def main():
    with _mocked_stub() as streams:
      connection = async_connection.AsyncConnection(mock.MagicMock())
      with connection:
        pass
      streams[0].cancel.assert_called_once_with()
      connection.close()  # Again: harmless.
      streams[0].cancel.assert_called_once_with()
      with pytest.raises(ValueError, match="stream is closed"):
        await connection.send(dm_env_rpc_pb2.CreateWorldRequest())
      with pytest.raises(ValueError, match="stream is closed"):
        await connection.send_step({}, [])
      assert streams[0].written == []
  _run(main())


def test_server_ending_the_stream_raises():
  async def main():
    with _mocked_stub(answer=lambda request: grpc.aio.EOF):
      with async_connection.AsyncConnection(mock.MagicMock()) as connection:
        with pytest.raises(ValueError, match="ended the stream"):
          await connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
        with pytest.raises(ValueError, match="ended the stream"):
          await connection.send_step({}, [])
  _run(main())


def test_send_step_over_a_message_stream(backend):
  actions = {1: np.arange(6, dtype=np.float32).reshape(2, 3), 2: "text",
             3: np.array([True, False]), 4: np.int64(-5)}

  async def main():
    with _mocked_stub() as streams:
      with async_connection.AsyncConnection(mock.MagicMock()) as connection:
        state, observations = await connection.send_step(actions, [4, 1, 2])
        with pytest.raises(error.DmEnvRpcError, match="uid 99"):
          await connection.send_step(actions, [99])
    # What went out is the message the protobuf path would have built.
    expected = _Req(step=dm_env_rpc_pb2.StepRequest(
        actions={uid: tensor_utils.pack_tensor(value)
                 for uid, value in actions.items()},
        requested_observations=[4, 1, 2]))
    assert streams[0].written[0] == expected
    return state, observations

  state, observations = _run(main())
  assert state == dm_env_rpc_pb2.EnvironmentStateType.RUNNING
  assert sorted(observations) == [1, 2, 4]
  np.testing.assert_array_equal(observations[1], actions[1])
  assert observations[1].dtype == np.float32
  assert observations[2] == "text"
  assert observations[4] == -5


def test_send_step_uses_the_live_codec(backend):
  # The codec is reached through the `codec` module at call time.
  calls = []
  encode, decode = codec.encode_step_request, codec.decode_step_response

  def spy_encode(*args):
    calls.append("encode")
    return encode(*args)

  def spy_decode(*args, **kwargs):
    calls.append("decode")
    return decode(*args, **kwargs)

  async def main():
    with _mocked_stub():
      with async_connection.AsyncConnection(mock.MagicMock()) as connection:
        return await connection.send_step({7: 1.5}, [7])

  with mock.patch.object(codec, "encode_step_request", spy_encode), \
      mock.patch.object(codec, "decode_step_response", spy_decode):
    _, observations = _run(main())
  assert calls == ["encode", "decode"]
  assert observations == {7: 1.5}


def test_real_stub_on_a_mocked_channel_carries_messages():
  # The generated stub over something that is not grpc's aio channel: the
  # stream must carry messages, which is what such a channel's callables take.
  streams = []

  def process(metadata=None):
    streams.append(_FakeStream(_canned, metadata))
    return streams[-1]

  channel = mock.MagicMock()
  channel.stream_stream.return_value = process

  async def main():
    with async_connection.AsyncConnection(channel, metadata=(("k", "v"),)) as c:
      state, observations = await c.send_step({1: np.int32(3)}, [1])
      response = await c.send(dm_env_rpc_pb2.CreateWorldRequest(
          settings={"s": tensor_utils.pack_tensor(1)}))
    return state, observations, response

  state, observations, response = _run(main())
  assert (state, observations) == (dm_env_rpc_pb2.RUNNING, {1: 3})
  assert response.world_name == "world_s"
  assert [type(r) for r in streams[0].written] == [_Req, _Req]
  assert streams[0].metadata == (("k", "v"),)
  # The stub asked for the protobuf (de)serialisers, not the identity.
  _, kwargs = channel.stream_stream.call_args
  assert kwargs["request_serializer"] is not None


# --------------------------------------------------------------------------
# create_secure_async_channel_and_connect with a mocked grpc.aio channel.

def _mock_aio_channel():
  channel = mock.MagicMock()
  channel.channel_ready = mock.AsyncMock()
  channel.close = mock.AsyncMock()
  return channel


def test_connect_helper_inside_a_loop_closes_the_channel_once():
  channel = _mock_aio_channel()

  async def main():
    with mock.patch.object(grpc.aio, "secure_channel",
                           return_value=channel) as secure_channel:
      connection = await async_connection.create_secure_async_channel_and_connect(
          "localhost:1234", metadata=(("a", "b"),))
    with connection:
      pass
    await asyncio.gather(*(asyncio.all_tasks() - {asyncio.current_task()}))
    connection.close()
    return secure_channel, connection

  secure_channel, connection = _run(main())
  channel.channel_ready.assert_awaited_once_with()
  channel.close.assert_awaited_once()
  args, kwargs = secure_channel.call_args
  assert args[0] == "localhost:1234"
  assert sorted(kwargs["options"]) == [("grpc.max_receive_message_length", -1),
                                       ("grpc.max_send_message_length", -1)]
  del connection


def test_connect_helper_closed_outside_a_loop():
  channel = _mock_aio_channel()
  with mock.patch.object(grpc.aio, "secure_channel", return_value=channel):
    connection = _run(
        async_connection.create_secure_async_channel_and_connect("somewhere"))
  connection.close()  # No loop running: closes the channel on a fresh one.
  channel.close.assert_awaited_once()
  connection.close()
  channel.close.assert_awaited_once()


# --------------------------------------------------------------------------
# Real grpc.aio channels against the toy server.

class _EndSignallingServicer(toy_server.ToyServicer):
  """Signals each time a Process stream ends on the server side."""

  def __init__(self):
    super().__init__()
    self.streams_ended = threading.Semaphore(0)

  def Process(self, request_iterator, context):
    try:
      yield from super().Process(request_iterator, context)
    finally:
      self.streams_ended.release()


@pytest.fixture(scope="module")
def toy():
  servicer = toy_server.ToyServicer()
  server, port = toy_server.start(servicer=servicer)
  yield servicer, f"127.0.0.1:{port}"
  server.stop(None)


class _SpyInterceptor(grpc.aio.StreamStreamClientInterceptor):
  """Records what an intercepted stream carries."""

  def __init__(self):
    self.requests = []

  async def intercept_stream_stream(self, continuation, client_call_details,
                                    request_iterator):
    async def spy():
      async for request in request_iterator:
        self.requests.append(request)
        yield request
    return await continuation(client_call_details, spy())


def _channel(address, interceptors=None):
  return grpc.aio.secure_channel(address, grpc.local_channel_credentials(),
                                 interceptors=interceptors)


async def _create_and_join(connection, **settings):
  name = (await connection.send(dm_env_rpc_pb2.CreateWorldRequest(
      settings={k: tensor_utils.pack_tensor(v)
                for k, v in settings.items()}))).world_name
  specs = (await connection.send(
      dm_env_rpc_pb2.JoinWorldRequest(world_name=name))).specs
  return name, specs


async def _leave_and_destroy(connection, name):
  await connection.send(dm_env_rpc_pb2.LeaveWorldRequest())
  await connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=name))


_STEPS = [
    {"move": 2},  # Starts the episode: ignored.
    {"move": 1, "paint": [0.25, 0.5, 1.0]},
    {"move": -2, "label": "héllo"},
    {},
    {"move": 2, "paint": [0.0, 0.0, 0.0]},  # Terminates (episode_length 4).
    {"move": 1},  # Starts the next episode: ignored.
    {"move": -1, "label": "again"},
]


def _encode_actions(actions):
  typed = {"move": np.int32, "paint": np.float32, "label": str}
  return {_ACT[name]: np.asarray(value, typed[name])
          for name, value in actions.items()}


def _assert_observations_equal(got, expected_by_name):
  assert sorted(got) == sorted(_OBS.values())
  for name, expected in expected_by_name.items():
    value = got[_OBS[name]]
    assert np.asarray(value).dtype == np.asarray(expected).dtype, name
    np.testing.assert_array_equal(value, expected, err_msg=name)


@pytest.mark.parametrize("mode", ["raw", "intercepted"])
def test_send_step_against_the_toy_server(backend, toy, mode):
  _, address = toy
  spy = _SpyInterceptor() if mode == "intercepted" else None
  expected = toy_server.expected_observations(_STEPS, seed=5, episode_length=4)

  async def main():
    channel = _channel(address, [spy] if spy else None)
    async with channel:
      with async_connection.AsyncConnection(channel) as connection:
        assert connection._raw is (mode == "raw")
        name, _ = await _create_and_join(connection, seed=5, episode_length=4)
        results = [await connection.send_step(_encode_actions(actions),
                                              list(_OBS.values()))
                   for actions in _STEPS]
        await _leave_and_destroy(connection, name)
    return results

  results = _run(main())
  assert [state for state, _ in results] == [state for state, _ in expected]
  assert [state for state, _ in results].count(toy_server.TERMINATED) == 1
  for (_, got), (_, want) in zip(results, expected):
    _assert_observations_equal(got, want)
  if spy:
    # The interceptor saw messages, one per request, steps included.
    assert len(spy.requests) == 2 + len(_STEPS) + 2
    assert all(type(r) is _Req for r in spy.requests)
    assert spy.requests[2].step.actions[_ACT["move"]].int32s.array == [2]


def test_expected_observations_match_a_hand_computation():
  # Independent of the server code: the contract in toy_server's docstring.
  (_, first), (_, second), (kind, third) = toy_server.expected_observations(
      [{"move": -2}, {"move": -1, "paint": [1.0, 0.5, 0.0]}, {"label": "x"}],
      seed=2, episode_length=2)
  assert first["position"] == 2 and first["step_count"] == 0
  assert second["position"] == 1 and not second["is_even"]
  assert second["reward"] == -1.0 and second["discount"] == 1.0
  np.testing.assert_array_equal(second["pixel"], [255, 128, 0])
  np.testing.assert_array_equal(second["trajectory"], [2, 1])
  image = np.empty((6, 8, 3), np.float32)
  image[...] = [1.0, 0.5, 0.0]
  image[1, 1] = 1.0
  np.testing.assert_array_equal(second["image"], image)
  assert kind == toy_server.TERMINATED and third["discount"] == 0.0
  assert third["label"] == "x" and third["step_count"] == 2


def test_send_through_raw_stream_and_errors(backend, toy):
  _, address = toy

  async def main():
    async with _channel(address) as channel:
      with async_connection.AsyncConnection(channel) as connection:
        with pytest.raises(error.DmEnvRpcError, match="not joined") as caught:
          await connection.send_step({}, [])
        assert caught.value.code == code_pb2.FAILED_PRECONDITION
        with pytest.raises(error.DmEnvRpcError, match="no world") as caught:
          await connection.send(
              dm_env_rpc_pb2.JoinWorldRequest(world_name="nowhere"))
        assert caught.value.code == code_pb2.NOT_FOUND
        name, specs = await _create_and_join(connection)
        assert specs == toy_server.specs()
        await connection.send_step({}, [])  # Starts the episode.
        with pytest.raises(error.DmEnvRpcError, match="above"):
          await connection.send_step({_ACT["move"]: np.int32(3)}, [])
        with pytest.raises(error.DmEnvRpcError, match="uid 42"):
          await connection.send_step({}, [42])
        state, observations = await connection.send_step(
            {_ACT["move"]: np.int32(1)}, [_OBS["position"]])
        assert (state, observations) == (toy_server.RUNNING,
                                         {_OBS["position"]: 1})
        reset = await connection.send(dm_env_rpc_pb2.ResetRequest())
        assert reset.specs == specs
        await _leave_and_destroy(connection, name)

  _run(main())


@pytest.mark.parametrize("zero_copy", [False, True])
def test_zero_copy_gives_read_only_views(backend, toy, zero_copy):
  _, address = toy

  async def main():
    async with _channel(address) as channel:
      with async_connection.AsyncConnection(channel) as connection:
        name, _ = await _create_and_join(connection)
        _, observations = await connection.send_step(
            {}, [_OBS["image"], _OBS["trajectory"], _OBS["pixel"]],
            zero_copy=zero_copy)
        await _leave_and_destroy(connection, name)
    return observations

  observations = _run(main())
  image = observations[_OBS["image"]]
  assert image.shape == (6, 8, 3) and image.dtype == np.float32
  assert image[0, 0].tolist() == [1.0, 1.0, 1.0]
  assert image.flags.writeable is (not zero_copy)
  if zero_copy:
    with pytest.raises(ValueError):
      image[0, 0, 0] = 2.0
  # uint8 is always a view (as upstream); varint payloads are always fresh.
  assert not observations[_OBS["pixel"]].flags.writeable
  assert observations[_OBS["trajectory"]].flags.writeable


def test_close_ends_the_stream_on_the_server():
  # A server of its own, so that only this test's streams are counted.
  servicer = _EndSignallingServicer()
  server, port = toy_server.start(servicer=servicer)
  address = f"127.0.0.1:{port}"

  async def main():
    async with _channel(address) as channel:
      connection = async_connection.AsyncConnection(channel)
      name, _ = await _create_and_join(connection)
      stream = connection._stream  # Held, so only close() can end the call.
      assert not servicer.streams_ended.acquire(blocking=False)
      connection.close()
      connection.close()
      assert stream.cancelled()
      # The server's side of the stream finishes, and its world is released.
      assert await asyncio.to_thread(servicer.streams_ended.acquire,
                                     timeout=30)
      with async_connection.AsyncConnection(channel) as other:
        await other.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=name))
        await _leave_and_destroy(other, name)
      with pytest.raises(ValueError, match="stream is closed"):
        await connection.send(dm_env_rpc_pb2.LeaveWorldRequest())

  try:
    _run(main())
  finally:
    server.stop(None)


def test_concurrent_sends_each_get_their_own_answer(backend, toy):
  _, address = toy

  async def main():
    async with _channel(address) as channel:
      with async_connection.AsyncConnection(channel) as connection:
        name, _ = await _create_and_join(connection)
        await connection.send_step({}, [])
        uids = list(_OBS.values())
        results = await asyncio.gather(
            *(connection.send_step({}, [uid]) for uid in uids))
        await _leave_and_destroy(connection, name)
    return uids, results

  uids, results = _run(main())
  for uid, (_, observations) in zip(uids, results):
    assert list(observations) == [uid]


def test_connect_helper_against_the_toy_server(backend, toy):
  _, address = toy

  async def main():
    connection = await async_connection.create_secure_async_channel_and_connect(
        address)
    name, _ = await _create_and_join(connection, seed=9)
    _, observations = await connection.send_step({}, [_OBS["position"]])
    await _leave_and_destroy(connection, name)
    await connection.close()  # In a loop: the task closing the channel.
    assert connection.close() is None  # Already closed: nothing to do.
    return observations

  assert _run(main()) == {_OBS["position"]: 9}
