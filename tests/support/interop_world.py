"""A deterministic dm_env_rpc world for the interoperability tests, served and
driven with either package's API.

The same servicer and client code run against `dm_env_rpc` (dm-env-rpc from
PyPI) or `dm_env_rpc_fast`: the package is chosen by name at run time, so a
process started for one never imports the other.  That code uses only the
public API the two packages share, which is itself part of what is tested.

    python interop_world.py serve  --package P --port-file F
    python interop_world.py client --package P --address A --out F.pkl [--zero-copy]

This module imports nothing but numpy at the top.
"""
import argparse
import importlib
import os
import pickle
import sys
from concurrent import futures

import numpy as np

EPISODE_LENGTH = 5
STEPS = 23  # several episodes: FIRST, MID, LAST and restarts all happen

# name -> (DataType name, shape); the uid is the position + 1.
OBSERVATIONS = [
    ("image", "FLOAT", (12, 16, 3)),
    ("depth", "DOUBLE", (7,)),
    ("signed_bytes", "INT8", (4, 4)),
    ("grid", "INT32", (3, 5)),
    ("ticks", "INT64", ()),
    ("pixels", "UINT8", (2, 3, 4)),
    ("ids", "UINT32", (3,)),
    ("big", "UINT64", (2,)),
    ("mask", "BOOL", (6,)),
    ("words", "STRING", (2,)),
    ("title", "STRING", ()),
    ("var", "FLOAT", (-1, 2)),
    ("reward", "DOUBLE", ()),
    ("discount", "DOUBLE", ()),
]
ACTIONS = [
    ("move", "INT32", ()),
    ("force", "FLOAT", (2,)),
]
_NP = {"FLOAT": np.float32, "DOUBLE": np.float64, "INT8": np.int8, "INT32": np.int32,
       "INT64": np.int64, "UINT8": np.uint8, "UINT32": np.uint32, "UINT64": np.uint64,
       "BOOL": np.bool_, "STRING": np.str_}


def action_for(i):
  """The action a client sends on its i-th step after reset (0-based)."""
  return {"move": i % 3 - 1, "force": [0.5 * i, -1.0]}


def observations(t, move, force):
  """The observations of step t (1-based within an episode) after an action."""
  force = np.asarray(force, np.float32)
  base = np.arange(12 * 16 * 3, dtype=np.float32).reshape(12, 16, 3)
  return {
      "image": base * np.float32(0.01) + np.float32(t) + force[0],
      "depth": np.linspace(-1, 1, 7) * t,
      "signed_bytes": (np.arange(16, dtype=np.int64) * 17 - 128 + t).astype(np.int8).reshape(4, 4),
      "grid": (np.arange(15, dtype=np.int32) - 7).reshape(3, 5) * (move + 2) * 1000003,
      "ticks": np.int64(t * 10 ** 12 * (1 if move >= 0 else -1)),
      "pixels": ((np.arange(24) * 11 + t) % 256).astype(np.uint8).reshape(2, 3, 4),
      "ids": np.array([t, 2 ** 31 + t, 2 ** 32 - 1], np.uint32),
      "big": np.array([2 ** 63 + t, 2 ** 64 - 1], np.uint64),
      "mask": np.arange(6) % (t + 1) == 0,
      "words": np.array([f"t{t}", "h\u00e9llo \u2603"]),
      "title": f"step {t} move {move}",
      "var": np.arange(2 * t, dtype=np.float32).reshape(t, 2) - force[1],
      "reward": np.float64(move * 0.25 + t),
      "discount": np.float64(0.0 if t > EPISODE_LENGTH else 0.99),
  }


def _modules(package):
  names = ("dm_env_rpc_pb2", "dm_env_rpc_pb2_grpc", "tensor_utils", "connection", "dm_env_adaptor")
  return {name: importlib.import_module(f"{package}.v1.{name}") for name in names}


def make_servicer(package):
  """An EnvironmentServicer for this world, built with `package`'s generated service."""
  m = _modules(package)
  pb2, tensor_utils = m["dm_env_rpc_pb2"], m["tensor_utils"]

  def specs():
    result = pb2.ActionObservationSpecs()
    for table, entries in ((result.observations, OBSERVATIONS), (result.actions, ACTIONS)):
      for uid, (name, dtype, shape) in enumerate(entries, 1):
        spec = table[uid]
        spec.name, spec.dtype = name, pb2.DataType.Value(dtype)
        spec.shape.extend(shape)
    result.actions[1].min.int32s.array.append(-1)
    result.actions[1].max.int32s.array.append(1)
    return result

  obs_names = {uid: name for uid, (name, _, _) in enumerate(OBSERVATIONS, 1)}

  class Servicer(m["dm_env_rpc_pb2_grpc"].EnvironmentServicer):

    def Process(self, request_iterator, context):
      t = 0
      worlds = set()
      for request in request_iterator:
        kind = request.WhichOneof("payload")
        response = pb2.EnvironmentResponse()
        if kind == "create_world":
          name = f"world{len(worlds)}"
          worlds.add(name)
          response.create_world.world_name = name
        elif kind == "join_world" and request.join_world.world_name in worlds:
          response.join_world.specs.CopyFrom(specs())
        elif kind == "reset":
          t = 0
          response.reset.specs.CopyFrom(specs())
        elif kind == "step":
          step = request.step
          move = int(tensor_utils.unpack_tensor(step.actions[1])) if 1 in step.actions else 0
          force = tensor_utils.unpack_tensor(step.actions[2]) if 2 in step.actions else [0.0, 0.0]
          t += 1
          values = observations(t, move, force)
          for uid in step.requested_observations:
            response.step.observations[uid].CopyFrom(tensor_utils.pack_tensor(values[obs_names[uid]]))
          response.step.state = pb2.TERMINATED if t > EPISODE_LENGTH else pb2.RUNNING
          if t > EPISODE_LENGTH:
            t = 0
        elif kind in ("leave_world", "destroy_world"):
          getattr(response, kind).SetInParent()
          if kind == "destroy_world":
            worlds.discard(request.destroy_world.world_name)
        else:
          response.error.code = 3
          response.error.message = f"interop world cannot {kind} here"
        yield response

  return Servicer()


def serve(package, port=0):
  """Serves the world with `package` on 127.0.0.1 (local credentials); returns (server, port)."""
  import grpc
  m = _modules(package)
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
  m["dm_env_rpc_pb2_grpc"].add_EnvironmentServicer_to_server(make_servicer(package), server)
  port = server.add_secure_port(f"127.0.0.1:{port}", grpc.local_server_credentials())
  server.start()
  return server, port


def describe(value):
  """What the tests compare of one observation: type, dtype, shape, values, writability."""
  if isinstance(value, np.ndarray):
    return ("ndarray", value.dtype.str, value.shape, value.tolist(), bool(value.flags.writeable))
  if isinstance(value, np.generic):
    return ("scalar", value.dtype.str, (), value.item(), None)
  return (type(value).__name__, None, (), value, None)


def run_client(package, address, zero_copy=False, steps=STEPS, transports=None):
  """Drives the world with `package`'s client; returns one record per TimeStep.

  `transports`, a list, gets the transport the connection stepped over (our
  package's `Connection.transport`; None for dm-env-rpc's).
  """
  import grpc  # noqa: F401  (the connection module needs it)
  m = _modules(package)
  kwargs = {"zero_copy": True} if zero_copy else {}
  conn = m["connection"].create_secure_channel_and_connect(address, timeout=30)
  records = []
  try:
    env, world = m["dm_env_adaptor"].create_and_join_world(
        conn, {"seed": 3}, {}, requested_observations=[n for n, _, _ in OBSERVATIONS], **kwargs)
    timestep = env.reset()
    for i in range(steps):
      records.append((int(timestep.step_type), describe(timestep.reward), describe(timestep.discount),
                      {k: describe(v) for k, v in sorted(timestep.observation.items())}))
      timestep = env.reset() if timestep.last() else env.step(action_for(i))
    env.close()
    conn.send(m["dm_env_rpc_pb2"].DestroyWorldRequest(world_name=world))
    if transports is not None:
      transports.append(getattr(conn, "transport", None))
  finally:
    conn.close()
  return records


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("role", choices=("serve", "client"))
  parser.add_argument("--package", required=True, choices=("dm_env_rpc", "dm_env_rpc_fast"))
  parser.add_argument("--port-file")
  parser.add_argument("--address")
  parser.add_argument("--out")
  parser.add_argument("--zero-copy", action="store_true")
  args = parser.parse_args(argv)
  if args.role == "serve":
    server, port = serve(args.package)
    with open(args.port_file + ".tmp", "w") as f:
      f.write(str(port))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.wait_for_termination()
  else:
    records = run_client(args.package, args.address, args.zero_copy)
    assert not any(name.startswith("dm_env_rpc_fast") for name in sys.modules) or args.package == "dm_env_rpc_fast"
    with open(args.out, "wb") as f:
      pickle.dump(records, f)


if __name__ == "__main__":
  main()
