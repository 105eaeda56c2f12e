"""dm-env-rpc's own client (from PyPI) driving a server: run in a process of its own.

    python upstream_client.py --address A --seed S --episode-length L \
        --actions ACTIONS.pkl --out RECORDS.pkl

Creates a world (settings seed, episode_length and close_file if given), joins
it with dm_env_rpc's DmEnvAdaptor and its PropertiesExtension, resets, sends
each action (a nested dict, as the adaptor takes it) with a reset after every
LAST step, then leaves and destroys the world.  Writes a pickle of
{"records": [(step type, reward, discount, {flat name: value})],
"properties": {...}, "client": the adaptor module's file}.

It imports dm_env_rpc, numpy and the standard library only, and checks that
dm_env_rpc_fast never got imported.
"""
import argparse
import pickle
import sys


def flatten(nest, prefix=""):
  if hasattr(nest, "items"):
    result = {}
    for key, value in nest.items():
      result.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return result
  return {prefix: nest}


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--address", required=True)
  parser.add_argument("--seed", type=int, required=True)
  parser.add_argument("--episode-length", type=int, required=True)
  parser.add_argument("--close-file")
  parser.add_argument("--actions", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()

  from dm_env_rpc.v1 import connection as dm_connection
  from dm_env_rpc.v1 import dm_env_adaptor
  from dm_env_rpc.v1 import dm_env_rpc_pb2
  from dm_env_rpc.v1.extensions import properties

  with open(args.actions, "rb") as f:
    actions = pickle.load(f)
  settings = {"seed": args.seed, "episode_length": args.episode_length}
  if args.close_file:
    settings["close_file"] = args.close_file
  connection = dm_connection.create_secure_channel_and_connect(args.address, timeout=60)
  try:
    props = properties.PropertiesExtension(connection)
    env, world = dm_env_adaptor.create_and_join_world(
        connection, settings, {}, extensions={"props": props})
    timesteps = [env.reset()]
    for action in actions:
      timesteps.append(env.reset() if timesteps[-1].last() else env.step(action))
    records = [(int(t.step_type), t.reward, t.discount, flatten(t.observation))
               for t in timesteps]
    listed = env.props.specs()
    env.props["counter"] = 4
    property_results = {
        "listed": {key: (spec.readable, spec.writable, spec.listable)
                   for key, spec in listed.items()},
        "gain": env.props["gain"],
        "counter": env.props["counter"],
        "fov": env.props["camera.fov"],
    }
    try:
      env.props["camera"] = "fisheye"
    except PermissionError:
      property_results["camera_write"] = "PermissionError"
    env.close()  # leaves the world
    connection.send(dm_env_rpc_pb2.DestroyWorldRequest(world_name=world))
  finally:
    connection.close()
  imported = sorted(name for name in sys.modules if name.startswith("dm_env_rpc_fast"))
  assert not imported, f"dm_env_rpc_fast was imported: {imported}"
  with open(args.out, "wb") as f:
    pickle.dump({"records": records, "properties": property_results,
                 "client": dm_env_adaptor.__file__}, f)


if __name__ == "__main__":
  main()
