"""The native codec backend: a thin layer over the C++ extension `dm_env_rpc_fast._native`.

Plain numpy arrays, numpy scalars and Python numbers are encoded without
leaving C++; every other value goes through `_common.prepare` first, exactly as
in the pure backend.  Strings, protos, error payloads and envelopes whose
payload is not a plain `step` go through protobuf (via `_common`), so that both
backends accept and reject exactly what protobuf does.
"""

from typing import Dict, List, Mapping, Sequence, Tuple

from google.protobuf import message as _message

from dm_env_rpc_fast import _native
from dm_env_rpc_fast._proto import dm_env_rpc_pb2
from dm_env_rpc_fast.codec import _common

NAME = "native"


def _slow_value(value):
  """A step map value the C++ fast path declined: bytes, or prepare's (kind, array, shape)."""
  message = _common.tensor_message(value)
  if message is not None:
    return message.SerializeToString()
  kind, array, shape = _common.prepare(value)
  if kind in _common.OBJECT_KINDS:
    return _common.encode_object_tensor(kind, array, shape)
  return kind, array, shape


_native.set_fallbacks(_common.decode_object_tensor, _common.check_uid, _slow_value)
_native.set_max_broadcast_bytes(_common.MAX_BROADCAST_BYTES)
_native.set_out_helpers(_common.check_out, _common.store_decoded)

_encode_fast = _native.encode_tensor_fast
_encode_prepared = _native.encode_prepared
_OBJECT_KINDS = _common.OBJECT_KINDS


def encode_tensor(value, dtype=None, try_compress: bool = False) -> bytes:
  """Encodes a value as the wire bytes of a dm_env_rpc `Tensor` message.

  The bytes are identical to packing the value with upstream's `pack_tensor`
  and calling `SerializeToString()` (except that float32 signalling NaNs keep
  their exact bits).

  Args:
    value: a numpy array, numpy scalar, Python scalar, (nested) sequence, or
      protobuf message(s) for a proto payload.
    dtype: None to infer it, or a numpy dtype / type / DataType value to cast
      the value to (unsafely, as upstream does).
    try_compress: send a single element when all elements are equal.

  Returns:
    A new bytes object; the caller owns it.  `value` is only read.

  Raises:
    TypeError: the dtype has no dm_env_rpc payload type.
    ValueError: the value cannot be represented (jagged, a shape dimension
      beyond int32, a message of 2 GiB or more).
  """
  if dtype is None and not try_compress:
    encoded = _encode_fast(value)
    if encoded is not None:
      return encoded
  kind, array, shape = _common.prepare(value, dtype, try_compress)
  if kind in _OBJECT_KINDS:
    return _common.encode_object_tensor(kind, array, shape)
  return _encode_prepared(kind, array, shape)


def decode_tensor(buf, *, zero_copy: bool = False, out=None):
  """Decodes the wire bytes of a dm_env_rpc `Tensor` message.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer holding one
      serialised Tensor.  It may change during the call (shared memory that
      another process writes): the result is then a ValueError or wrong
      values, never a read or write out of bounds.
    zero_copy: return float32/float64 payloads as read-only views of `buf`
      (possibly unaligned) instead of fresh copies.  No effect when `out` is
      given.
    out: None, or a numpy array to decode into: writable, C-contiguous (any
      alignment), of exactly the payload's dtype and decoded shape (0-d for a
      scalar), not overlapping `buf`.  It is checked before anything is
      written; the elements go straight from `buf` into it (varints decoded
      in place, int8/uint8 copied too; the GIL is released for large
      payloads) and `out` itself is returned.  String and proto payloads
      cannot go into `out` (ValueError).

  Returns:
    A numpy array, or a numpy scalar (str for strings, a protobuf `Any` for
    protos) when the shape is empty.  Ownership:
    - int8/uint8 arrays are always read-only views of `buf`;
    - float32/float64 arrays are fresh and writable, or with `zero_copy` are
      read-only (views of `buf` when the payload is one packed run);
    - every other array, every broadcast result and every scalar is fresh and
      writable.
    A view's base chain holds `buf` (a memoryview of it unless it is bytes),
    so `buf` stays alive, and a bytearray cannot be resized, while the view
    lives.  Do not write to `buf` while views of it are in use.

  Raises:
    ValueError: the bytes are not a valid Tensor message, or the payload does
      not fit the shape, or a one-element payload would broadcast to more
      than MAX_BROADCAST_BYTES (see dm_env_rpc_fast.codec), or `out` does not
      fit the payload (see `_common.check_out`).
    TypeError: the Tensor has no payload, or `out` is not an ndarray.
  """
  return _native.decode_tensor(buf, zero_copy, out)


def encode_step_request(actions: Mapping[int, object], requested: Sequence[int]) -> bytes:
  """Encodes an `EnvironmentRequest` whose payload is a `StepRequest`.

  Identical to `EnvironmentRequest(step=...).SerializeToString(deterministic=True)`.

  Args:
    actions: {uid: value}; each value is anything `encode_tensor` takes (with
      dtype=None), or a `dm_env_rpc_pb2.Tensor` message, sent as is.
    requested: the UIDs of the observations to return, in order.

  Returns:
    A new bytes object; the caller owns it.

  Raises:
    TypeError, ValueError: a UID is not a uint64, or a value cannot be encoded
      (as for `encode_tensor`).
  """
  return _native.encode_step_request(actions, requested)


_STEP = _common.REQUEST_DESCRIPTOR.fields_by_name["step"].number
_ERROR = _common.RESPONSE_DESCRIPTOR.fields_by_name["error"].number


def _envelope_fallback(message_class, buf, payload: int) -> None:
  """Validates an unusual envelope with protobuf; raises for any payload but step.

  Used when the payload is not step, when another payload case appeared before
  it, or when a string/proto tensor was dropped (replaced map key, entry with
  unknown fields): protobuf then checks what the native parser leaves alone.
  """
  descriptor = message_class.DESCRIPTOR
  envelope = message_class()
  try:
    envelope.ParseFromString(bytes(buf))
  except _message.DecodeError as e:
    raise ValueError(f"Malformed {descriptor.name}: {e}") from None
  if payload == _ERROR and descriptor is _common.RESPONSE_DESCRIPTOR:
    _common.raise_status(envelope.error.SerializeToString())
  if payload != _STEP:
    raise _common.wrong_payload(descriptor, payload)


def _checked_again(result):
  """The second native parse after protobuf validated the envelope.

  `buf` is parsed twice on this (rare) path; if it changed in between (shared
  memory written by another process), the second parse may no longer find a
  step payload, and must not hand its payload number back as the result.
  """
  if type(result) is not tuple:
    raise ValueError("the buffer changed while it was being decoded")
  return result


def decode_step_request(buf, *, zero_copy: bool = False) -> Tuple[Dict[int, object], List[int]]:
  """Decodes an `EnvironmentRequest` whose payload is a `StepRequest`.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer.
    zero_copy: as for `decode_tensor`, for every action.

  Returns:
    (actions, requested): {uid: value} with values as `decode_tensor` returns
    them (views keep `buf` alive), and the requested observation UIDs in order.

  Raises:
    ValueError: the bytes are malformed, the payload is not step, or an action
      does not fit its shape.
    TypeError: an action Tensor has no payload.
  """
  result = _native.decode_step_request(buf, zero_copy, False)
  if type(result) is tuple:
    return result
  _envelope_fallback(dm_env_rpc_pb2.EnvironmentRequest, buf, result)
  return _checked_again(_native.decode_step_request(buf, zero_copy, True))


def encode_step_response(state: int, observations: Mapping[int, object]) -> bytes:
  """Encodes an `EnvironmentResponse` whose payload is a `StepResponse`.

  Identical to `EnvironmentResponse(step=...).SerializeToString(deterministic=True)`.

  Args:
    state: an EnvironmentStateType value (any int32: the enum is open).
    observations: {uid: value}, as `actions` in `encode_step_request`.

  Returns:
    A new bytes object; the caller owns it.

  Raises:
    TypeError, ValueError: the state is not an int32, a UID is not a uint64,
      or a value cannot be encoded.
  """
  return _native.encode_step_response(state, observations)


def encode_step_response_into(out, state: int, observations: Mapping[int, object]) -> int:
  """Encodes a step `EnvironmentResponse` straight into the caller's buffer.

  The message is sized first, then written directly into `out` (no
  intermediate bytes object; the GIL is released around large writes, and
  the buffer export held meanwhile stops a bytearray from being resized).

  Args:
    out: a writable C-contiguous buffer (bytearray, mmap.mmap, a memoryview of
      one, a writable ndarray, ...).
    state, observations: as for `encode_step_response`.

  Returns:
    n, the size in bytes of the message.  If n <= len(out) (in bytes), out[0:n]
    now holds exactly the bytes `encode_step_response` returns and nothing
    past n was touched; otherwise nothing was written, and the caller can grow
    its buffer and call again.

  Raises:
    TypeError: `out` is not a writable C-contiguous buffer (checked first).
    TypeError, ValueError: as for `encode_step_response`, with nothing written
      (except if an observation array is changed by another thread during the
      call: that raises with out[0:n] partly written).
  """
  return _native.encode_step_response_into(out, state, observations)


def decode_step_response(buf, *, zero_copy: bool = False,
                         out=None) -> Tuple[int, Dict[int, object]]:
  """Decodes an `EnvironmentResponse` whose payload is a `StepResponse`.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer (it may
      change during the call: see `decode_tensor`).
    zero_copy: as for `decode_tensor`, for every observation not in `out`.
    out: None, or a mapping {uid: array} (a None value counts as absent).
      Each observation whose uid is in `out` is decoded straight into that
      array, by `decode_tensor`'s rules for `out` (errors name the uid), and
      the returned dict maps the uid to that very array.  Every observation's
      payload and shape, and every target, are checked before any target is
      written.  uids the response lacks leave their arrays untouched.

  Returns:
    (state, observations): the EnvironmentStateType value as an int, and
    {uid: value} with values as `decode_tensor` returns them (views keep `buf`
    alive).

  Raises:
    DmEnvRpcError: the payload is an error status.
    ValueError: the bytes are malformed, the payload is neither step nor
      error, or an observation does not fit its shape.
    TypeError: an observation Tensor has no payload.
  """
  out = _common.out_mapping(out)
  result = _native.decode_step_response(buf, zero_copy, False, out)
  if type(result) is tuple:
    return result
  _envelope_fallback(dm_env_rpc_pb2.EnvironmentResponse, buf, result)
  return _checked_again(_native.decode_step_response(buf, zero_copy, True, out))
