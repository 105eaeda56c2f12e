"""The pure-Python codec backend: numpy and protobuf's Python API, no native code of ours.

Its modules mirror csrc/: `wire` (tags, lengths, skipping: csrc/wire.h),
`varints` (whole runs of varints: csrc/varint.h), `tensor` (Tensor encode and
decode: csrc/tensor_codec.cc) and `step` (step envelopes: csrc/step_codec.cc).
`routes` is the one place that chooses, by size, between protobuf's compiled
runtime, numpy and plain Python, and holds every cutoff with its measurement.

Behaviour, byte for byte and error for error, is the same as the native backend;
see the codec spec and `dm_env_rpc_fast.codec`.

The decoders assume that the buffer they are given does not change during the
call (its bytes may be read more than once).  Unlike the native backend they
are not hardened against memory another process writes concurrently: a
shared-memory transport copies the bytes out before decoding with this backend.
"""

from dm_env_rpc_fast.codec._pure.step import decode_step_request
from dm_env_rpc_fast.codec._pure.step import decode_step_response
from dm_env_rpc_fast.codec._pure.step import encode_step_request
from dm_env_rpc_fast.codec._pure.step import encode_step_response
from dm_env_rpc_fast.codec._pure.step import encode_step_response_into
from dm_env_rpc_fast.codec._pure.tensor import decode_tensor
from dm_env_rpc_fast.codec._pure.tensor import encode_tensor

NAME = "pure"
