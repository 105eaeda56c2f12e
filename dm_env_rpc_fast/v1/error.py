"""The exception raised when an environment answers a request with an error.

`DmEnvRpcError` is defined in `dm_env_rpc_fast._proto.error`, below the codec,
which raises it; this module is where it is imported from.
"""

# dm_env_rpc's error module has these names too, and its tests use them
# (message_utils_test reads error.status_pb2).
from typing import Iterable  # noqa: F401

from google.protobuf import any_pb2  # noqa: F401
from google.rpc import status_pb2  # noqa: F401

from dm_env_rpc_fast._proto.error import DmEnvRpcError  # noqa: F401
