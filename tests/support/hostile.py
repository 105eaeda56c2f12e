"""The inputs of test_hostile.py: sizes and shapes that must each be a clear ValueError,
raised promptly, with bounded memory.  HOSTILE maps a case's name to (decoder kind, bytes);
run_case decodes one with both zero_copy settings."""

import pytest

from support.codec_reference import (
    LEN, SGROUP, U64, as_action, as_observation, lfield, nested_groups, padded_varint, tag,
    tensor_bytes, varint)
from support.malformed import FLOAT_RUN

NUMERIC = ["floats", "doubles", "int8s", "int32s", "int64s", "uint8s", "uint32s", "uint64s",
           "bools"]


def huge_lengths():
  """Length prefixes of 2^63 - 1, 2^63, 2^64 - 1 (10 bytes) and 2^35 - 1 (5 bytes), everywhere."""
  cases = {}
  for name, n in (("2^63-1", 2**63 - 1), ("2^63", 2**63), ("2^64-1", U64),
                  ("2^35-1", 2**35 - 1), ("2^31", 2**31)):
    prefix = varint(n)
    cases[f"payload {name}"] = tag(1, LEN) + prefix + FLOAT_RUN
    cases[f"array {name}"] = lfield(1, tag(1, LEN) + prefix + b"\0" * 8)
    cases[f"shape {name}"] = tag(15, LEN) + prefix + b"\x01"
    cases[f"unknown {name}"] = tag(20, LEN) + prefix + FLOAT_RUN
    cases[f"bytes {name}"] = lfield(6, tag(1, LEN) + prefix + b"\x01")
  return cases


# name -> (decoder kind, bytes).  Every one must raise ValueError.
def hostile_cases():
  cases = {}
  for name, buf in huge_lengths().items():
    cases[f"tensor: {name}"] = ("tensor", buf)
    cases[f"action: {name}"] = ("request", as_action(buf))
    cases[f"observation: {name}"] = ("response", as_observation(buf))
  for name, prefix in (("2^63", varint(2**63)), ("2^64-1", varint(U64))):
    cases[f"step length {name}"] = ("request", tag(3, LEN) + prefix + b"\x00")
    cases[f"entry length {name}"] = ("response", lfield(3, tag(2, LEN) + prefix))
  big = 2**31 - 1
  for kind in NUMERIC:
    values = [True, False] if kind == "bools" else [1, 2]
    cases[f"{kind}: shape product beyond int64"] = ("tensor", tensor_bytes(kind, values, [big] * 3))
    cases[f"{kind}: -1 and product beyond int64"] = (
        "tensor", tensor_bytes(kind, values, [-1, big, big, big]))
    one = [True] if kind == "bools" else [7]
    cases[f"{kind}: broadcast to 10^9"] = ("tensor", tensor_bytes(kind, one, [1000, 1000, 1000]))
    cases[f"{kind}: broadcast to 10^9 (flat)"] = ("tensor", tensor_bytes(kind, one, [10**9]))
    cases[f"{kind}: broadcast beyond int64"] = ("tensor", tensor_bytes(kind, one, [big] * 4))
    cases[f"{kind}: broadcast action"] = ("request", as_action(tensor_bytes(kind, one, [10**9])))
    cases[f"{kind}: broadcast observation"] = (
        "response", as_observation(tensor_bytes(kind, one, [10**9])))
  cases["string broadcast to 10^9"] = (
      "tensor", lfield(10, lfield(1, b"abc")) + lfield(15, varint(10**9)))
  cases["proto broadcast to 10^9"] = (
      "tensor", lfield(11, lfield(1, lfield(1, b"type.googleapis.com/x"))) + lfield(15, varint(10**9)))
  # 11-byte varints in the shape, packed and unpacked.
  cases["shape varint of 11 bytes"] = (
      "tensor", lfield(1, FLOAT_RUN) + lfield(15, padded_varint(1, 11)))
  cases["unpacked shape varint of 11 bytes"] = (
      "tensor", lfield(1, FLOAT_RUN) + tag(15, 0) + padded_varint(1, 11))
  # Deep nesting: a million unknown groups (3 MB), and 200 000 nested inside a step.
  cases["a million nested groups"] = ("tensor", nested_groups(10**6) + lfield(1, FLOAT_RUN))
  cases["nested groups in a step"] = ("request", lfield(3, nested_groups(200_000)))
  cases["unterminated nested groups"] = ("tensor", tag(20, SGROUP) * 10**6)
  # Strings that are not UTF-8, in a tensor and inside step messages.
  for i, bad in enumerate((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\xf8ok")):
    strings = lfield(10, lfield(1, b"fine") + lfield(1, bad))
    cases[f"bad utf-8 {i}"] = ("tensor", strings)
    cases[f"bad utf-8 action {i}"] = ("request", as_action(strings))
    cases[f"bad utf-8 observation {i}"] = ("response", as_observation(strings))
  return cases


HOSTILE = hostile_cases()
DECODER = {"tensor": "decode_tensor", "request": "decode_step_request",
           "response": "decode_step_response"}


def run_case(backend, kind, buf):
  """Decodes buf with both zero_copy settings; returns the ValueError messages."""
  messages = []
  for zero_copy in (False, True):
    with pytest.raises(ValueError) as info:
      getattr(backend, DECODER[kind])(buf, zero_copy=zero_copy)
    messages.append(str(info.value))
  return messages
