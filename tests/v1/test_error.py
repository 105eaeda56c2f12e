"""DmEnvRpcError: the status it wraps, its text forms and pickling."""
import pickle

import pytest
from google.protobuf import any_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from dm_env_rpc_fast.v1 import error


def _status():
  detail = any_pb2.Any()
  detail.Pack(struct_pb2.Value(string_value="why"))
  return status_pb2.Status(code=5, message="no such world", details=[detail])


def test_fields():
  status = _status()
  exception = error.DmEnvRpcError(status)
  assert isinstance(exception, Exception)
  assert exception.code == 5
  assert exception.message == "no such world"
  assert list(exception.details) == list(status.details)
  assert exception.args == ()


def test_text_forms():
  exception = error.DmEnvRpcError(_status())
  assert str(exception) == str(_status())
  assert repr(exception) == "DmEnvRpcError(code=5, message=no such world)"


def test_raise_and_catch():
  with pytest.raises(error.DmEnvRpcError, match="no such world"):
    raise error.DmEnvRpcError(_status())


def test_pickle_round_trip():
  restored = pickle.loads(pickle.dumps(error.DmEnvRpcError(_status())))
  assert type(restored) is error.DmEnvRpcError
  assert (restored.code, restored.message) == (5, "no such world")
  assert list(restored.details) == list(_status().details)


def test_one_class_named_by_v1():
  """The codec raises the class defined below it; v1.error serves that very class."""
  from dm_env_rpc_fast._proto import error as defined
  assert error.DmEnvRpcError is defined.DmEnvRpcError
  assert error.DmEnvRpcError.__module__ == "dm_env_rpc_fast.v1.error"
  assert b"dm_env_rpc_fast.v1.error" in pickle.dumps(error.DmEnvRpcError(_status()))
