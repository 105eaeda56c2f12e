"""The dm_env_rpc protocol's Python definitions: the package's ground floor.

- `dm_env_rpc_pb2`: the generated message module of `dm_env_rpc/v1/dm_env_rpc.proto`
  (`tools/gen_protos.py` writes it here; it is generated once, since protobuf's
  descriptor pool takes each .proto file once).
- `error`: `DmEnvRpcError`, the exception for an environment's error response.

Nothing here imports the rest of dm_env_rpc_fast, so every layer can build on
it: the codec does, and `dm_env_rpc_fast.v1` serves the same objects under
dm_env_rpc's names (`v1.dm_env_rpc_pb2`, `v1.error`).  Import them from `v1`:
this package is private.
"""
