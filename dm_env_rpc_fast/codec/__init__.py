"""Tensor and step-message codec: numpy arrays to and from dm_env_rpc wire bytes.

One API, two backends with identical behaviour:

- ``native``: the C++ extension ``dm_env_rpc_fast._native`` (the default where it
  is built and the host is little-endian);
- ``pure``: Python with numpy (and protobuf's compiled runtime for small
  varint payloads, where it has one), used where the extension is missing, or
  when the environment variable ``DM_ENV_RPC_FAST_PURE=1`` is set before import.

``BACKEND`` names the live one.  ``BACKEND_MODULES`` maps each backend's name to
its module, for the code that runs both side by side (the tests and the
benchmark); nothing else in the package imports a backend directly.

Functions:
  encode_tensor(value, dtype=None, try_compress=False) -> bytes
  decode_tensor(buf, *, zero_copy=False, out=None) -> numpy array or scalar
  encode_step_request(actions, requested) -> bytes      (an EnvironmentRequest)
  decode_step_request(buf, *, zero_copy=False) -> (actions, requested)
  encode_step_response(state, observations) -> bytes    (an EnvironmentResponse)
  encode_step_response_into(out, state, observations) -> int
      the same bytes written into a caller's writable buffer (e.g. shared
      memory): returns their size n and writes out[0:n] only if n <= len(out),
      else writes nothing (grow the buffer and call again)
  decode_step_response(buf, *, zero_copy=False, out=None) -> (state, observations)

The rules under encode_tensor, for code that applies them without encoding
(the v1 modules, the server, vector):
  prepare(value, dtype=None, try_compress=False) -> (kind, array, shape)
      upstream's pack_tensor rules: the payload kind (a DataType value, FLOAT = 1
      ... PROTO = 11), the elements as a native-order array (one element when
      compressed), and the shape to send
  kind_of(dtype) -> int       the payload kind of a numpy dtype (TypeError if none)
  pack_any(message) -> Any    a message packed into an Any (an Any itself as is)

Decoding into preallocated arrays (``out=``): ``decode_tensor`` takes an array,
``decode_step_response`` a mapping {uid: array}; each tensor whose target is
given is written into it (typically ``batch[i]``, a row of an (N, ...) array)
and the target itself is returned in its place.  A target must be a writable,
C-contiguous ndarray of exactly the payload's dtype and decoded shape (0-d for
a scalar) that does not overlap ``buf``; anything else is a ValueError naming
the uid, expected and actual dtype and shape (TypeError if it is not an
ndarray), raised before any target is written.  String and proto payloads
cannot go into a target.  uids the response lacks leave their arrays untouched.

The native decoders may read from memory that another process writes at the
same time (shared memory): they then raise ValueError or return wrong values,
but never read or write out of bounds.  The pure backend assumes ``buf`` does
not change during a call (copy the bytes out first).

See each backend's docstrings (they are the same) for units and ownership.

``MAX_BROADCAST_BYTES`` (default 256 MiB): a Tensor whose payload is a single
element and whose shape is non-empty decodes to that element repeated over the
shape; a result of more bytes than this is refused with a ValueError before
anything is allocated, so that a few hostile bytes cannot ask for gigabytes.
Set ``DM_ENV_RPC_FAST_MAX_BROADCAST_BYTES`` before import to change it.
Upstream dm-env-rpc has no such limit.
"""

import importlib
import os
import sys

from dm_env_rpc_fast.codec import _common

BACKEND_MODULES = {
    "native": "dm_env_rpc_fast.codec._native_backend",
    "pure": "dm_env_rpc_fast.codec._pure",
}


def _load_backend():
  if os.environ.get("DM_ENV_RPC_FAST_PURE", "") not in ("", "0") or sys.byteorder != "little":
    return importlib.import_module(BACKEND_MODULES["pure"])
  try:
    return importlib.import_module(BACKEND_MODULES["native"])
  except ImportError:
    return importlib.import_module(BACKEND_MODULES["pure"])


_backend = _load_backend()

BACKEND: str = _backend.NAME
encode_tensor = _backend.encode_tensor
decode_tensor = _backend.decode_tensor
encode_step_request = _backend.encode_step_request
decode_step_request = _backend.decode_step_request
encode_step_response = _backend.encode_step_response
encode_step_response_into = _backend.encode_step_response_into
decode_step_response = _backend.decode_step_response

prepare = _common.prepare
kind_of = _common.kind_of
pack_any = _common.pack_any

MAX_BROADCAST_BYTES: int = _common.MAX_BROADCAST_BYTES
RUNNING = _common.RUNNING
TERMINATED = _common.TERMINATED
INTERRUPTED = _common.INTERRUPTED

__all__ = [
    "BACKEND", "BACKEND_MODULES", "encode_tensor", "decode_tensor", "encode_step_request",
    "decode_step_request", "encode_step_response", "encode_step_response_into",
    "decode_step_response", "prepare", "kind_of", "pack_any",
    "RUNNING", "TERMINATED", "INTERRUPTED", "MAX_BROADCAST_BYTES",
]
