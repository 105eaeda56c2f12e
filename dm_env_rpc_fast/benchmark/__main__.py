"""`python -m dm_env_rpc_fast.benchmark`: the same as `dm-env-rpc-fast bench`."""
import sys

from dm_env_rpc_fast.benchmark import main

if __name__ == "__main__":
  sys.exit(main())
