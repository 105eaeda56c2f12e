"""Writes the libFuzzer seed corpora: valid messages of every dtype.

Usage: python fuzz/make_seeds.py OUT_DIR

OUT_DIR/<target>/ gets one file per message, named by its SHA-1: Tensors for
fuzz_decode_tensor (every numeric dtype, strings and protos; scalars,
broadcasts, -1 shapes, empty payloads, unpacked and split runs, unknown
fields), EnvironmentRequest/Response steps for the step targets, and
roundtrip inputs (mode, kind, shape, element bytes: see fuzz_roundtrip.cc).
Built with protobuf's own serialiser and the codec's encoder, so every seed is
a message protobuf accepts.
"""

import hashlib
import itertools
import os
import struct
import sys

import numpy as np
from google.protobuf import any_pb2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("DM_ENV_RPC_FAST_PURE", "1")  # needs no built extension

from dm_env_rpc_fast import codec  # noqa: E402
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb  # noqa: E402

NUMERIC = [np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint32,
           np.uint64, np.bool_]


def varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while True:
    out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
    n >>= 7
    if not n:
      return bytes(out)


def lfield(field: int, payload: bytes) -> bytes:
  return varint(field << 3 | 2) + varint(len(payload)) + payload


def values(dtype):
  info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
  if dtype is np.bool_:
    return np.array([True, False, True, True, False, True, True])
  if info is not None:  # wrapped to the dtype's width
    unsigned = np.dtype(f"u{info.bits // 8}")
    raw = [int(info.min), 0, 1, 127, 128, 300, int(info.max)]
    return np.array([x % (1 << info.bits) for x in raw], unsigned).view(dtype)
  return np.array([0.0, -0.0, 1.5, np.inf, -np.inf, np.nan, 1e-30], dtype)


def tensors():
  any_status = any_pb2.Any()
  any_status.Pack(pb.CreateWorldResponse(world_name="w"))
  for dtype in NUMERIC:
    v = values(dtype)
    yield codec.encode_tensor(v)
    yield codec.encode_tensor(v[:6].reshape(2, 3))
    yield codec.encode_tensor(v[0])                       # scalar
    yield codec.encode_tensor(np.full((3, 2), v[1]), try_compress=True)  # broadcast
    yield codec.encode_tensor(v[:0])                      # empty payload
    t = pb.Tensor.FromString(codec.encode_tensor(v[:4]))
    t.shape[:] = [2, -1]
    yield t.SerializeToString()
  yield codec.encode_tensor(np.array(["ab", "ü", ""]))
  yield codec.encode_tensor(np.array([[any_status, any_status]], dtype=object))
  # Unpacked, split and overridden payloads, unknown fields, shape after payload.
  yield lfield(1, b"\x0d" + struct.pack("<f", 1.0) + b"\x0d" + struct.pack("<f", 2.0))
  yield lfield(4, lfield(1, varint(1) + varint(-1)) + lfield(1, varint(300))) + lfield(15, b"\x03")
  yield b"\x78\x02" + lfield(5, b"\x08\x05\x08\x06") + b"\xa0\x01\x07"
  yield lfield(3, lfield(1, b"\x01\x02")) + lfield(3, lfield(1, b"\x03")) + lfield(15, b"\x01")
  yield lfield(2, lfield(1, struct.pack("<d", 2.5))) + lfield(6, lfield(1, b"\x09"))


def steps(tensor_list):
  numeric = tensor_list[:8]
  for i in range(0, len(tensor_list), 5):
    chunk = tensor_list[i:i + 5]
    actions = {k * 7: pb.Tensor.FromString(t) for k, t in enumerate(chunk)}
    yield ("request", codec.encode_step_request(actions, [1, 2, 2**64 - 1]))
    yield ("response", codec.encode_step_response(1 + i % 3, actions))
  yield ("request", codec.encode_step_request({}, []))
  yield ("response", codec.encode_step_response(0, {}))
  error = pb.EnvironmentResponse()
  error.error.code = 3
  error.error.message = "bad"
  yield ("response", error.SerializeToString())
  yield ("request", pb.EnvironmentRequest(leave_world=pb.LeaveWorldRequest()).SerializeToString())
  for t in numeric:  # unpacked requested UIDs, repeated keys, entries with unknown fields
    entry = b"\x08\x05" + lfield(2, t)
    yield ("request", lfield(3, lfield(1, entry) + lfield(1, entry + b"\x18\x01") + b"\x10\x09"))
    yield ("response", lfield(3, b"\x08\x02" + lfield(2, entry) + lfield(2, b"\x08\x05")))


def roundtrip_inputs():
  for mode, kind, ndim in itertools.product(range(3), range(9), (0, 1, 2)):
    dims = [3, 2][:ndim]
    head = bytes((mode, kind, ndim)) + b"".join(struct.pack("<i", d) for d in dims)
    keys = bytes(range(16)) if mode else b""
    elems = values(NUMERIC[kind])[:6].tobytes()
    yield head + keys + elems


def write(directory, blobs):
  os.makedirs(directory, exist_ok=True)
  for blob in blobs:
    with open(os.path.join(directory, hashlib.sha1(blob).hexdigest()), "wb") as f:
      f.write(blob)


def main(out):
  tensor_list = list(tensors())
  for blob in tensor_list:
    pb.Tensor.FromString(blob)  # every seed is valid
  step_list = list(steps(tensor_list))
  write(os.path.join(out, "fuzz_decode_tensor"), tensor_list)
  write(os.path.join(out, "fuzz_step_request"), [b for k, b in step_list if k == "request"])
  write(os.path.join(out, "fuzz_step_response"), [b for k, b in step_list if k == "response"])
  write(os.path.join(out, "fuzz_roundtrip"), list(roundtrip_inputs()))
  for target in sorted(os.listdir(out)):
    print(f"{target}: {len(os.listdir(os.path.join(out, target)))} seeds")


if __name__ == "__main__":
  main(sys.argv[1])
