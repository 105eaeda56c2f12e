"""dm_env_rpc v1, drop-in: the modules of `dm_env_rpc.v1` under the same names.

Change `from dm_env_rpc.v1 import ...` to `from dm_env_rpc_fast.v1 import ...`;
the step path then runs on `dm_env_rpc_fast.codec`.  See the README's
"Drop-in use" for what differs underneath, and `install_as_dm_env_rpc()` for
code that imports `dm_env_rpc` itself.
"""
