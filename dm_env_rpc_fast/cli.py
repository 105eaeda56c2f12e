"""The `dm-env-rpc-fast` command (also `python -m dm_env_rpc_fast`).

    dm-env-rpc-fast bench [...]                     the benchmark harness
    dm-env-rpc-fast serve [MODULE:FACTORY] [...]    serve a dm_env.Environment

`dm-env-rpc-fast COMMAND --help` describes each command's options.
"""
import sys
from typing import List, Optional

_COMMANDS = {
    "bench": ("dm_env_rpc_fast.benchmark", "measure the codec and end-to-end steps/s, side by side with dm-env-rpc"),
    "serve": ("dm_env_rpc_fast.server._cli", "serve a dm_env.Environment over dm_env_rpc"),
}


def _usage() -> str:
  lines = ["usage: dm-env-rpc-fast COMMAND [options]", "", "commands:"]
  lines += [f"  {name:<7}{summary}" for name, (_, summary) in _COMMANDS.items()]
  lines += ["", "Run 'dm-env-rpc-fast COMMAND --help' for a command's options."]
  return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(_usage())
    return 0 if argv else 2
  command, rest = argv[0], argv[1:]
  if command in ("-V", "--version"):
    from dm_env_rpc_fast import __version__
    print(f"dm-env-rpc-fast {__version__}")
    return 0
  if command not in _COMMANDS:
    print(f"dm-env-rpc-fast: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
    return 2
  import importlib
  module = importlib.import_module(_COMMANDS[command][0])
  return module.main(rest) or 0
