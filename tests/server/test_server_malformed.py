"""Malformed request bytes, sent over a raw stream: each gets an error response with a
fitting code and a message naming the problem, and the next valid request on the same
stream works."""
import numpy as np
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import tensor_utils

from support import server_envs
from support.server_helpers import assert_error_response
from support.server_helpers import request_bytes

RUNNING = dm_env_rpc_pb2.EnvironmentStateType.RUNNING


def varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


class _Session:
  """A raw stream joined to a RichEnv world, stepping with the codec's bytes."""

  def __init__(self, stream):
    self.stream = stream
    self.seed = server_envs.new_seed()
    created = stream.send(request_bytes(create_world=dm_env_rpc_pb2.CreateWorldRequest(
        settings={"seed": tensor_utils.pack_tensor(self.seed)})))
    self.world = created.create_world.world_name
    specs = stream.send(request_bytes(join_world=dm_env_rpc_pb2.JoinWorldRequest(
        world_name=self.world))).join_world.specs
    self.obs = {spec.name: uid for uid, spec in specs.observations.items()}
    self.act = {spec.name: uid for uid, spec in specs.actions.items()}
    self.steps = 0

  def step_bytes(self, grip=1):
    return codec.encode_step_request({self.act["arm.grip"]: np.int32(grip)},
                                     [self.obs["counters.t"], self.obs["counters.grip_total"]])

  def assert_steps(self):
    """A valid step on the stream is answered with the environment's next observations."""
    state, observations = codec.decode_step_response(self.stream.send_bytes(self.step_bytes()))
    assert state == RUNNING
    self.steps += 1
    assert observations[self.obs["counters.t"]] == self.steps - 1  # the first step resets


@pytest.fixture
def session(rich_server, raw_stream):
  s = _Session(raw_stream(rich_server.address))
  s.assert_steps()
  s.assert_steps()
  return s


def _check(session, data, code, *fragments):
  assert_error_response(session.stream.send(data), code, *fragments)
  session.assert_steps()


@pytest.mark.parametrize("data", [b"\xff\xff\xff\xff", b"\x0a\x05abc", b"\x07", b"\x08\x80"],
                         ids=["wire type 7", "length past the end", "wire type 7 at once",
                              "truncated varint"])
def test_garbage_is_invalid_argument(session, data):
  """Bytes protobuf cannot parse are INVALID_ARGUMENT, 'malformed request'."""
  _check(session, data, code_pb2.INVALID_ARGUMENT, "malformed request",
         "not an EnvironmentRequest")


def test_a_string_that_is_not_utf8_is_invalid_argument(session):
  """A string field that is not UTF-8 is a malformed request (as protobuf's parser says)."""
  data = b"\x12" + varint(3) + b"\x0a\x01\xff"  # join_world { world_name: b"\xff" }
  _check(session, data, code_pb2.INVALID_ARGUMENT, "malformed request")


def test_every_truncation_of_a_step_is_invalid_argument(session):
  """A step request cut short at any byte is INVALID_ARGUMENT, 'malformed step request'."""
  whole = session.step_bytes(grip=3)
  assert len(whole) > 10
  for end in range(1, len(whole)):
    _check(session, whole[:end], code_pb2.INVALID_ARGUMENT, "malformed step request")


@pytest.mark.parametrize("data", [
    b"\x1a" + varint(2 ** 63) + b"\x00",
    b"\x1a" + varint(2 ** 64 - 1) + b"\x00",
    b"\x1a" + varint(2 ** 31) + b"\x00",
    b"\x1a\xff",
], ids=["2^63", "2^64-1", "2^31", "truncated length"])
def test_a_step_with_a_hostile_length_prefix_is_invalid_argument(session, data):
  """A step whose length prefix is huge or truncated is refused without reading past the bytes."""
  _check(session, data, code_pb2.INVALID_ARGUMENT, "malformed step request")


def test_an_action_tensor_with_a_hostile_length_is_invalid_argument(session):
  # step { actions { key: 2 value: <int32s with a length of 2^62> } }
  """An action Tensor claiming 2^62 bytes is a malformed step request."""
  tensor = b"\x22" + varint(2 ** 62) + b"\x00"
  entry = b"\x08\x02" + b"\x12" + varint(len(tensor)) + tensor
  step = b"\x0a" + varint(len(entry)) + entry
  _check(session, b"\x1a" + varint(len(step)) + step, code_pb2.INVALID_ARGUMENT,
         "malformed step request")


def test_an_action_broadcast_to_a_billion_elements_is_invalid_argument(session):
  """A one-element action broadcast to a billion elements is refused, not allocated."""
  tensor = tensor_utils.pack_tensor(np.int32(1))
  tensor.shape[:] = [1000, 1000, 1000]
  data = request_bytes(step=dm_env_rpc_pb2.StepRequest(actions={session.act["arm.grip"]: tensor}))
  _check(session, data, code_pb2.INVALID_ARGUMENT, "malformed step request")


@pytest.mark.parametrize("data", [b"", b"\xa0\x01\x05", b"\x42\x00"],
                         ids=["empty", "unknown field only", "reserved field 8 only"])
def test_a_request_without_a_payload_is_invalid_argument(session, data):
  """An empty request, or one with only unknown or reserved fields, is INVALID_ARGUMENT, 'request
  without a payload'."""
  _check(session, data, code_pb2.INVALID_ARGUMENT, "request without a payload")


def test_an_unknown_extension_is_unimplemented(session):
  """An extension the server does not know is UNIMPLEMENTED naming its type URL."""
  packed = any_pb2.Any(type_url="type.googleapis.com/acme.Teleport", value=b"\x08\x01")
  _check(session, request_bytes(extension=packed), code_pb2.UNIMPLEMENTED,
         "'type.googleapis.com/acme.Teleport'", "not supported")


def test_a_step_overridden_by_a_later_payload_is_that_payload(session, rich_server):
  """Protobuf's rule: the last payload field wins, even when the bytes start as a step."""
  create = request_bytes(create_world=dm_env_rpc_pb2.CreateWorldRequest(
      settings={"seed": tensor_utils.pack_tensor(server_envs.new_seed())}))
  response = session.stream.send(session.step_bytes() + create)
  assert response.WhichOneof("payload") == "create_world"
  assert response.create_world.world_name in rich_server.servicer.world_names
  session.assert_steps()


def test_a_step_after_another_payload_is_a_step(session):
  """Another payload followed by a step payload is a step (the last payload wins)."""
  leave = request_bytes(leave_world=dm_env_rpc_pb2.LeaveWorldRequest())
  state, observations = codec.decode_step_response(
      session.stream.send_bytes(leave + session.step_bytes()))
  session.steps += 1
  assert state == RUNNING and observations[session.obs["counters.t"]] == session.steps - 1
  session.assert_steps()


def test_malformed_bytes_before_a_join_leave_the_stream_usable(rich_server, raw_stream):
  """Malformed bytes before any world is joined: the stream still creates, joins and steps."""
  stream = raw_stream(rich_server.address)
  assert_error_response(stream.send(b"\xff"), code_pb2.INVALID_ARGUMENT, "malformed request")
  assert_error_response(stream.send(b"\x1a\x02\x0a"), code_pb2.FAILED_PRECONDITION,
                        "Step before JoinWorld")
  session = _Session(stream)
  session.assert_steps()
