"""Step messages: byte-identical encoding to deterministic protobuf, decoding as protobuf parses."""

import types

import numpy as np
import pytest
from google.protobuf import any_pb2
from google.rpc import status_pb2
from hypothesis import given, strategies as st

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from dm_env_rpc_fast.v1.error import DmEnvRpcError
from support.codec_reference import (
    U64, Raises, RaisesStatus, check_decode, compare_step_request, compare_step_response,
    expect_step_request, expect_step_response, lfield, reference_tensor, vfield)
from support.strategies import UIDS, action_values


def message_for(pair):
  value, tensor = pair
  return tensor if tensor is not None else value


@st.composite
def step_maps(draw, max_size=5):
  keys = draw(st.lists(UIDS, max_size=max_size, unique=True))
  return {k: draw(action_values()) for k in keys}


def request_bytes(actions: dict, requested) -> bytes:
  step = pb.StepRequest(requested_observations=requested)
  for key, tensor in actions.items():
    step.actions[key].CopyFrom(tensor)
  return pb.EnvironmentRequest(step=step).SerializeToString(deterministic=True)


def response_bytes(state: int, observations: dict) -> bytes:
  step = pb.StepResponse(state=state)
  for key, tensor in observations.items():
    step.observations[key].CopyFrom(tensor)
  return pb.EnvironmentResponse(step=step).SerializeToString(deterministic=True)


def decodable(pairs: dict) -> bool:
  """False if some value is an empty Tensor (which decodes to a TypeError)."""
  return all(message_for(p).WhichOneof("payload") for p in pairs.values())


@given(actions=step_maps(), requested=st.lists(UIDS, max_size=6))
def test_encode_step_request_matches_protobuf(codec, actions, requested):
  given_values = {k: pair[0] for k, pair in actions.items()}
  expected = request_bytes({k: message_for(p) for k, p in actions.items()}, requested)
  got = codec.encode_step_request(given_values, requested)
  assert type(got) is bytes
  assert got == expected, f"\n ours {got.hex()}\n want {expected.hex()}"


@given(state=st.sampled_from([0, 1, 2, 3, 4, -1, 2**31 - 1, -(2**31), 1000]),
       observations=step_maps())
def test_encode_step_response_matches_protobuf(codec, state, observations):
  given_values = {k: pair[0] for k, pair in observations.items()}
  expected = response_bytes(state, {k: message_for(p) for k, p in observations.items()})
  got = codec.encode_step_response(state, given_values)
  assert type(got) is bytes
  assert got == expected, f"\n ours {got.hex()}\n want {expected.hex()}"


@given(actions=step_maps(), requested=st.lists(UIDS, max_size=6), zero_copy=st.booleans())
def test_decode_step_request_matches_protobuf(codec, actions, requested, zero_copy):
  buf = request_bytes({k: message_for(p) for k, p in actions.items()}, requested)
  expected = expect_step_request(buf)
  assert isinstance(expected, Raises) != decodable(actions)
  check_decode(lambda: codec.decode_step_request(buf, zero_copy=zero_copy), expected,
               compare_step_request)


@given(state=st.sampled_from([0, 1, 2, 3, 4, -1, 2**31 - 1, -(2**31)]),
       observations=step_maps(), zero_copy=st.booleans())
def test_decode_step_response_matches_protobuf(codec, state, observations, zero_copy):
  buf = response_bytes(state, {k: message_for(p) for k, p in observations.items()})
  expected = expect_step_response(buf)
  assert isinstance(expected, Raises) != decodable(observations)
  check_decode(lambda: codec.decode_step_response(buf, zero_copy=zero_copy), expected,
               compare_step_response)


@given(actions=step_maps(), requested=st.lists(UIDS, max_size=4))
def test_round_trips(codec, actions, requested):
  values = {k: pair[0] for k, pair in actions.items()}
  if not decodable(actions):
    return
  got_actions, got_requested = codec.decode_step_request(
      codec.encode_step_request(values, requested))
  assert got_requested == requested and sorted(got_actions) == sorted(values)
  assert all(type(k) is int for k in got_actions)
  state, observations = codec.decode_step_response(codec.encode_step_response(2, values))
  assert state == 2 and sorted(observations) == sorted(values)
  expected = expect_step_request(request_bytes({k: message_for(p) for k, p in actions.items()},
                                               requested))
  compare_step_request((got_actions, got_requested), expected)


def test_wire_layout_spelled_out(codec):
  assert codec.encode_step_request({}, []) == bytes.fromhex("1a00")
  assert codec.encode_step_response(0, {}) == bytes.fromhex("1a00")
  assert codec.encode_step_response(1, {}) == bytes.fromhex("1a020801")
  empty_entry = codec.encode_step_request({0: pb.Tensor()}, [])
  assert empty_entry == bytes.fromhex("1a060a0408001200")
  got = codec.encode_step_request({5: np.float32(1)}, [3, 1])
  tensor = bytes.fromhex("0a060a040000803f")
  entry = vfield(1, 5) + lfield(2, tensor)
  assert got == lfield(3, lfield(1, entry) + lfield(2, b"\x03\x01"))
  got = codec.encode_step_response(-1, {})
  assert got == lfield(3, vfield(1, -1)) and len(got) == 13


def test_entries_come_in_protobufs_deterministic_order(codec):
  """Whatever order the insertion gives, the entries come out as protobuf's deterministic
  serialiser writes them (upb, which writes back to front: descending keys)."""
  actions = {U64: np.int32(1), 0: np.int32(2), 2**40: np.int32(3), 7: np.int32(4)}
  want = request_bytes({k: reference_tensor(v) for k, v in actions.items()}, [])
  for order in (list(actions), sorted(actions), sorted(actions, reverse=True)):
    got = codec.encode_step_request({k: actions[k] for k in order}, [])
    assert got == want, f"\n ours {got.hex()}\n want {want.hex()}"
    assert pb.EnvironmentRequest.FromString(got) == pb.EnvironmentRequest.FromString(want)
    observations = codec.encode_step_response(1, {k: actions[k] for k in order})
    assert observations == response_bytes(1, {k: reference_tensor(v) for k, v in actions.items()})


def test_mappings_and_sequences_of_every_kind(codec):
  actions = types.MappingProxyType({3: np.arange(4, dtype=np.uint8), 1: 2.5})
  expected = request_bytes({k: reference_tensor(v) for k, v in actions.items()}, [9, 8, 9])
  for requested in ([9, 8, 9], (9, 8, 9), np.array([9, 8, 9], np.uint64), range(9, 7, -1)):
    want = expected if not isinstance(requested, range) else request_bytes(
        {k: reference_tensor(v) for k, v in actions.items()}, [9, 8])
    assert codec.encode_step_request(actions, requested) == want
  keyed = {np.uint64(U64): 1, np.int64(4): 2}
  assert codec.encode_step_request(keyed, []) == request_bytes(
      {U64: reference_tensor(1), 4: reference_tensor(2)}, [])


def test_tensor_messages_are_sent_as_is(codec):
  tensor = pb.Tensor(shape=[2, 2])
  tensor.floats.array.extend([1.0])  # a broadcast tensor, as a server might send
  unusual = pb.Tensor(shape=[2])
  unusual.strings.array.extend(["ä", ""])
  observations = {1: tensor, 2: unusual, 3: np.zeros(3)}
  got = codec.encode_step_response(1, observations)
  assert got == response_bytes(1, {1: tensor, 2: unusual, 3: reference_tensor(np.zeros(3))})
  state, decoded = codec.decode_step_response(got)
  assert decoded[1].shape == (2, 2) and (decoded[1] == 1).all()
  assert decoded[2].tolist() == ["ä", ""]


@pytest.mark.parametrize("bad", [-1, 2**64, 2**70, np.int64(-1), -(2**63)], ids=repr)
def test_out_of_range_uids_raise(codec, bad):
  with pytest.raises(ValueError):
    codec.encode_step_request({bad: 1.0}, [])
  with pytest.raises(ValueError):
    codec.encode_step_request({}, [1, bad])
  with pytest.raises(ValueError):
    codec.encode_step_response(1, {bad: 1.0})


@pytest.mark.parametrize("bad", ["1", None, 1.5, object()], ids=["'1'", "None", "1.5", "object()"])
def test_uids_that_are_not_integers_raise(codec, bad):
  with pytest.raises((TypeError, ValueError)):
    codec.encode_step_request({bad: 1.0}, [])
  with pytest.raises((TypeError, ValueError)):
    codec.encode_step_request({}, [bad])
  with pytest.raises((TypeError, ValueError)):
    codec.encode_step_response(1, {bad: 1.0})


def test_unsupported_values_raise_like_encode_tensor(codec):
  with pytest.raises(TypeError):
    codec.encode_step_request({1: np.zeros(2, np.float16)}, [])
  with pytest.raises(TypeError):
    codec.encode_step_response(1, {1: np.zeros(2, np.complex64)})
  with pytest.raises(ValueError):
    codec.encode_step_response(1, {1: 2**80})


@pytest.mark.parametrize("code,message,details", [
    (3, "bad action", False), (0, "", False), (13, "ünïcode ⚠", True), (2**31 - 1, "x", False),
    (-5, "negative", False)])
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_error_payload_raises_dm_env_rpc_error(codec, code, message, details, zero_copy):
  status = status_pb2.Status(code=code, message=message)
  if details:
    packed = any_pb2.Any()
    packed.Pack(pb.Tensor(shape=[1]))
    status.details.append(packed)
  buf = pb.EnvironmentResponse(error=status).SerializeToString()
  with pytest.raises(DmEnvRpcError) as info:
    codec.decode_step_response(buf, zero_copy=zero_copy)
  assert info.value.code == code and info.value.message == message
  assert list(info.value.details) == list(status.details)
  assert isinstance(expect_step_response(buf), RaisesStatus)


REQUEST_PAYLOADS = {
    "create_world": pb.CreateWorldRequest(), "join_world": pb.JoinWorldRequest(world_name="w"),
    "reset": pb.ResetRequest(), "reset_world": pb.ResetWorldRequest(),
    "leave_world": pb.LeaveWorldRequest(), "destroy_world": pb.DestroyWorldRequest(),
    "extension": any_pb2.Any(type_url="x/y", value=b"\x08\x01"),
}
RESPONSE_PAYLOADS = {
    "create_world": pb.CreateWorldResponse(world_name="w"), "join_world": pb.JoinWorldResponse(),
    "reset": pb.ResetResponse(), "reset_world": pb.ResetWorldResponse(),
    "leave_world": pb.LeaveWorldResponse(), "destroy_world": pb.DestroyWorldResponse(),
    "extension": any_pb2.Any(type_url="x/y"),
}


@pytest.mark.parametrize("name", sorted(REQUEST_PAYLOADS))
def test_other_request_payloads_are_value_errors_naming_them(codec, name):
  buf = pb.EnvironmentRequest(**{name: REQUEST_PAYLOADS[name]}).SerializeToString()
  with pytest.raises(ValueError, match=name):
    codec.decode_step_request(buf)


@pytest.mark.parametrize("name", sorted(RESPONSE_PAYLOADS))
def test_other_response_payloads_are_value_errors_naming_them(codec, name):
  buf = pb.EnvironmentResponse(**{name: RESPONSE_PAYLOADS[name]}).SerializeToString()
  with pytest.raises(ValueError, match=name):
    codec.decode_step_response(buf)


def test_no_payload_is_a_value_error(codec):
  for buf in (b"", vfield(20, 1), lfield(16, b"")):
    with pytest.raises(ValueError, match="no payload"):
      codec.decode_step_request(buf)
  for buf in (b"", vfield(20, 1)):
    with pytest.raises(ValueError, match="payload"):
      codec.decode_step_response(buf)


def test_decoded_values_follow_tensor_rules(codec):
  """Map values decode exactly like decode_tensor: writability, views, scalars."""
  observations = {1: np.arange(6, dtype=np.float32).reshape(2, 3),
                  2: np.arange(4, dtype=np.int8), 3: np.int64(-9), 4: "s",
                  5: np.array([True, False])}
  buf = codec.encode_step_response(3, observations)
  for zero_copy in (False, True):
    state, decoded = codec.decode_step_response(bytearray(buf), zero_copy=zero_copy)
    assert state == 3
    assert decoded[1].flags.writeable == (not zero_copy)
    assert not decoded[2].flags.writeable
    assert type(decoded[3]) is np.int64 and decoded[3] == -9
    assert type(decoded[4]) is np.str_ and decoded[4] == "s"
    assert decoded[5].flags.writeable and decoded[5].tolist() == [True, False]
    actions, requested = codec.decode_step_request(
        codec.encode_step_request(observations, [5]), zero_copy=zero_copy)
    assert requested == [5] and actions[1].flags.writeable == (not zero_copy)


def test_empty_tensor_value_is_a_type_error(codec):
  with pytest.raises(TypeError):
    codec.decode_step_request(codec.encode_step_request({1: pb.Tensor()}, []))
  with pytest.raises(TypeError):
    codec.decode_step_response(codec.encode_step_response(1, {1: pb.Tensor()}))


@pytest.mark.parametrize("state", [
    0, 3, -1, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**40, np.int32(2), np.int64(-3),
    np.uint64(5), np.uint8(1), 1.5, 2.0, True, False, np.bool_(True), np.float32(1)], ids=repr)
def test_state_argument_like_protobuf(codec, state):
  """encode_step_response's state: what StepResponse(state=...) accepts, and nothing else."""
  if isinstance(state, (bool, np.bool_)):
    # protobuf 7 refuses bools for an enum field; 5.x accepts them.  We always refuse.
    with pytest.raises(TypeError):
      codec.encode_step_response(state, {})
    return
  try:
    expected = lfield(3, pb.StepResponse(state=state).SerializeToString())
  except Exception as e:
    # numpy < 2.3 lets np.bool_ be an index with a DeprecationWarning (an error
    # here); protobuf then fails on the warning.  We refuse bools outright.
    with pytest.raises(TypeError if isinstance(e, Warning) else type(e)):
      codec.encode_step_response(state, {})
    return
  assert codec.encode_step_response(state, {}) == expected
