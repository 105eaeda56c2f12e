"""Malformed input: a ValueError exactly where protobuf rejects, the protobuf reading elsewhere.

Never a crash, never another exception type, never an over-read (truncations
are cut from the end of the buffer, so reading past it shows up as a wrong result).
"""

import google.protobuf
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from support.codec_reference import (
    DECODERS, I64, LEN, VARINT, Excluded, Raises, as_action, as_observation, check,
    expect_step_request, expect_step_response, expect_tensor, lfield, nested_groups,
    padded_varint, tag, tensor_bytes, varint, vfield)
from support.malformed import (
    ALL_VALID, BAD_GROUPS, BAD_LENGTH_PREFIXES, BAD_PACKED_RUNS, BAD_TAGS, EDITS, ELEVEN,
    ELEVEN_BYTE_VARINTS, FIELD_NUMBER_ZERO, FLOAT_RUN, TENSORS, WIRE_TYPES_6_AND_7, mutate)

# The codec's acceptance rules are upb's as of protobuf 7 (probed on 7.36).  Older
# upb releases differ at a few edges (e.g. a 6-byte length prefix), so the check
# that protobuf also rejects a case runs only on the release line the rules follow.
RULES_PROTOBUF = int(google.protobuf.__version__.split(".")[0]) >= 7


def assert_rejected(codec, buf: bytes):
  """protobuf rejects `buf` as a Tensor and (wrapped) as step messages; so must we."""
  wrapped = {"tensor": buf, "request": as_action(buf), "response": as_observation(buf)}
  for kind, data in wrapped.items():
    if RULES_PROTOBUF:
      expected = DECODERS[kind][1](data)
      assert isinstance(expected, Raises) and expected.types == (ValueError,), (
          f"the test case is not malformed for protobuf ({kind}): {expected}")
    for zero_copy in (False, True):
      with pytest.raises(ValueError):
        DECODERS[kind][0](codec)(data, zero_copy=zero_copy)
      with pytest.raises(ValueError):
        DECODERS[kind][0](codec)(bytearray(data), zero_copy=zero_copy)


@pytest.mark.parametrize("kind,name,buf", ALL_VALID, ids=[f"{k}-{n}" for k, n, _ in ALL_VALID])
def test_every_truncation(codec, kind, name, buf):
  """Each prefix: ValueError iff protobuf rejects it; otherwise protobuf's reading."""
  rejected = 0
  for cut in range(len(buf) + 1):
    prefix = buf[:cut]
    expected = check(codec, kind, prefix)
    rejected += isinstance(expected, Raises) and expected.types == (ValueError,)
    # The same bytes at the end of a larger buffer: only the view's bytes may be read.
    check(codec, kind, memoryview(buf + b"\x0a\xff")[:cut], zero_copy=True)
  assert rejected > 0  # the cuts do reach the malformed cases


# Cheap examples: ten times the profile's count.
MANY = settings(max_examples=settings().max_examples * 10)


@MANY
@given(case=st.sampled_from(ALL_VALID), edits=EDITS, zero_copy=st.booleans())
def test_random_mutations(codec, case, edits, zero_copy):
  kind, _, buf = case
  mutated = mutate(buf, edits)
  try:
    check(codec, kind, mutated, zero_copy)
  except Excluded:
    assume(False)  # see codec_reference.Excluded


@MANY
@given(data=st.binary(max_size=64), kind=st.sampled_from(sorted(DECODERS)))
def test_random_bytes(codec, data, kind):
  try:
    check(codec, kind, data)
  except Excluded:
    assume(False)


# ---------------------------------------------------------------------------
# Specific malformations.

@pytest.mark.parametrize("buf", BAD_LENGTH_PREFIXES, ids=lambda b: b.hex()[:24])
def test_bad_length_prefixes(codec, buf):
  assert_rejected(codec, buf)


def assert_accepted_as_one(codec, buf):
  """`buf` is a valid Tensor holding float32 1, and the codec reads it so."""
  check(codec, "tensor", buf)
  assert codec.decode_tensor(buf) == np.float32(1)


def test_length_prefixes_of_five_bytes_are_accepted(codec):
  assert_accepted_as_one(codec, tag(1, LEN) + padded_varint(len(FLOAT_RUN), 5) + FLOAT_RUN)


@pytest.mark.parametrize("buf", BAD_TAGS, ids=lambda b: b.hex()[:24])
def test_bad_tags(codec, buf):
  assert_rejected(codec, buf)


def test_five_byte_tags_are_accepted(codec):
  for buf in (padded_varint(0x0A, 5) + varint(6) + FLOAT_RUN,
              padded_varint((2**29 - 1) << 3, 5) + b"\x01" + lfield(1, FLOAT_RUN)):
    assert_accepted_as_one(codec, buf)


@pytest.mark.parametrize("buf", ELEVEN_BYTE_VARINTS, ids=lambda b: b.hex()[:24])
def test_eleven_byte_varints(codec, buf):
  assert_rejected(codec, buf)


def test_eleven_byte_varints_in_step_messages(codec):
  for buf in (lfield(3, lfield(2, ELEVEN)),                                 # requested
              lfield(3, tag(2, VARINT) + ELEVEN),
              lfield(3, lfield(1, tag(1, VARINT) + ELEVEN + lfield(2, TENSORS["scalar"]))),
              tag(20, VARINT) + ELEVEN + lfield(3, b"")):
    assert isinstance(expect_step_request(buf), Raises)
    with pytest.raises(ValueError):
      codec.decode_step_request(buf)
  for buf in (lfield(3, tag(1, VARINT) + ELEVEN),                           # state
              lfield(3, lfield(2, tag(1, VARINT) + ELEVEN + lfield(2, TENSORS["scalar"])))):
    assert isinstance(expect_step_response(buf), Raises)
    with pytest.raises(ValueError):
      codec.decode_step_response(buf)


@pytest.mark.parametrize("buf", WIRE_TYPES_6_AND_7, ids=lambda b: b.hex()[:24])
def test_wire_types_6_and_7(codec, buf):
  assert_rejected(codec, buf)


@pytest.mark.parametrize("buf", FIELD_NUMBER_ZERO, ids=lambda b: b.hex()[:24])
def test_field_number_zero(codec, buf):
  assert_rejected(codec, buf)


@pytest.mark.parametrize("buf", BAD_GROUPS, ids=lambda b: b.hex()[:24])
def test_bad_groups(codec, buf):
  assert_rejected(codec, buf)


def depth_ok(kind, buf) -> bool:
  expected = DECODERS[kind][1](buf)
  return not (isinstance(expected, Raises) and expected.types == (ValueError,))


@pytest.mark.parametrize("where,limit", [
    ("tensor_top", 100), ("floats_content", 99), ("response_value", 97), ("request_value", 97),
    ("response_entry", 98), ("response_step", 99), ("request_top", 100),
])
def test_nesting_depth_limit(codec, where, limit):
  """Nested groups: the deepest nesting protobuf accepts is accepted, one more is not."""
  def build(depth):
    groups = nested_groups(depth)
    scalar = tensor_bytes("floats", [1.0])
    return {
        "tensor_top": ("tensor", groups + scalar),
        "floats_content": ("tensor", lfield(1, groups + FLOAT_RUN)),
        "response_value": ("response", as_observation(groups + scalar)),
        "request_value": ("request", as_action(groups + scalar)),
        "response_entry": ("response", lfield(3, lfield(2, groups + vfield(1, 3) + lfield(2, scalar)))),
        "response_step": ("response", lfield(3, groups + vfield(1, 1))),
        "request_top": ("request", groups + lfield(3, b"")),
    }[where]
  # The limits measured on protobuf 7.36 (upb) hold for the installed protobuf too.
  assert depth_ok(*build(limit)) and not depth_ok(*build(limit + 1))
  for depth in (limit - 1, limit, limit + 1, limit + 2, 150, 1000):
    kind, buf = build(depth)
    check(codec, kind, buf)
    check(codec, kind, buf, zero_copy=True)


def test_deep_nesting_does_not_crash(codec):
  for depth in (10_000, 200_000):
    buf = nested_groups(depth)
    assert_rejected(codec, buf)
  # Nested length-delimited unknown fields: each level is one more message.
  inner = b""
  for _ in range(5000):
    inner = lfield(20, inner)
  check(codec, "tensor", inner + tensor_bytes("floats", [1.0]))


@pytest.mark.parametrize("values,shape", [
    ([], [2**30, 2**30, 16, 2]),                 # the product wraps to 0 in 64 bits
    ([], [2**30, 2**30, 16, 2, 5]),
    ([1, 2], [2**31 - 1] * 3),
    ([1, 2], [-1, 2**31 - 1, 2**31 - 1, 2**31 - 1]),
    ([1, 2], [2**30, 2**30, 16, 2, -1]),          # the known product wraps to 0
    ([1, 2], [2**30, 2**30, 2**30, 2]),          # 2^91: wraps to 0
    ([1], [2**31 - 1] * 3),                      # broadcast past intp
    ([1], [2**31 - 1, 2**31 - 1, 2**31 - 1, -1]),
    ([1, 2, 3], [2**31 - 1, 3, 0, 2**31 - 1, 2**31 - 1, 2**31 - 1]),
])
@pytest.mark.parametrize("name", ["floats", "int8s", "int32s", "uint8s", "doubles", "bools"])
def test_shape_products_that_overflow(codec, name, values, shape):
  buf = tensor_bytes(name, values, shape)
  expected = expect_tensor(buf)
  assert isinstance(expected, Raises) and expected.types == (ValueError,)
  for zero_copy in (False, True):
    with pytest.raises(ValueError):
      codec.decode_tensor(buf, zero_copy=zero_copy)
  with pytest.raises(ValueError):
    codec.decode_step_request(as_action(buf))


def test_shape_products_wrapping_to_zero(codec):
  """(2^16)^4 = 2^64: a 64-bit product wraps to 0, which must not pass for 'empty'."""
  big = [2**16] * 4
  cases = [([1] * 6, big + [-1]), ([1] * 6, big + [6]), ([], big), ([], big + [-1]),
           ([], big + [0])]
  for values, shape in cases:
    buf = tensor_bytes("int32s", values, shape)
    check(codec, "tensor", buf)
    check(codec, "request", as_action(buf))
  for values, shape in cases[:4]:
    assert isinstance(expect_tensor(tensor_bytes("int32s", values, shape)), Raises)


@pytest.mark.parametrize("buf", BAD_PACKED_RUNS, ids=lambda b: b.hex()[:24])
def test_bad_packed_runs(codec, buf):
  assert_rejected(codec, buf)


def test_invalid_utf8_strings(codec):
  for bad in (b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\xf8b", b"\xc0\xaf"):
    assert_rejected(codec, lfield(10, lfield(1, bad)) + lfield(15, b"\x01"))
  # Any.type_url is a string too.
  assert_rejected(codec, lfield(11, lfield(1, lfield(1, b"\xff"))))


def test_bad_step_envelopes(codec):
  cases = [
      lfield(3, lfield(1, vfield(1, 1) + tag(2, LEN) + b"\xff\xff\xff\xff\x07")),
      lfield(3, lfield(1, b"\x08")),                              # key varint truncated
      lfield(3, tag(1, LEN) + b"\x05\x08\x01"),                   # entry past the step's end
      tag(3, LEN) + b"\x80\x80\x80\x80\x08",
      lfield(3, lfield(2, b"\x80")),                              # requested mid-varint
      lfield(3, tag(2, I64)),
      lfield(3, b"") + tag(1, 7),
      lfield(3, lfield(1, vfield(1, 1) + lfield(2, lfield(1, b"\x0d\x00")))),
  ]
  for buf in cases:
    assert isinstance(expect_step_request(buf), Raises), buf.hex()
    for zero_copy in (False, True):
      with pytest.raises(ValueError):
        codec.decode_step_request(buf, zero_copy=zero_copy)
    check(codec, "response", buf)  # the same bytes read as a response


def test_malformed_non_step_payloads_are_rejected(codec):
  """A payload that a later `step` overrides is still parsed (and validated) by protobuf."""
  for prefix in (lfield(1, lfield(1, b"\xff")),                   # create_world: bad UTF-8 key
                 lfield(2, lfield(1, b"\xff")),                   # join_world: bad world_name
                 lfield(4, tag(1, 7)),
                 lfield(7, b"\x0a\x05")):
    buf = prefix + lfield(3, lfield(1, vfield(1, 1) + lfield(2, TENSORS["scalar"])))
    check(codec, "request", buf)
    response = prefix + lfield(3, vfield(1, 1))
    check(codec, "response", response)
  bad_status = lfield(16, lfield(2, b"\xff")) + lfield(3, vfield(1, 1))
  check(codec, "response", bad_status)
  with pytest.raises(ValueError):
    codec.decode_step_response(lfield(16, lfield(2, b"\xff")))
