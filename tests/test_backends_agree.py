"""The native and pure backends agree on everything: bytes, values, dtypes, shapes, flags,
errors (their types and their texts)."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from support.agreement import assert_agree, outcome
from support.codec_reference import as_action, as_observation, too_big_to_decode
from support.hostile import HOSTILE
from support.malformed import ALL_VALID, EDITS, HAND_WRITTEN, mutate
from support.strategies import NUMERIC, UIDS, action_values, numeric_arrays

MANY = settings(max_examples=settings().max_examples * 5)


DECODER_NAMES = ["decode_tensor", "decode_step_request", "decode_step_response"]


def assert_decoders_agree(both, buf):
  assume(not too_big_to_decode(buf))  # (random shapes could ask for gigabytes)
  decoders_agree(both, buf)


def decoders_agree(both, buf):
  native, pure = both
  for name in DECODER_NAMES:
    for zero_copy in (False, True):
      assert_agree(lambda: getattr(native, name)(buf, zero_copy=zero_copy),
                   lambda: getattr(pure, name)(buf, zero_copy=zero_copy), buf)


@MANY
@given(data=st.binary(max_size=80))
def test_random_bytes(both_backends, data):
  assert_decoders_agree(both_backends, data)


@MANY
@given(case=st.sampled_from(ALL_VALID), edits=EDITS)
def test_mutated_messages(both_backends, case, edits):
  assert_decoders_agree(both_backends, mutate(case[2], edits))


@given(value=numeric_arrays(), try_compress=st.booleans(), dtype=st.sampled_from(
    [None, *NUMERIC, np.float16, 3, 10, 11, 0, str]))
def test_encode_tensor(both_backends, value, try_compress, dtype):
  native, pure = both_backends
  assert_agree(lambda: native.encode_tensor(value, dtype, try_compress),
               lambda: pure.encode_tensor(value, dtype, try_compress))
  encoded = outcome(lambda: pure.encode_tensor(value))
  if encoded[0] == "ok":
    assert_decoders_agree(both_backends, encoded[1])


@given(actions=st.dictionaries(UIDS, action_values(), max_size=4),
       requested=st.lists(st.one_of(UIDS, st.integers(-3, -1)), max_size=4),
       state=st.sampled_from([0, 1, 2, 3, -1, 99]))
def test_step_encoders(both_backends, actions, requested, state):
  native, pure = both_backends
  values = {k: pair[0] for k, pair in actions.items()}
  assert_agree(lambda: native.encode_step_request(values, requested),
               lambda: pure.encode_step_request(values, requested))
  assert_agree(lambda: native.encode_step_response(state, values),
               lambda: pure.encode_step_response(state, values))
  request = outcome(lambda: pure.encode_step_request(values, [abs(u) for u in requested]))
  if request[0] == "ok":
    assert_decoders_agree(both_backends, request[1])


@given(value=hnp.arrays(st.sampled_from(NUMERIC), hnp.array_shapes(min_dims=0, max_dims=3)))
def test_round_trip_across_backends(both_backends, value):
  """What one backend writes, the other reads identically."""
  native, pure = both_backends
  for writer in (native, pure):
    buf = writer.encode_tensor(value)
    assert_agree(lambda: native.decode_tensor(buf), lambda: pure.decode_tensor(buf), buf)


def _odd_buffers():
  raw = bytes.fromhex("0a0a0a080000803f000000407a0102")
  strided = np.frombuffer(raw * 2, np.uint8)[::2]
  return {
      "strided_memoryview": memoryview(strided), "strided_ndarray": strided,
      "fortran_2d": np.asfortranarray(np.frombuffer(raw[:14], np.uint8).reshape(2, 7)),
      "float32_ndarray": np.frombuffer(raw[:12], np.float32), "str": "abc", "int": 5,
      "none": None, "list": list(raw), "released": _released_view(raw),
  }


def _released_view(raw):
  view = memoryview(raw)
  view.release()
  return view


ODD_BUFFERS = _odd_buffers()


def test_odd_buffer_arguments(both_backends):
  """Inputs that are not C-contiguous buffers: the same outcome from both backends."""
  native, pure = both_backends
  mismatches = []
  for name, buf in ODD_BUFFERS.items():
    for decoder in DECODER_NAMES:
      try:
        assert_agree(lambda: getattr(native, decoder)(buf), lambda: getattr(pure, decoder)(buf))
      except AssertionError as e:
        mismatches.append(f"{name}, {decoder}: {e}")
  assert not mismatches, "\n".join(mismatches)


def _as_entries(buf):
  return [buf, as_action(buf), as_observation(buf)]


@pytest.mark.parametrize("buf", [b for buf in HAND_WRITTEN for b in _as_entries(buf)],
                         ids=lambda b: b.hex()[:24])
def test_malformed_corpus_same_errors(both_backends, buf):
  """The hand-written malformed cases, alone and inside step messages: the same texts."""
  decoders_agree(both_backends, buf)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_corpus_same_errors(both_backends, name):
  decoders_agree(both_backends, HOSTILE[name][1])


@pytest.mark.parametrize("buf", [
    b"",  # no payload
    bytes.fromhex("1200"),  # reset (request) / reset (response)
    bytes.fromhex("1a00" + "1200"),  # step, then reset: the last payload wins
    bytes.fromhex("7a00"),  # an unknown payload field
], ids=["none", "reset", "step_then_reset", "unknown_field"])
def test_wrong_payload_same_errors(both_backends, buf):
  """Envelopes whose payload is not step: one text from both backends."""
  native, pure = both_backends
  for name in DECODER_NAMES[1:]:
    assert_agree(lambda: getattr(native, name)(buf), lambda: getattr(pure, name)(buf))
