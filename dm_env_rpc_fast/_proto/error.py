"""The exception raised when an environment answers a request with an error.

Defined here, below the codec, which raises it for an error response;
`dm_env_rpc_fast.v1.error` re-exports it, and the class carries that module's name.
"""

from typing import Iterable

from google.protobuf import any_pb2
from google.rpc import status_pb2


class DmEnvRpcError(Exception):
  """An error reported by the environment, wrapping its google.rpc.Status.

  Attributes:
    code: the google.rpc.Code value (int).
    message: the environment's message (str).
    details: the status details (Any messages).
  """

  # Where users import it from: tracebacks and pickles name v1.error, as they
  # did when the class was defined there.
  __module__ = "dm_env_rpc_fast.v1.error"

  def __init__(self, status_proto: status_pb2.Status):
    super().__init__()
    self._status_proto = status_proto

  @property
  def code(self) -> int:
    return self._status_proto.code

  @property
  def message(self) -> str:
    return self._status_proto.message

  @property
  def details(self) -> Iterable[any_pb2.Any]:
    return self._status_proto.details

  def __str__(self):
    return str(self._status_proto)

  def __repr__(self):
    return f"DmEnvRpcError(code={self.code}, message={self.message})"

  def __reduce__(self):
    # Keep the status through pickling (multiprocessing, concurrent.futures).
    return (DmEnvRpcError, (self._status_proto,))
