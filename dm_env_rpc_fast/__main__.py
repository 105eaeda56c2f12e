"""`python -m dm_env_rpc_fast COMMAND ...`: the same as the `dm-env-rpc-fast` command."""
import sys

from dm_env_rpc_fast.cli import main

if __name__ == "__main__":
  sys.exit(main())
