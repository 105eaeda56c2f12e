"""dm_env_rpc_fast: a drop-in, fast replacement for the dm-env-rpc package.

`dm_env_rpc_fast.codec` moves tensors between protobuf wire bytes and numpy
arrays, on a native backend where the extension is built and a numpy one
elsewhere.  `dm_env_rpc_fast.v1` mirrors `dm_env_rpc.v1`;
`install_as_dm_env_rpc()` serves it under the `dm_env_rpc` names to code you cannot edit.
"""

__version__ = "0.1.0"


from dm_env_rpc_fast._alias import install_as_dm_env_rpc  # noqa: E402

__all__ = ["__version__", "install_as_dm_env_rpc"]
