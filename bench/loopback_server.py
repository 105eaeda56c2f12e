"""A dm_env_rpc server whose steps cost it (almost) nothing, for end-to-end benchmarks.

Every client we measure talks to this same server in a separate process, and
the server answers each step with bytes it serialised when the world was
created.  So the server's cost is the same for every client, and the
differences between clients are their own: the raw gRPC stream (send fixed
bytes, read bytes, decode nothing) is the ceiling, and each dm_env_rpc client
(ours with and without zero_copy, dm-env-rpc's) is measured against it.

A world is made by CreateWorld with settings:
  dtype: str, a numpy dtype name ("float32", "uint8", ...)
  shape: int32 array, the shape of the one observation (uid 1, "obs")
It has one action, uid 1 "act", an int32 scalar.  Every step answers RUNNING
with `obs` filled with a pattern that depends on nothing but the world, so a
client can check what it decoded.

    python bench/loopback_server.py --port-file F   # serves until killed
"""
import argparse
import concurrent.futures
import os
import sys

import grpc
import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

PROCESS_METHOD = "/dm_env_rpc.v1.Environment/Process"
OBS_UID = 1
ACT_UID = 1

_Req = dm_env_rpc_pb2.EnvironmentRequest
_Resp = dm_env_rpc_pb2.EnvironmentResponse


def observation(dtype: str, shape) -> np.ndarray:
  """The observation a world of this dtype and shape returns on every step."""
  count = int(np.prod(shape, dtype=np.int64))
  pattern = np.arange(count, dtype=np.int64) % 251
  if np.dtype(dtype) == np.bool_:
    return (pattern % 2 == 1).reshape(shape)
  return pattern.astype(dtype).reshape(shape)


def specs(dtype: str, shape) -> dm_env_rpc_pb2.ActionObservationSpecs:
  result = dm_env_rpc_pb2.ActionObservationSpecs()
  obs = result.observations[OBS_UID]
  obs.name = "obs"
  obs.shape.extend(shape)
  obs.dtype = codec._common.kind_of(np.dtype(dtype))
  act = result.actions[ACT_UID]
  act.name = "act"
  act.dtype = dm_env_rpc_pb2.INT32
  return result


def _tensor_value(tensor: dm_env_rpc_pb2.Tensor):
  return codec.decode_tensor(tensor.SerializeToString())


class _World:

  def __init__(self, settings):
    self.dtype = str(_tensor_value(settings["dtype"]))
    self.shape = [int(d) for d in np.atleast_1d(_tensor_value(settings["shape"]))]
    self.specs = specs(self.dtype, self.shape)
    self.step_bytes = codec.encode_step_response(
        codec.RUNNING, {OBS_UID: observation(self.dtype, self.shape)})


def _process(request_iterator, context):
  worlds = {}
  joined = None
  for data in request_iterator:
    # Steps are the hot path: a step request starts with field 3's tag (0x1a).
    if data[:1] == b"\x1a" and joined is not None:
      yield joined.step_bytes
      continue
    request = _Req.FromString(data)
    kind = request.WhichOneof("payload")
    response = _Resp()
    if kind == "create_world":
      name = f"world{len(worlds)}"
      worlds[name] = _World(request.create_world.settings)
      response.create_world.world_name = name
    elif kind == "join_world":
      joined = worlds[request.join_world.world_name]
      response.join_world.specs.CopyFrom(joined.specs)
    elif kind == "reset":
      response.reset.specs.CopyFrom(joined.specs)
    elif kind == "leave_world":
      joined = None
      response.leave_world.SetInParent()
    elif kind == "destroy_world":
      worlds.pop(request.destroy_world.world_name, None)
      response.destroy_world.SetInParent()
    else:
      response.error.code = 12  # UNIMPLEMENTED
      response.error.message = f"loopback server: {kind} not supported"
    yield response.SerializeToString()


def serve(port: int = 0, workers: int = 8):
  """Starts the server on 127.0.0.1; returns (server, port)."""
  server = grpc.server(
      concurrent.futures.ThreadPoolExecutor(max_workers=workers),
      options=[("grpc.max_send_message_length", -1),
               ("grpc.max_receive_message_length", -1)])
  handler = grpc.method_handlers_generic_handler("dm_env_rpc.v1.Environment", {
      "Process": grpc.stream_stream_rpc_method_handler(_process)})
  server.add_generic_rpc_handlers((handler,))
  port = server.add_secure_port(f"127.0.0.1:{port}", grpc.local_server_credentials())
  server.start()
  return server, port


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--port-file", required=True)
  args = parser.parse_args(argv)
  server, port = serve()
  tmp = args.port_file + ".tmp"
  with open(tmp, "w") as f:
    f.write(str(port))
  os.replace(tmp, args.port_file)
  server.wait_for_termination()


if __name__ == "__main__":
  sys.exit(main())
