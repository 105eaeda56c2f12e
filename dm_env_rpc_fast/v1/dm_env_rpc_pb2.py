"""dm_env_rpc's messages under their `dm_env_rpc.v1.dm_env_rpc_pb2` module name.

The generated module lives in `dm_env_rpc_fast._proto` so that the codec, which
sits below this package, can use it too.  This module re-exports every public
name of it: the message classes, enums and `DESCRIPTOR` are the same objects.
"""
from dm_env_rpc_fast._proto.dm_env_rpc_pb2 import *  # noqa: F401,F403
