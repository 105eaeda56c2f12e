"""A dm_env_rpc server that answers every step with bytes it was given: the gRPC ceiling.

The benchmark's raw client sends fixed step-request bytes to this server and
reads its pre-serialised answers, decoding nothing: the gRPC stream's own
limit for that byte count.  The bytes are the ones the real server
(`dm-env-rpc-fast serve`) sends for the same world, so the ceiling carries
exactly the traffic the clients under test carry.

A world is made by CreateWorld with settings:

  response: uint8 array, the bytes of the EnvironmentResponse to answer every
    step with;
  specs: uint8 array (optional), the bytes of the ActionObservationSpecs that
    JoinWorld and Reset answer with.

A step before JoinWorld, and any request other than create, join, reset,
leave and destroy, is answered with an error.

    python -m dm_env_rpc_fast.benchmark.raw_server --port-file F   # serves until killed
"""
import argparse
import concurrent.futures
import os
import signal
import sys
import threading
from typing import List, Optional

import grpc
import numpy as np

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

PROCESS_METHOD = "/dm_env_rpc.v1.Environment/Process"

_Request = dm_env_rpc_pb2.EnvironmentRequest
_Response = dm_env_rpc_pb2.EnvironmentResponse
_STEP_TAG = b"\x1a"  # EnvironmentRequest.step is field 3, length-delimited
_INVALID_ARGUMENT, _FAILED_PRECONDITION, _UNIMPLEMENTED = 3, 9, 12


def _setting_bytes(settings, key: str) -> Optional[bytes]:
  if key not in settings:
    return None
  value = codec.decode_tensor(settings[key].SerializeToString())
  return np.asarray(value, np.uint8).tobytes()


def _error(code: int, message: str) -> bytes:
  response = _Response()
  response.error.code = code
  response.error.message = f"raw benchmark server: {message}"
  return response.SerializeToString()


class _World:

  def __init__(self, settings):
    step_response = _setting_bytes(settings, "response")
    if step_response is None:
      raise ValueError("CreateWorld needs a 'response' setting (uint8 bytes)")
    self.step_response = step_response
    self.specs = dm_env_rpc_pb2.ActionObservationSpecs.FromString(
        _setting_bytes(settings, "specs") or b"")


def _process(request_iterator, context):  # pylint: disable=unused-argument
  worlds = {}
  joined = None
  for data in request_iterator:
    # The hot path: a step request starts with field 3's tag.
    if data[:1] == _STEP_TAG:
      yield joined.step_response if joined is not None else _error(
          _FAILED_PRECONDITION, "step before JoinWorld")
      continue
    request = _Request.FromString(data)
    kind = request.WhichOneof("payload")
    response = _Response()
    try:
      if kind == "create_world":
        name = f"world{len(worlds)}"
        worlds[name] = _World(request.create_world.settings)
        response.create_world.world_name = name
      elif kind == "join_world":
        joined = worlds[request.join_world.world_name]
        response.join_world.specs.CopyFrom(joined.specs)
      elif kind == "reset" and joined is not None:
        response.reset.specs.CopyFrom(joined.specs)
      elif kind == "leave_world":
        joined = None
        response.leave_world.SetInParent()
      elif kind == "destroy_world":
        worlds.pop(request.destroy_world.world_name, None)
        response.destroy_world.SetInParent()
      else:
        yield _error(_UNIMPLEMENTED, f"{kind} is not supported")
        continue
    except (KeyError, ValueError) as e:
      yield _error(_INVALID_ARGUMENT, f"{kind}: {e}")
      continue
    yield response.SerializeToString()


def serve(port: int = 0, workers: int = 8):
  """Starts the server on 127.0.0.1 (local credentials); returns (server, port)."""
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


def main(argv: Optional[List[str]] = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--port-file", required=True,
                      help="write the bound port here (atomically) once serving")
  args = parser.parse_args(argv)
  server, port = serve()
  stop = threading.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: stop.set())
  tmp = args.port_file + ".tmp"
  with open(tmp, "w") as f:
    f.write(str(port))
  os.replace(tmp, args.port_file)
  while not stop.wait(0.5):
    pass
  server.stop(None).wait()
  return 0


if __name__ == "__main__":
  sys.exit(main())
