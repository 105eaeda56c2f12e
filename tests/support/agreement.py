"""The native and pure backends' results compared: the same value, or the same error."""

import numpy as np

from dm_env_rpc_fast.v1.error import DmEnvRpcError


def outcome(call):
  """('ok', result) or ('raises', exception type, details): both backends must
  agree on the type and the text (one error text per error, whatever the backend)."""
  try:
    return ("ok", call())
  except DmEnvRpcError as e:
    return ("raises", DmEnvRpcError, (e.code, e.message))
  except Exception as e:  # pylint: disable=broad-except
    return ("raises", type(e), str(e))


def assert_same_value(a, b, buf=None, where=""):
  assert type(a) is type(b), f"{where}: {type(a)} vs {type(b)}"
  if isinstance(a, np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    assert a.flags.writeable == b.flags.writeable, f"{where}: writeable differs"
    assert a.flags.c_contiguous == b.flags.c_contiguous, f"{where}: contiguity differs"
    if a.dtype == object:
      assert list(a.flat) == list(b.flat), where
    elif a.dtype.kind == "U":
      assert np.array_equal(a, b), where
    else:
      assert a.tobytes() == b.tobytes(), f"{where}: values differ"  # bit-exact, NaNs too
    if buf is not None and a.size:
      wire = np.frombuffer(buf, np.uint8)
      assert np.shares_memory(a, wire) == np.shares_memory(b, wire), f"{where}: views differ"
  elif isinstance(a, np.generic) and not isinstance(a, np.str_):
    assert a.tobytes() == b.tobytes(), f"{where}: {a!r} vs {b!r}"
  elif isinstance(a, dict):
    assert sorted(a) == sorted(b), f"{where}: keys differ"
    assert all(type(k) is int for k in a) and all(type(k) is int for k in b)
    for key in a:
      assert_same_value(a[key], b[key], buf, f"{where}[{key}]")
  elif isinstance(a, (tuple, list)):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b)):
      assert_same_value(x, y, buf, f"{where}[{i}]")
  else:
    assert a == b, f"{where}: {a!r} vs {b!r}"


def assert_agree(native_call, pure_call, buf=None):
  got_native, got_pure = outcome(native_call), outcome(pure_call)
  assert got_native[0] == got_pure[0], f"native {got_native}, pure {got_pure}"
  if got_native[0] == "raises":
    assert got_native[1:] == got_pure[1:], f"native raised {got_native}, pure {got_pure}"
  else:
    assert_same_value(got_native[1], got_pure[1], buf, "result")
