"""A dm_env_rpc client, of either package, meeting EdgeEnv (server_envs.py) over a server in
another process: run in a process of its own.

    python edge_client.py --package dm_env_rpc|dm_env_rpc_fast --address A --out OUT.pkl

Lists and reads properties before joining, joins a world without the join hook with a
setting, then creates and joins one with the hook through the package's
`dm_env_adaptor.create_and_join_world` (settings {"agent": "alice"}), and steps it as
STEPS says.  Writes a pickle of {"specs", "before_join", "join_refused", "timesteps"
(observation dicts, or ("error", code, message) for a step that failed), "agent",
"client", "imported"}.  The package is chosen by name, so a process started for one never
imports the other; it imports numpy and the standard library besides.
"""
import argparse
import importlib
import pickle
import sys

# (actions sent, as the adaptor takes them); see test_server_spec_edges.py.
STEPS = [
    {"level": 5},                                         # all held: var empty, command ""
    {"var": [1, 2, 3], "command": "go", "level": 2147483647},
    {"level": 7},                                         # command held: "go"
    {"var": [], "command": "oob"},                        # unit goes out of its bounds
    {"var": [4] * 5, "command": "go"},                    # and back in
]


def _spec(spec):
  return (type(spec).__name__, tuple(spec.shape), str(spec.dtype),
          getattr(spec, "minimum", None), getattr(spec, "maximum", None),
          getattr(spec, "num_values", None))


def _error(e):
  return ("error", getattr(e, "code", None), str(getattr(e, "message", e)))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--package", required=True, choices=["dm_env_rpc", "dm_env_rpc_fast"])
  parser.add_argument("--address", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  v1 = args.package + ".v1"
  dm_connection = importlib.import_module(v1 + ".connection")
  dm_env_adaptor = importlib.import_module(v1 + ".dm_env_adaptor")
  dm_env_rpc_pb2 = importlib.import_module(v1 + ".dm_env_rpc_pb2")
  properties = importlib.import_module(v1 + ".extensions.properties")
  tensor_utils = importlib.import_module(v1 + ".tensor_utils")

  result = {"client": dm_env_adaptor.__file__}
  connection = dm_connection.create_secure_channel_and_connect(args.address, timeout=60)
  try:
    props = properties.PropertiesExtension(connection)
    before = {"listed": sorted(props.specs())}
    try:
      before["read"] = props["agent"]
    except Exception as e:  # pylint: disable=broad-except
      before["read"] = _error(e)
    result["before_join"] = before

    plain = connection.send(dm_env_rpc_pb2.CreateWorldRequest(
        settings={"join_hook": tensor_utils.pack_tensor(False)})).world_name
    try:
      connection.send(dm_env_rpc_pb2.JoinWorldRequest(
          world_name=plain, settings={"agent": tensor_utils.pack_tensor("alice")}))
      result["join_refused"] = None
    except Exception as e:  # pylint: disable=broad-except
      result["join_refused"] = _error(e)
    connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=plain))

    env, world = dm_env_adaptor.create_and_join_world(
        connection, {}, {"agent": "alice"}, extensions={"props": props})
    result["specs"] = {
        "actions": {name: _spec(s) for name, s in env.action_spec().items()},
        "observations": {name: _spec(s) for name, s in env.observation_spec().items()},
    }
    timesteps = [env.reset().observation]
    for action in STEPS:
      try:
        timesteps.append(env.step(action).observation)
      except Exception as e:  # pylint: disable=broad-except
        timesteps.append(_error(e))
    result["timesteps"] = timesteps
    result["agent"] = env.props["agent"]
    env.close()
    connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
  finally:
    connection.close()
  other = "dm_env_rpc_fast" if args.package == "dm_env_rpc" else "dm_env_rpc."
  result["imported"] = sorted(m for m in sys.modules if m.startswith(other))
  with open(args.out, "wb") as f:
    pickle.dump(result, f)


if __name__ == "__main__":
  main()
