"""Byte strings for the malformed-input tests: valid messages to cut and mutate, random
edits of them, and hand-written cases of bad wire structure (each one malformed for protobuf
as a Tensor and, wrapped, as step messages)."""

import numpy as np
from google.protobuf import any_pb2
from hypothesis import strategies as st

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.codec_reference import (
    EGROUP, I32, I64, LEN, SGROUP, U64, VARINT, as_action, as_observation, lfield,
    packed_varints, padded_varint, reference_bytes, tag, tensor_bytes, varint, vfield)


# ---------------------------------------------------------------------------
# Valid messages to cut and mutate.

def valid_tensors():
  status_any = any_pb2.Any()
  status_any.Pack(pb.CreateWorldResponse(world_name="w"))
  return {
      "floats": tensor_bytes("floats", [1.5, -2.0, 3.0, 0.25], [2, 2]),
      "doubles": tensor_bytes("doubles", [1e300, -0.0, 7.0], [3]),
      "int8s": tensor_bytes("int8s", [-1, 2, -3, 4, 5, 6], [2, -1]),
      "int32s": tensor_bytes("int32s", [-1, 300, 2**31 - 1], [3]),
      "int64s": tensor_bytes("int64s", [-(2**63), 1, 2**40], [3, 1]),
      "uint8s": tensor_bytes("uint8s", [255, 0, 128], [1, 3]),
      "uint32s": tensor_bytes("uint32s", [2**32 - 1, 0, 127, 128], [4]),
      "uint64s": tensor_bytes("uint64s", [U64, 1], [2]),
      "bools": tensor_bytes("bools", [1, 0, 1], [3]),
      "strings": reference_bytes(np.array(["ab", "ü", ""])),
      "protos": reference_bytes([status_any, pb.StepRequest(requested_observations=[1])]),
      "scalar": tensor_bytes("floats", [4.0]),
      "broadcast": tensor_bytes("int32s", [9], [2, 3]),
      "unpacked": lfield(1, tag(1, I32) + np.float32(1).tobytes() + tag(1, I32) +
                         np.float32(2).tobytes()) + vfield(15, 2),
  }


TENSORS = valid_tensors()


def valid_requests():
  actions = {1: TENSORS["floats"], 2**64 - 1: TENSORS["int64s"], 0: TENSORS["strings"]}
  body = b"".join(lfield(1, vfield(1, k) + lfield(2, v)) for k, v in actions.items())
  return {
      "step": lfield(3, body + lfield(2, packed_varints([1, 2**64 - 1, 0]))),
      "int8s_action": as_action(TENSORS["int8s"]),
      "empty_step": lfield(3, b""),
  }


def valid_responses():
  observations = {3: TENSORS["doubles"], 4: TENSORS["bools"], 5: TENSORS["uint8s"]}
  body = vfield(1, 2) + b"".join(
      lfield(2, vfield(1, k) + lfield(2, v)) for k, v in observations.items())
  return {
      "step": lfield(3, body),
      "error": lfield(16, vfield(1, 3) + lfield(2, b"bad things")),
      "protos": as_observation(TENSORS["protos"]),
  }


REQUESTS = valid_requests()
RESPONSES = valid_responses()
ALL_VALID = ([("tensor", name, buf) for name, buf in TENSORS.items()] +
             [("request", name, buf) for name, buf in REQUESTS.items()] +
             [("response", name, buf) for name, buf in RESPONSES.items()])


# Random edits: mutate(buf, edits) with the edits drawn from EDITS.

def mutate(buf: bytes, edits) -> bytes:
  data = bytearray(buf)
  for op, position, value in edits:
    if not data and op != "insert":
      continue
    i = position % (len(data) + (op == "insert"))
    if op == "set":
      data[i] = value
    elif op == "xor":
      data[i] ^= 1 << (value % 8)
    elif op == "insert":
      data[i:i] = bytes([value])
    elif op == "delete":
      del data[i]
    elif op == "cut":
      del data[i:]
  return bytes(data)


EDITS = st.lists(st.tuples(st.sampled_from(["set", "xor", "insert", "delete", "cut", "set"]),
                           st.integers(0, 1000), st.integers(0, 255)), min_size=1, max_size=4)


# ---------------------------------------------------------------------------
# Bad wire structure, by what is wrong with it.

FLOAT_RUN = lfield(1, np.float32(1).tobytes())
ELEVEN = b"\xff" * 10 + b"\x01"

BAD_LENGTH_PREFIXES = [
    tag(1, LEN) + b"\xff\xff\xff\xff\x07" + FLOAT_RUN,          # 2^31 - 1: past the end
    tag(1, LEN) + b"\x80\x80\x80\x80\x08" + FLOAT_RUN,          # 2^31
    tag(1, LEN) + b"\xff\xff\xff\xff\x0f" + FLOAT_RUN,          # 2^32 - 1
    tag(1, LEN) + b"\x80\x80\x80\x80\x10" + FLOAT_RUN,          # 2^32 (wraps to 0 in 32 bits)
    tag(1, LEN) + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # 2^64 - 1 in 10 bytes
    tag(1, LEN) + varint(2**31 + 6) + FLOAT_RUN,
    lfield(1, tag(1, LEN) + b"\xfc\xff\xff\xff\x07" + b"\x00" * 8),
    lfield(1, tag(1, LEN) + b"\x80\x80\x80\x80\x08"),
    lfield(3, tag(1, LEN) + b"\xff\xff\xff\xff\x07" + b"\x01"),  # int8s bytes
    lfield(3, tag(1, LEN) + b"\x84\x80\x80\x80\x10" + b"\x01" * 4),  # 2^32 + 4
    tag(15, LEN) + b"\xff\xff\xff\xff\x07\x01",
    tag(20, LEN) + b"\xff\xff\xff\xff\x07" + FLOAT_RUN,          # unknown field
    lfield(10, tag(1, LEN) + b"\x80\x80\x80\x80\x08"),           # strings
    tag(1, LEN) + padded_varint(6, 6) + FLOAT_RUN,               # 6-byte length
]
BAD_TAGS = [
    padded_varint(0x0A, 6) + varint(6) + FLOAT_RUN,              # 6-byte tag
    padded_varint(0x7A, 6) + b"\x01\x01" + lfield(1, FLOAT_RUN),
    lfield(1, padded_varint(0x0A, 6) + b"\x04" + np.float32(1).tobytes()),
    padded_varint(0xA0, 7) + b"\x00" + lfield(1, FLOAT_RUN),     # unknown field, 7 bytes
    b"\xff\xff\xff\xff\x7f" + lfield(1, FLOAT_RUN),              # > uint32 in 5 bytes
    b"\x80\x80\x80\x80\x10" + lfield(1, FLOAT_RUN),              # 2^32: field 0 after wrap
]
ELEVEN_BYTE_VARINTS = [
    tag(15, VARINT) + ELEVEN + lfield(1, FLOAT_RUN),
    lfield(4, tag(1, VARINT) + ELEVEN),
    lfield(4, lfield(1, ELEVEN)),
    lfield(9, lfield(1, b"\x80" * 10 + b"\x00")),
    tag(20, VARINT) + ELEVEN + lfield(1, FLOAT_RUN),
    lfield(15, b"\x80" * 11) + lfield(1, FLOAT_RUN),
]
WIRE_TYPES_6_AND_7 = [
    tag(1, 6) + lfield(1, FLOAT_RUN), tag(1, 7), tag(20, 6) + b"\x00" * 8, tag(20, 7) + b"\x00",
    lfield(1, FLOAT_RUN) + tag(15, 6), lfield(1, tag(1, 7) + b"\x00" * 4),
    lfield(1, FLOAT_RUN) + tag(2**29 - 1, 6),
]
FIELD_NUMBER_ZERO = [
    b"\x00\x00" + lfield(1, FLOAT_RUN), b"\x02\x00", b"\x05\x00\x00\x00\x00", b"\x01" + bytes(8),
    b"\x03\x04", lfield(1, FLOAT_RUN) + b"\x00\x01", lfield(1, b"\x00\x00" + FLOAT_RUN),
    lfield(1, FLOAT_RUN) + padded_varint(0, 3) + b"\x00",
]
BAD_GROUPS = [
    tag(1, EGROUP) + lfield(1, FLOAT_RUN),                       # lone end-group
    lfield(1, FLOAT_RUN) + tag(20, EGROUP),
    lfield(1, tag(1, EGROUP) + FLOAT_RUN),
    tag(20, SGROUP) + tag(21, EGROUP) + lfield(1, FLOAT_RUN),    # mismatched end
    tag(20, SGROUP) + tag(21, SGROUP) + tag(20, EGROUP) + tag(21, EGROUP),
    lfield(1, FLOAT_RUN) + tag(20, SGROUP),                      # unterminated
    lfield(1, FLOAT_RUN) + tag(20, SGROUP) + vfield(1, 1),
    lfield(1, FLOAT_RUN + tag(2, SGROUP)),                       # unterminated in a submessage
    lfield(1, tag(2, SGROUP) + FLOAT_RUN) + tag(2, EGROUP),      # its end outside it
    tag(20, SGROUP) + tag(20, SGROUP) + tag(20, EGROUP),
    tag(20, SGROUP) + tag(1, VARINT) + ELEVEN + tag(20, EGROUP),
]
BAD_PACKED_RUNS = [
    lfield(1, lfield(1, b"\x00\x00\x80")),                       # 3 bytes of floats
    lfield(1, lfield(1, b"\x00" * 5)),
    lfield(1, lfield(1, b"\x00" * 4) + lfield(1, b"\x00" * 7)),
    lfield(2, lfield(1, b"\x00" * 4)),                           # 4 bytes of doubles
    lfield(2, lfield(1, b"\x00" * 12)),
    lfield(2, lfield(1, b"\x00" * 8) + lfield(1, b"\x00")),
    lfield(1, tag(1, I32) + b"\x00\x00\x00"),                    # truncated fixed32
    lfield(2, tag(1, I64) + b"\x00" * 7),                        # truncated fixed64
    tag(20, I64) + b"\x00" * 3,
    tag(20, I32) + b"\x00",
    lfield(4, lfield(1, b"\x01\x80")),                           # packed varints end mid-varint
    lfield(8, lfield(1, b"\xff" * 9)),
    lfield(15, b"\x02\x80") + lfield(1, FLOAT_RUN),
    lfield(9, lfield(1, b"\x01\x81")),
]

# All of the above, for the tests that run every case.
HAND_WRITTEN = (BAD_LENGTH_PREFIXES + BAD_TAGS + ELEVEN_BYTE_VARINTS + WIRE_TYPES_6_AND_7 +
                FIELD_NUMBER_ZERO + BAD_GROUPS + BAD_PACKED_RUNS)
