"""Example environments, written only against `dm_env`, for the server.

- `treasure`: a small grid game, to read (nested observations, bounded and
  discrete actions, properties).
- `large_observation`: observations of any dtype, shape and number, for
  benchmarks (`dm-env-rpc-fast bench` serves it).

Serve one with `dm-env-rpc-fast serve dm_env_rpc_fast.examples.treasure:make_env`.
"""
