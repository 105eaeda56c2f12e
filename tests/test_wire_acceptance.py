"""Decoding accepts what protobuf accepts, and reads it the way protobuf does.

Every byte string here is hand-built with the test-local wire writer, and the
codec's result is compared with what our generated classes parse (then unpacked
by upstream's rules).  Several cases also state the expected value outright.
"""

import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.codec_reference import (
    I32, I64, U64, VARINT, Raises, check_against_upstream, check_decode, compare_step_request,
    compare_step_response, expect_step_request, expect_step_response, expect_tensor, f32field,
    f64field, group, lfield, packed_varints, padded_varint, tag, unknown_fields, varint, vfield)


def f32(*values) -> bytes:
  return np.array(values, "<f4").tobytes()


def f64(*values) -> bytes:
  return np.array(values, "<f8").tobytes()


def shape(*dims) -> bytes:
  return lfield(15, packed_varints(dims))


T_FLOATS = lfield(1, lfield(1, f32(1.5, -2.0))) + shape(2)

TENSOR_CASES = {
    # Repeated scalars: unpacked, several packed runs, mixed.
    "floats_unpacked": lfield(1, f32field(1, 1.0) + f32field(1, 2.0) + f32field(1, 3.0)) + shape(3),
    "floats_split_runs": lfield(1, lfield(1, f32(1)) + lfield(1, f32(2, 3)) + lfield(1, b"")) + shape(3),
    "floats_mixed": lfield(1, f32field(1, 1) + lfield(1, f32(2, 3)) + f32field(1, 4)) + shape(2, 2),
    "doubles_unpacked": lfield(2, f64field(1, 1.25) + f64field(1, -0.0)) + shape(2),
    "doubles_mixed": lfield(2, lfield(1, f64(1, 2)) + f64field(1, 3)) + shape(-1),
    "int32_unpacked": lfield(4, vfield(1, -1) + vfield(1, 5) + vfield(1, -(2**31))) + shape(3),
    "int32_five_byte_negative": lfield(4, lfield(1, b"\xff\xff\xff\xff\x0f" + varint(2))) + shape(2),
    "int32_wider_than_32_bits": lfield(4, lfield(1, varint(2**40 + 7) + varint(2**33 - 1))) + shape(2),
    "int64_split": lfield(5, lfield(1, varint(-5)) + vfield(1, 2**63 - 1) + lfield(1, varint(0))) + shape(3),
    "int64_tenth_byte_garbage": lfield(5, lfield(1, b"\xff" * 9 + b"\x7f")) + shape(1, 1),
    "uint32_truncation": lfield(7, lfield(1, varint(2**40 + 7) + varint(-1) + varint(2**32))) + shape(3),
    "uint64_unpacked": lfield(8, vfield(1, U64) + vfield(1, 2**63) + vfield(1, 0)) + shape(3),
    "bools_any_nonzero": lfield(9, lfield(1, varint(2) + varint(2**63) + varint(0) + varint(-1))) + shape(4),
    "bool_bits_beyond_64_dropped": lfield(9, vfield(1, 0) + tag(1, VARINT) + b"\x80" * 9 + b"\x7e") + shape(2),
    "bool_unpacked": lfield(9, vfield(1, 1) + vfield(1, 0) + vfield(1, 300)) + shape(3),
    # Shape: before the payload, split, unpacked, negative, padded.
    "shape_first": shape(2) + lfield(1, lfield(1, f32(1, 2))),
    "shape_split": shape(2) + lfield(6, lfield(1, bytes(range(6)))) + shape(3),
    "shape_unpacked": vfield(15, 3) + lfield(3, lfield(1, b"\x01\xfe\x7f")) + vfield(15, 1),
    "shape_mixed": vfield(15, 2) + shape(1) + lfield(4, lfield(1, varint(1) + varint(2))) + vfield(15, 1),
    "shape_minus_one_ten_bytes": lfield(15, varint(-1)) + lfield(4, lfield(1, varint(1) + varint(2))),
    "shape_minus_one_five_bytes": lfield(15, b"\xff\xff\xff\xff\x0f" + varint(2)) + lfield(
        4, lfield(1, packed_varints(range(4)))),
    "shape_wider_than_32_bits": lfield(15, varint(2**32 + 3)) + lfield(4, lfield(1, packed_varints(range(3)))),
    "shape_empty_run": lfield(15, b"") + lfield(1, lfield(1, f32(5))),
    # Unknown fields of every wire type, at every level.
    "unknown_top": unknown_fields(20) + T_FLOATS + unknown_fields(100),
    "unknown_in_array": lfield(1, unknown_fields(2) + lfield(1, f32(1, 2)) + unknown_fields(1000)) + shape(2),
    "unknown_in_int8s": lfield(3, unknown_fields(2) + lfield(1, b"\x01\x02") + unknown_fields(9)) + shape(2),
    "unknown_high_field_numbers": tag(2**29 - 1, VARINT) + varint(1) + T_FLOATS + lfield(536870911, b"x"),
    "unknown_nested_groups": group(12, group(13, group(14, vfield(1, 1)))) + T_FLOATS,
    "unknown_empty_group": group(16) + T_FLOATS + group(2**29 - 1),
    # A known field number with the wrong wire type is an unknown field.
    "payload_field_as_varint": vfield(1, 5) + lfield(2, lfield(1, f64(7))),
    "payload_field_as_group": group(1, vfield(1, 1)) + lfield(2, lfield(1, f64(7))),
    "payload_field_as_fixed32": tag(3, I32) + b"abcd" + lfield(5, lfield(1, varint(9))),
    "array_field_as_varint": lfield(1, vfield(1, 5) + f32field(1, 2.5)),
    "array_field_as_fixed64": lfield(1, tag(1, I64) + f64(1) + f32field(1, 2.5) + f32field(1, 3)) + shape(2),
    "doubles_array_as_fixed32": lfield(2, tag(1, I32) + f32(1) + f64field(1, 2.5)),
    "shape_as_fixed32": tag(15, I32) + b"\x02\x00\x00\x00" + T_FLOATS,
    "shape_as_group": group(15, vfield(1, 2)) + T_FLOATS,
    "int8_array_as_varint": lfield(3, vfield(1, 5) + lfield(1, b"\x07\x08")) + shape(2),
    "int32_array_as_fixed32": lfield(4, tag(1, I32) + b"\x01\x00\x00\x00" + lfield(1, varint(3))),
    "uint8_array_as_group": lfield(6, group(1) + lfield(1, b"\x01")),
    # Oneof: a new case clears the old one; the same case merges; bytes: last wins.
    "oneof_switch": lfield(1, lfield(1, f32(1))) + lfield(2, lfield(1, f64(2))),
    "oneof_merge": lfield(1, lfield(1, f32(1))) + lfield(1, lfield(1, f32(2))) + shape(2),
    "oneof_switch_back": lfield(1, lfield(1, f32(1))) + lfield(2, lfield(1, f64(9))) + lfield(
        1, lfield(1, f32(2))),
    "int8_last_wins": lfield(3, lfield(1, b"\x01\x02")) + lfield(3, lfield(1, b"\x03")),
    "int8_field_twice_in_one": lfield(3, lfield(1, b"\x01\x02") + lfield(1, b"\x05\x06\x07")) + shape(3),
    "int8_empty_merge_keeps": lfield(3, lfield(1, b"\x01\x02")) + lfield(3, b"") + shape(2),
    "int8_to_uint8": lfield(3, lfield(1, b"\xff")) + lfield(6, lfield(1, b"\xff")),
    "int32_merge_runs": lfield(4, lfield(1, varint(1))) + shape(2) + lfield(4, vfield(1, 2)),
    "strings_then_floats": lfield(10, lfield(1, b"abc")) + T_FLOATS,
    "floats_then_strings": T_FLOATS + lfield(10, lfield(1, b"ab") + lfield(1, "\u00e9".encode())),
    "protos_then_int64": lfield(11, lfield(1, lfield(1, b"type/x"))) + lfield(5, lfield(1, b"\x01")),
    "strings_merge": lfield(10, lfield(1, b"a")) + shape(2) + lfield(10, lfield(1, b"b")),
    "empty_payload_messages": lfield(1, b"") + lfield(1, b"") + shape(0),
    # Padded (non-canonical) tags and lengths of up to 5 bytes.
    "padded_tag": padded_varint(0x0A, 5) + varint(6) + lfield(1, f32(4)) + shape(1),
    "padded_length": tag(1, 2) + padded_varint(10, 5) + lfield(1, f32(4, 5)) + shape(2),
    "padded_inner_length": lfield(1, tag(1, 2) + padded_varint(8, 5) + f32(4, 5)) + shape(2),
    "padded_shape_dims": lfield(15, padded_varint(2, 5) + padded_varint(1, 3)) + lfield(
        4, lfield(1, padded_varint(7, 10) + varint(8))),
    "ten_byte_varints": lfield(8, lfield(1, padded_varint(5, 10) + b"\xff" * 9 + b"\x01")) + shape(2),
    # Nothing at all, or only shape / unknown fields.
    "empty": b"",
    "only_unknown": unknown_fields(40),
}


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
@pytest.mark.parametrize("name", sorted(TENSOR_CASES))
def test_tensor_wire_cases(codec, name, zero_copy):
  buf = TENSOR_CASES[name]
  try:
    pb.Tensor.FromString(buf)
  except Exception as e:  # every case is one protobuf accepts
    raise AssertionError(f"protobuf rejects the case itself: {e}")
  check_against_upstream(codec, buf, zero_copy)


@pytest.mark.parametrize("name,expected", [
    ("floats_unpacked", np.array([1, 2, 3], np.float32)),
    ("floats_split_runs", np.array([1, 2, 3], np.float32)),
    ("int32_five_byte_negative", np.array([-1, 2], np.int32)),
    ("int32_wider_than_32_bits", np.array([7, -1], np.int32)),
    ("int64_tenth_byte_garbage", np.array([[-1]], np.int64)),
    ("uint32_truncation", np.array([7, 2**32 - 1, 0], np.uint32)),
    ("bools_any_nonzero", np.array([True, True, False, True])),
    ("bool_bits_beyond_64_dropped", np.array([False, False])),
    ("shape_split", np.arange(6, dtype=np.uint8).reshape(2, 3)),
    ("shape_minus_one_ten_bytes", np.array([1, 2], np.int32)),
    ("shape_minus_one_five_bytes", np.arange(4, dtype=np.int32).reshape(2, 2)),
    ("array_field_as_varint", np.float32(2.5)),
    ("payload_field_as_varint", np.float64(7)),
    ("oneof_switch", np.float64(2)),
    ("oneof_merge", np.array([1, 2], np.float32)),
    ("oneof_switch_back", np.float32(2)),
    ("int8_last_wins", np.int8(3)),
    ("int8_field_twice_in_one", np.array([5, 6, 7], np.int8)),
    ("int8_empty_merge_keeps", np.array([1, 2], np.int8)),
    ("int8_to_uint8", np.uint8(255)),
    ("int32_merge_runs", np.array([1, 2], np.int32)),
    ("strings_then_floats", np.array([1.5, -2.0], np.float32)),
    ("strings_merge", np.array(["a", "b"])),
    ("ten_byte_varints", np.array([5, 2**63 | (2**63 - 1)], np.uint64)),
])
def test_tensor_wire_cases_spelled_out(codec, name, expected):
  """The protobuf reading of some cases, written out (pins the reference too)."""
  buf = TENSOR_CASES[name]
  reference = expect_tensor(buf)
  for got in (reference, codec.decode_tensor(buf), codec.decode_tensor(buf, zero_copy=True)):
    assert type(got) is type(expected)
    if isinstance(expected, np.ndarray):
      assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("name", ["no_payload_with_shape", "no_payload_unknown", "empty"])
def test_tensors_without_payload(codec, name):
  buf = {"no_payload_with_shape": shape(2, 2), "no_payload_unknown": unknown_fields(20),
         "empty": b""}[name]
  assert isinstance(expect_tensor(buf), Raises)
  with pytest.raises(TypeError):
    codec.decode_tensor(buf)


def test_overridden_invalid_utf8_string_is_still_rejected(codec):
  """upb validates UTF-8 while parsing, even in a payload a later field replaces."""
  buf = lfield(10, lfield(1, b"\xc3")) + T_FLOATS
  assert isinstance(expect_tensor(buf), Raises)
  with pytest.raises(ValueError):
    codec.decode_tensor(buf)


# ---------------------------------------------------------------------------
# Step messages.

T1 = lfield(1, lfield(1, f32(1.0)))
T2 = lfield(5, lfield(1, varint(-7))) + shape(1)
T3 = lfield(10, lfield(1, "ü".encode()) + lfield(1, b"")) + shape(2)
T_BAD_SHAPE = lfield(1, lfield(1, f32(1, 2, 3))) + shape(2)
T_BAD_UTF8 = lfield(10, lfield(1, b"\xff")) + shape(1)


def entry(key=None, value=None, extra=b"", value_first=False, field=1) -> bytes:
  """A map entry of StepRequest.actions (field 1) or StepResponse.observations (field 2)."""
  key_part = vfield(1, key) if key is not None else b""
  value_part = lfield(2, value) if value is not None else b""
  body = value_part + key_part if value_first else key_part + value_part
  return lfield(field, body + extra)


def requested(*uids) -> bytes:
  return lfield(2, packed_varints(uids))


def map_cases(field):
  """Map-entry edge cases, for the map at `field` of a step message body."""
  def e(*args, **kw):
    return entry(*args, field=field, **kw)

  def raw(body):
    return lfield(field, body)

  return {
      "plain": e(1, T1) + e(2, T2),
      "missing_key": e(None, T1),
      "missing_value": e(3, None),
      "duplicate_keys": e(4, T1) + e(5, T3) + e(4, T2),
      "reversed_entry_fields": e(7, T2, value_first=True),
      "key_twice_in_entry": raw(vfield(1, 5) + vfield(1, 6) + lfield(2, T1)),
      "value_twice_in_entry": raw(vfield(1, 5) + lfield(2, lfield(1, lfield(1, f32(1)))) +
                                  lfield(2, lfield(1, lfield(1, f32(2))) + shape(2))),
      "value_twice_switching": raw(vfield(1, 5) + lfield(2, T3) + lfield(2, T2)),
      "unknown_in_entry": e(8, T1, extra=unknown_fields(3)),
      "unknown_before_key": raw(unknown_fields(3) + vfield(1, 9) + lfield(2, T1)),
      "key_wrong_wire_type": raw(tag(1, I32) + b"\x05\x00\x00\x00" + lfield(2, T1)),
      "value_wrong_wire_type": raw(vfield(1, 3) + vfield(2, 1)),
      "key_max": e(U64, T1) + e(0, T2),
      "key_padded": raw(tag(1, VARINT) + padded_varint(3, 10) + lfield(2, T1)),
      "key_wider_than_64": raw(tag(1, VARINT) + b"\xff" * 9 + b"\x7f" + lfield(2, T1)),
      "unknown_in_step": unknown_fields(3) + e(1, T1) + unknown_fields(30),
      "empty_entry": raw(b""),
      "empty_step": b"",
      "overridden_entry_with_bad_shape": e(2, T_BAD_SHAPE) + e(2, T1),
      "overridden_entry_with_bad_utf8": e(2, T_BAD_UTF8) + e(2, T1),
      "overridden_empty_value": e(2, None) + e(2, T2),
      "entry_with_value_group": raw(vfield(1, 2) + lfield(2, group(30, group(31)) + T2)),
      # upb keeps an entry holding unknown fields as an unknown field of the parent:
      # the entry is not in the map (and does not replace an earlier one)...
      "unknown_entry_does_not_replace": e(2, T1) + e(2, T2, extra=vfield(3, 1)),
      "unknown_entry_with_bad_shape": e(2, T_BAD_SHAPE, extra=group(4)),
      # ...but it is parsed first, so invalid UTF-8 inside it still fails the message.
      "unknown_entry_with_bad_utf8": e(2, T_BAD_UTF8, extra=vfield(3, 1)),
  }


STEP_CASES = map_cases(1)

REQUESTED_CASES = {
    "requested_packed": entry(1, T1) + requested(1, 2),
    "requested_unpacked": vfield(2, 5) + vfield(2, U64) + vfield(2, 0),
    "requested_mixed": requested(1, 2) + vfield(2, 3) + requested() + requested(4),
    "requested_with_entries_between": vfield(2, 9) + entry(1, T1) + requested(8, 7),
    "requested_wrong_wire_type": tag(2, I64) + bytes(8) + requested(6),
    "requested_ten_byte": lfield(2, b"\xff" * 9 + b"\x01" + b"\xff" * 9 + b"\x7f"),
}

ENVELOPE_CASES = {
    "step_twice_merges": lfield(3, entry(1, T1) + requested(1)) + lfield(
        3, entry(2, T2) + entry(1, T3) + requested(2, 1)),
    "other_payload_then_step": lfield(1, lfield(1, b"")) + lfield(3, entry(1, T1)),
    "step_then_other_payload": lfield(3, entry(1, T1)) + lfield(6, b""),
    "step_then_extension": lfield(3, entry(1, T1)) + lfield(15, lfield(1, b"t/x")),
    "unknown_in_envelope": unknown_fields(20) + lfield(3, entry(1, T1)) + group(17, group(18)),
    "reserved_numbers_are_unknown": vfield(8, 1) + lfield(9, b"xx") + lfield(3, b"") + vfield(10, 2),
    "step_as_wrong_wire_type": vfield(3, 1) + group(3) + lfield(3, entry(4, T2)),
    "padded_envelope_tag": padded_varint(0x1A, 5) + varint(len(entry(1, T1))) + entry(1, T1),
    "field_16_is_unknown_in_requests": lfield(16, b"\x08\x01") + lfield(3, entry(1, T1)),
    "no_payload": unknown_fields(20),
    "empty": b"",
}

REQUEST_CASES = {name: lfield(3, body) for name, body in {**STEP_CASES, **REQUESTED_CASES}.items()}
REQUEST_CASES.update(ENVELOPE_CASES)
# Invalid UTF-8 in an overridden map value: protobuf rejects the whole message.
REJECTED_BY_PROTOBUF = {"overridden_entry_with_bad_utf8", "unknown_entry_with_bad_utf8"}
# Each direction's envelope message, our decoder's name, the reference reading and its comparison.
_DIRECTIONS = {
    "request": (pb.EnvironmentRequest, "decode_step_request", expect_step_request,
                compare_step_request),
    "response": (pb.EnvironmentResponse, "decode_step_response", expect_step_response,
                 compare_step_response),
}


def check_step_case(codec, direction, name, buf, zero_copy):
  """The codec decodes `buf` as the reference reads it (a value, or the error protobuf raises)."""
  envelope, decoder, expect, compare = _DIRECTIONS[direction]
  if name not in REJECTED_BY_PROTOBUF:
    envelope.FromString(buf)  # the case itself is valid protobuf
  decode = getattr(codec, decoder)
  check_decode(lambda: decode(buf, zero_copy=zero_copy), expect(buf), compare)


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
@pytest.mark.parametrize("name", sorted(REQUEST_CASES))
def test_step_request_wire_cases(codec, name, zero_copy):
  check_step_case(codec, "request", name, REQUEST_CASES[name], zero_copy)


STATE_CASES = {
    "state_negative": vfield(1, -3),
    "state_five_byte_negative": tag(1, VARINT) + b"\xff\xff\xff\xff\x0f",
    "state_wider_than_32_bits": vfield(1, 2**40 + 3),
    "state_twice": vfield(1, 2) + entry(3, T1, field=2) + vfield(1, 1),
    "state_wrong_wire_type": tag(1, I32) + b"\x02\x00\x00\x00" + lfield(1, b"\x01"),
    "state_unknown_value": vfield(1, 77),
    "state_zero_explicit": vfield(1, 0),
}
STATUS = vfield(1, 5) + lfield(2, b"not found")

RESPONSE_CASES = {name: lfield(3, vfield(1, 1) + body) for name, body in map_cases(2).items()}
RESPONSE_CASES.update({name: lfield(3, body) for name, body in STATE_CASES.items()})
RESPONSE_CASES.update({
    "error": lfield(16, STATUS),
    "error_then_step": lfield(16, STATUS) + lfield(3, vfield(1, 1)),
    "step_then_error": lfield(3, vfield(1, 1)) + lfield(16, STATUS),
    "error_twice_merges": lfield(16, vfield(1, 5)) + lfield(16, lfield(2, b"m")),
    "error_with_unknown_fields": lfield(16, unknown_fields(4) + STATUS),
    "step_twice_merges": lfield(3, vfield(1, 1) + entry(1, T1, field=2)) +
                         lfield(3, entry(2, T2, field=2) + entry(1, T3, field=2)),
    "step_then_reset": lfield(3, b"") + lfield(4, b""),
    "unknown_in_envelope": unknown_fields(20) + lfield(3, vfield(1, 2)) + group(17),
    "no_payload": unknown_fields(20),
    "empty": b"",
})


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
@pytest.mark.parametrize("name", sorted(RESPONSE_CASES))
def test_step_response_wire_cases(codec, name, zero_copy):
  check_step_case(codec, "response", name, RESPONSE_CASES[name], zero_copy)


def test_step_cases_spelled_out(codec):
  actions, uids = codec.decode_step_request(REQUEST_CASES["duplicate_keys"])
  assert sorted(actions) == [4, 5] and actions[4].tolist() == [-7] and uids == []
  actions, _ = codec.decode_step_request(REQUEST_CASES["missing_key"])
  assert list(actions) == [0] and actions[0] == np.float32(1)
  actions, _ = codec.decode_step_request(REQUEST_CASES["key_twice_in_entry"])
  assert list(actions) == [6]
  actions, _ = codec.decode_step_request(REQUEST_CASES["value_twice_in_entry"])
  assert actions[5].tolist() == [1.0, 2.0]
  for name in ("key_wrong_wire_type", "unknown_in_entry", "unknown_entry_with_bad_shape"):
    actions, _ = codec.decode_step_request(REQUEST_CASES[name])
    assert actions == {}, f"{name}: protobuf drops a map entry holding unknown fields"
  actions, _ = codec.decode_step_request(REQUEST_CASES["unknown_entry_does_not_replace"])
  assert actions[2] == np.float32(1)
  actions, _ = codec.decode_step_request(REQUEST_CASES["key_wider_than_64"])
  assert list(actions) == [U64]
  actions, uids = codec.decode_step_request(REQUEST_CASES["step_twice_merges"])
  assert sorted(actions) == [1, 2] and actions[1].tolist() == ["ü", ""] and uids == [1, 2, 1]
  _, uids = codec.decode_step_request(REQUEST_CASES["requested_mixed"])
  assert uids == [1, 2, 3, 4]
  _, uids = codec.decode_step_request(REQUEST_CASES["requested_ten_byte"])
  assert uids == [U64, U64]
  actions, _ = codec.decode_step_request(REQUEST_CASES["overridden_entry_with_bad_shape"])
  assert actions[2] == np.float32(1)
  with pytest.raises(TypeError):
    codec.decode_step_request(REQUEST_CASES["missing_value"])
  with pytest.raises(ValueError, match="leave_world"):
    codec.decode_step_request(REQUEST_CASES["step_then_other_payload"])
  with pytest.raises(ValueError):
    codec.decode_step_request(REQUEST_CASES["overridden_entry_with_bad_utf8"])
  assert codec.decode_step_response(RESPONSE_CASES["state_negative"]) == (-3, {})
  assert codec.decode_step_response(RESPONSE_CASES["state_five_byte_negative"]) == (-1, {})
  assert codec.decode_step_response(RESPONSE_CASES["state_wider_than_32_bits"]) == (3, {})
  assert codec.decode_step_response(RESPONSE_CASES["state_wrong_wire_type"]) == (0, {})
  assert codec.decode_step_response(RESPONSE_CASES["state_unknown_value"]) == (77, {})
  state, observations = codec.decode_step_response(RESPONSE_CASES["state_twice"])
  assert state == 1 and list(observations) == [3]
  state, observations = codec.decode_step_response(RESPONSE_CASES["step_twice_merges"])
  assert state == 1 and observations[1].tolist() == ["ü", ""] and observations[2].tolist() == [-7]
  state, observations = codec.decode_step_response(RESPONSE_CASES["duplicate_keys"])
  assert state == 1 and sorted(observations) == [4, 5] and observations[4].tolist() == [-7]
