"""`dm-env-rpc-fast serve`: serve an environment factory from the command line."""
import argparse
import importlib
import os
import signal
import sys
import threading
from typing import List, Optional

DEFAULT_FACTORY = "dm_env_rpc_fast.examples.large_observation:make_env"


def load_factory(spec: str):
  """`module:attribute` (dotted attribute allowed) to the object it names."""
  module_name, sep, attribute = spec.partition(":")
  if not sep or not module_name or not attribute:
    raise ValueError(f"expected MODULE:FACTORY, e.g. {DEFAULT_FACTORY}, not {spec!r}")
  if "" not in sys.path and os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())  # as `python -m` does: modules beside you import
  module = importlib.import_module(module_name)
  target = module
  for part in attribute.split("."):
    try:
      target = getattr(target, part)
    except AttributeError:
      raise ValueError(f"module {module_name!r} has no {attribute!r}") from None
  if not callable(target):
    raise ValueError(f"{spec} is a {type(target).__name__}, not a callable")
  return target


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="dm-env-rpc-fast serve",
      description="Serve a dm_env.Environment over dm_env_rpc. CreateWorld's settings are "
                  "passed to FACTORY as keyword arguments.")
  parser.add_argument("factory", nargs="?", default=DEFAULT_FACTORY, metavar="MODULE:FACTORY",
                      help=f"a callable returning a dm_env.Environment (default: {DEFAULT_FACTORY}, "
                           "the configurable large-observation environment)")
  parser.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default 127.0.0.1; 0.0.0.0 or [::] for all)")
  parser.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one)")
  parser.add_argument("--port-file", help="write the bound port to this file once serving")
  parser.add_argument("--insecure", action="store_true",
                      help="no credentials (needed for clients on other machines, unless you "
                           "add TLS in code); by default only local connections are accepted")
  parser.add_argument("--max-streams", type=int, default=64,
                      help="streams served at once (default 64)")
  parser.add_argument("--no-shared-memory", dest="shared_memory", action="store_false",
                      help="keep every step on gRPC: refuse dm_env_rpc_fast clients' requests "
                           "for a same-host shared-memory step channel")
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  args = _parser().parse_args(argv)
  try:
    factory = load_factory(args.factory)
  except (ValueError, ImportError) as e:
    print(f"dm-env-rpc-fast serve: {e}", file=sys.stderr)
    return 2
  from dm_env_rpc_fast import server as server_lib
  try:
    running = server_lib.serve(factory, f"{args.host}:{args.port}", insecure=args.insecure,
                               max_streams=args.max_streams,
                               shared_memory=args.shared_memory)
  except (RuntimeError, ValueError) as e:
    print(f"dm-env-rpc-fast serve: {e}", file=sys.stderr)
    return 1
  stop = threading.Event()
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, lambda *_: stop.set())
  print(f"serving {args.factory} on {running.address} "
        f"({'insecure' if args.insecure else 'local credentials'}); Ctrl-C stops",
        file=sys.stderr, flush=True)
  if args.port_file:  # last: whoever waits for this file may rely on everything above
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
      f.write(str(running.port))
    os.replace(tmp, args.port_file)
  while not stop.wait(0.5):
    pass
  running.stop(grace=1.0)
  return 0
