"""The codec's memory workload: values of every kind, malformed input, and a short run of them.

test_memory.py runs VALUES and MALFORMED through long encode/decode cycles.  Run
from tests/ as `python -m support.leak_workload`, this module encodes and decodes
every dtype, strings, protos and step messages, both zero_copy settings, and the
malformed input (error paths), on the native backend: the workload of the leak
check in tools/sanitizer_tests.sh.
"""

import numpy as np
from google.protobuf import any_pb2

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.codec_reference import lfield, tensor_bytes


def _values():
  any_msg = any_pb2.Any()
  any_msg.Pack(pb.LeaveWorldRequest())
  values = {np.dtype(t).name: np.arange(12).astype(t).reshape(3, 4)
            for t in (np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint32,
                      np.uint64, np.bool_)}
  values["negative int32"] = -np.arange(12, dtype=np.int32)
  values["str"] = np.array(["a", "bc", "d"])
  values["proto"] = np.array([any_msg], dtype=object)
  values["scalar"] = np.float32(2.5)
  return values


VALUES = _values()
MALFORMED = [b"\x0a\x05\x0a\x03\x00\x00", lfield(1, lfield(1, b"\x00" * 3)),
             tensor_bytes("int32s", [1, 2, 3], [2, 2]), tensor_bytes("floats", [1.0], [10**9]),
             lfield(10, lfield(1, b"\xff"))]


def main():
  # Imported here: test_memory imports this module on the pure package too.
  from dm_env_rpc_fast.codec import _native_backend as codec
  big = np.arange(100_000, dtype=np.int64)  # above the GIL-release threshold
  for i in range(300):
    for value in list(VALUES.values()) + [big]:
      buf = codec.encode_tensor(value)
      codec.decode_tensor(buf, zero_copy=i & 1)
      codec.decode_tensor(bytearray(buf), zero_copy=True)
    request = codec.encode_step_request(dict(enumerate(VALUES.values())), [1, 2])
    actions, _ = codec.decode_step_request(request, zero_copy=True)
    codec.decode_step_response(codec.encode_step_response(1, actions))
    for bad in MALFORMED:
      for decode in (codec.decode_tensor, codec.decode_step_request, codec.decode_step_response):
        try:
          decode(bad)
        except ValueError:
          pass
  print("leak workload done")


if __name__ == "__main__":
  main()
