"""Stubs for the C++ extension behind dm_env_rpc_fast.codec (use the codec module, not this)."""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

def set_fallbacks(
    decode_object_tensor: Callable[[List[bytes]], Any],
    check_uid: Callable[[Any], int],
    slow_value: Callable[[Any], Union[bytes, Tuple[int, np.ndarray, Tuple[int, ...]]]],
) -> None:
  """Registers the Python callables used for strings/protos, odd UIDs and odd values."""

DEFAULT_MAX_BROADCAST_BYTES: int
MAX_DEPTH: int  # the nesting budget (_common.MAX_DEPTH)
NESTING_ERROR: str  # what going past it raises (_common.NESTING_ERROR)

def set_max_broadcast_bytes(limit: int) -> None:
  """Sets the broadcast cap (see dm_env_rpc_fast.codec.MAX_BROADCAST_BYTES)."""

def encode_tensor_fast(value: Any) -> Optional[bytes]:
  """Tensor bytes for a plain ndarray / numpy scalar / Python number; None for anything else."""

def encode_prepared(kind: int, array: np.ndarray, shape: Sequence[int]) -> bytes:
  """Tensor bytes for the (kind, array, shape) of _common.prepare (numeric kinds only)."""

def set_out_helpers(
    check_out: Callable[[Optional[int], int, Tuple[int, ...], Any, Any], None],
    store_decoded: Callable[[Optional[int], Any, Any, Any, bool], Any],
) -> None:
  """Registers _common.check_out / store_decoded (wording of out= refusals, protobuf-decoded values)."""

def decode_tensor(buf: Any, zero_copy: bool, out: Optional[np.ndarray] = None) -> Any:
  """The value of a Tensor message, or `out` filled with it (see _native_backend.decode_tensor)."""

def encode_step_request(actions: Mapping[int, Any], requested: Sequence[int]) -> bytes: ...
def encode_step_response(state: int, observations: Mapping[int, Any]) -> bytes: ...
def encode_step_response_into(out: Any, state: int, observations: Mapping[int, Any]) -> int:
  """Message size n; writes it into out[0:n] only if it fits (see _native_backend)."""

def decode_step_request(
    buf: Any, zero_copy: bool, validated: bool) -> Union[Tuple[Dict[int, Any], List[int]], int]:
  """(actions, requested), or the envelope's payload number when protobuf must look first."""

def decode_step_response(
    buf: Any, zero_copy: bool, validated: bool,
    out: Optional[Dict[int, Optional[np.ndarray]]] = None,
) -> Union[Tuple[int, Dict[int, Any]], int]:
  """(state, observations), or the envelope's payload number when protobuf must look first.

  `out` (a dict or None): observations whose uid maps to an array are decoded into it.
  """
