"""Step envelopes of the pure backend (csrc/step_codec.cc): EnvironmentRequest and
EnvironmentResponse whose payload is a step, encoded and decoded without protobuf
objects for their tensors (see `tensor`).  Other payloads are left to protobuf.
"""

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

from dm_env_rpc_fast._proto import dm_env_rpc_pb2
from dm_env_rpc_fast.codec import _common
from dm_env_rpc_fast.codec._pure import routes
from dm_env_rpc_fast.codec._pure import tensor as _tensor
from dm_env_rpc_fast.codec._pure import wire

_INT32_MAX = (1 << 31) - 1



# Map entries are written in descending key order, like the native backend: that is
# what upb's deterministic serialisation produces (it sorts the keys, then encodes
# back to front), and byte-identity with protobuf is the contract.
_DESCENDING = True
_EnvironmentRequest = dm_env_rpc_pb2.EnvironmentRequest
_EnvironmentResponse = dm_env_rpc_pb2.EnvironmentResponse

def _first(pair):
  return pair[0]


def _map_parts(field_tag: bytes, tensors: Mapping) -> Tuple[List, int]:
  """Map<uint64, Tensor> entries in the installed protobuf's deterministic key order."""
  keyed = sorted(((_common.check_uid(key), value) for key, value in tensors.items()),
                 key=_first, reverse=_DESCENDING)
  varint = wire.varint_bytes
  parts = []
  total = 0
  for key, value in keyed:
    tensor_parts, tensor_size = _tensor.value_parts(value)
    head_tail = b"\x08" + varint(key) + b"\x12" + varint(tensor_size)
    entry_size = len(head_tail) + tensor_size
    head = field_tag + varint(entry_size) + head_tail
    parts.append(head)
    parts.extend(tensor_parts)
    total += len(head) + tensor_size
  return parts, total


def _step_envelope(parts: List, total: int) -> bytes:
  parts.insert(0, b"\x1a" + wire.varint_bytes(total))
  return b"".join(parts)


def encode_step_request(actions: Mapping[int, object], requested: Sequence[int]) -> bytes:
  """Encodes an `EnvironmentRequest` whose payload is a `StepRequest`.

  Identical to `EnvironmentRequest(step=...).SerializeToString(deterministic=True)`
  with the installed protobuf runtime (map entries sorted by key in its order).

  Args:
    actions: map from action UID to a value `encode_tensor` accepts (encoded with
      dtype=None) or a `dm_env_rpc.v1.Tensor` message (sent as is).
    requested: the observation UIDs to request, in order.

  Returns:
    A new bytes object, owned by the caller.

  Raises:
    TypeError, ValueError: a UID is not a uint64, or a value cannot be packed.
  """
  parts, total = _map_parts(b"\n", actions)
  if len(requested):
    uids = b"".join([wire.varint_bytes(_common.check_uid(uid)) for uid in requested])
    tail = b"\x12" + wire.varint_bytes(len(uids)) + uids
    parts.append(tail)
    total += len(tail)
  return _step_envelope(parts, total)


def encode_step_response(state: int, observations: Mapping[int, object]) -> bytes:
  """Encodes an `EnvironmentResponse` whose payload is a `StepResponse`.

  Identical to `EnvironmentResponse(step=...).SerializeToString(deterministic=True)`
  with the installed protobuf runtime (map entries sorted by key in its order).

  Args:
    state: the EnvironmentStateType value (any int32: the enum is open).
    observations: map from observation UID to a value `encode_tensor` accepts or
      a `dm_env_rpc.v1.Tensor` message.

  Returns:
    A new bytes object, owned by the caller.

  Raises:
    TypeError, ValueError: state is not an int32, a UID is not a uint64, or a
      value cannot be packed.
  """
  if isinstance(state, (bool, np.bool_)) or not isinstance(state, (int, np.integer)):
    raise TypeError(f"StepResponse state must be an integer, not {type(state).__name__}")
  state = int(state)
  if not -_INT32_MAX - 1 <= state <= _INT32_MAX:
    raise ValueError(f"StepResponse state {state} does not fit int32")
  parts, total = _map_parts(b"\x12", observations)
  if state:
    head = b"\x08" + wire.varint_bytes(state & wire.MASK64)
    parts.insert(0, head)
    total += len(head)
  return _step_envelope(parts, total)


def encode_step_response_into(out, state: int, observations: Mapping[int, object]) -> int:
  """Encodes a step `EnvironmentResponse` into the caller's buffer.

  This backend builds the bytes of `encode_step_response(state, observations)`
  and then copies them into `out` (the native backend writes straight into
  `out`, with no intermediate bytes).

  Args:
    out: a writable C-contiguous buffer (bytearray, mmap.mmap, a memoryview of
      one, a writable ndarray, ...).
    state, observations: as for `encode_step_response`.

  Returns:
    n, the size in bytes of the message.  If n <= len(out) (in bytes), out[0:n]
    now holds exactly the bytes `encode_step_response` returns; otherwise
    nothing was written, and the caller can grow its buffer and call again.

  Raises:
    TypeError: `out` is not a writable C-contiguous buffer (checked first).
    TypeError, ValueError: as for `encode_step_response`, with nothing written.
  """
  view = _common.out_buffer(out)
  data = encode_step_response(state, observations)
  n = len(data)
  if n <= view.nbytes:
    view[:n] = data
  return n



# ---------------------------------------------------------------------------
# Decoding.

def _walk_entry(data, pos: int, end: int, depth: int, what: str, entry):
  """A map<uint64, Tensor> entry: (key, byte spans of the value, had unknown fields).

  `entry` is (map path, entry number), for errors in its value.
  """
  key = 0
  spans = []
  unknown = False
  try:
    while pos < end:
      tag = data[pos]
      if tag < 0x80:
        wire.check_tag(data, tag, pos, what)
        pos += 1
      else:
        tag, pos = wire.read_tag(data, pos, end, what)
      if tag == 0x08:
        key, pos = wire.read_varint(data, pos, end, what)
      elif tag == 0x12:
        at = pos
        start, pos = wire.read_length(data, pos, end, what)
        wire.check_depth(data, at, depth - 1, what)
        spans.append((start, pos))
      else:
        unknown = True
        pos = wire.skip_field(data, pos, end, tag, depth, what)
  except ValueError:
    for span in spans:  # (the native backend reads each value as it meets it)
      _tensor.check_value(data, span, depth - 1, entry)
    raise
  return key, spans, unknown


def _walk_step(data, pos: int, end: int, depth: int, zero_copy: bool, step: dict,
               is_request: bool, into=None):
  """Merges one StepRequest/StepResponse message into `step`.

  `step` holds "tensors" ({uid: loaded tensor}), and "requested" (a list of
  UIDs) or "state".
  """
  name = "EnvironmentRequest.step" if is_request else "EnvironmentResponse.step"
  map_name = name + (".actions" if is_request else ".observations")
  tensors = step["tensors"]
  entries = 0
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      wire.check_tag(data, tag, pos, name)
      pos += 1
    else:
      tag, pos = wire.read_tag(data, pos, end, name)
    if tag == (0x0A if is_request else 0x12):
      at = pos
      start, pos = wire.read_length(data, pos, end, name)
      wire.check_depth(data, at, depth - 1, name)
      entry = (map_name, entries)
      entries += 1
      key, spans, unknown = _walk_entry(data, start, pos, depth - 1, map_name, entry)
      # Every entry is checked, even one a later entry for the same key replaces.
      # (A tensor decoded into a caller's array is copied from a view of the wire.)
      loaded = _tensor.load_tensor(
          data, spans, depth - 2, zero_copy or (into is not None and into.get(key) is not None),
          entry)
      # protobuf (upb) keeps an entry with unknown fields (a wrong wire type
      # for key or value included) as an unknown field of the message, not in the map.
      if unknown:
        if type(loaded[1]) is _tensor.ObjectSpans:
          step["unchecked"] = True  # (protobuf checks its strings: see _walk_envelope)
      else:
        old = tensors.get(key)
        if old is not None and type(old[1]) is _tensor.ObjectSpans:
          step["unchecked"] = True
        tensors[key] = loaded
    elif is_request and tag == 0x12:
      start, pos = wire.read_length(data, pos, end, name)
      if pos > start:
        if data[pos - 1] >= 0x80:  # (ends in the middle of a varint)
          wire.check_varint_run(data, start, pos, name + ".requested_observations")
        routes.read_uids(data, start, pos, step["requested"])
    elif is_request and tag == 0x10:
      uid, pos = wire.read_varint(data, pos, end, name)
      step["requested"].append(uid)
    elif not is_request and tag == 0x08:
      state, pos = wire.read_varint(data, pos, end, name)
      state &= 0xFFFFFFFF
      step["state"] = state - (1 << 32) if state >> 31 else state
    else:
      pos = wire.skip_field(data, pos, end, tag, depth, name)



_STEP = 3
_ERROR = 16
_REQUEST_PAYLOADS = frozenset((1, 2, 3, 4, 5, 6, 7, 15))
_RESPONSE_PAYLOADS = frozenset((1, 2, 3, 4, 5, 6, 7, 15, 16))


def _walk_envelope(buf, zero_copy: bool, is_request: bool, into=None):
  """Walks an EnvironmentRequest/Response; returns (payload field, step dict, data, spans).

  Payloads other than step are left to protobuf: when one appears, the whole
  message is parsed once with protobuf so that exactly what it rejects fails.
  """
  data = wire.as_bytes(buf)
  name = "EnvironmentRequest" if is_request else "EnvironmentResponse"
  payloads = _REQUEST_PAYLOADS if is_request else _RESPONSE_PAYLOADS
  payload = 0
  step = None
  other_spans = []
  saw_other = False
  pos, end = 0, len(data)
  while pos < end:
    tag = data[pos]
    if tag < 0x80:
      wire.check_tag(data, tag, pos, name)
      pos += 1
    else:
      tag, pos = wire.read_tag(data, pos, end, name)
    field = tag >> 3
    if tag & 7 == 2 and field in payloads:
      start, pos = wire.read_length(data, pos, end, name)
      if field != payload:
        # A oneof: another case clears this one.
        step = None
        other_spans = []
        payload = field
      if field == _STEP:
        if step is None:
          step = {"tensors": {}, "requested": [], "state": 0}
        _walk_step(data, start, pos, _common.MAX_DEPTH - 1, zero_copy, step, is_request, into)
      else:
        saw_other = True
        other_spans.append(data[start:pos])
    else:
      pos = wire.skip_field(data, pos, end, tag, _common.MAX_DEPTH, name)
  if saw_other or step is not None and "unchecked" in step:
    _check_with_protobuf(data, is_request)
  return payload, step, other_spans


def _check_with_protobuf(data, is_request: bool) -> None:
  message = _EnvironmentRequest() if is_request else _EnvironmentResponse()
  try:
    message.ParseFromString(bytes(data))
  except Exception as e:  # protobuf's DecodeError, whichever runtime.
    kind = "EnvironmentRequest" if is_request else "EnvironmentResponse"
    raise ValueError(f"Malformed {kind}: {e}") from None


def _finish_tensors(tensors: Dict) -> Dict[int, object]:
  return {uid: _tensor.finish(flat, shape) for uid, (flat, shape) in tensors.items()}


def decode_step_request(buf, *, zero_copy: bool = False) -> Tuple[Dict[int, object], List[int]]:
  """Decodes the wire bytes of an `EnvironmentRequest` whose payload is a step.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer.
    zero_copy: as for `decode_tensor`, applied to every action.

  Returns:
    (actions, requested): a new dict from action UID to array or scalar (each
    owned as `decode_tensor` describes; views keep `buf` alive), and a new list
    of the requested observation UIDs in wire order.

  Raises:
    ValueError: malformed bytes, a payload other than step (named), or an
      action whose payload does not fit its shape.
    TypeError: an action Tensor with no payload.
  """
  payload, step, _ = _walk_envelope(buf, zero_copy, True)
  if payload != _STEP:
    raise _common.wrong_payload(_common.REQUEST_DESCRIPTOR, payload)
  return _finish_tensors(step["tensors"]), step["requested"]


def decode_step_response(buf, *, zero_copy: bool = False,
                         out=None) -> Tuple[int, Dict[int, object]]:
  """Decodes the wire bytes of an `EnvironmentResponse` whose payload is a step.

  Args:
    buf: bytes, bytearray, memoryview or any C-contiguous buffer.  It must not
      change during the call.
    zero_copy: as for `decode_tensor`, applied to every observation not in `out`.
    out: None, or a mapping {uid: array} (a None value counts as absent).
      Each observation whose uid is in `out` is decoded into that array, by
      `decode_tensor`'s rules for `out` (errors name the uid), and the
      returned dict maps the uid to that very array.  Every observation's
      payload and shape, and every target, are checked before any target is
      written.  uids the response lacks leave their arrays untouched.

  Returns:
    (state, observations): the EnvironmentStateType value as an int (any int32),
    and a new dict from observation UID to array or scalar (each owned as
    `decode_tensor` describes; views keep `buf` alive).

  Raises:
    DmEnvRpcError: the payload is an error status.
    ValueError: malformed bytes, a payload other than step or error (named), or
      an observation whose payload does not fit its shape.
    TypeError: an observation Tensor with no payload.
  """
  into = _common.out_mapping(out)
  payload, step, other_spans = _walk_envelope(buf, zero_copy, False, into)
  if payload == _ERROR:
    _common.raise_status(b"".join(other_spans))
  if payload != _STEP:
    raise _common.wrong_payload(_common.RESPONSE_DESCRIPTOR, payload)
  if into is None:
    return step["state"], _finish_tensors(step["tensors"])
  data = wire.as_bytes(buf)
  checked = [_tensor.check_into(uid, loaded, into.get(uid), data)
             for uid, loaded in step["tensors"].items()]
  return step["state"], {c[0]: _tensor.write_into(c) for c in checked}
