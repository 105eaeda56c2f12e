"""The codec cases of the benchmarks: dtypes, sizes, data, reference bytes, checks.

Shared by the `dm-env-rpc-fast bench` harness and the pytest-benchmark suites
in the repository's `bench/` directory, so that both measure the same bytes.

Everything here is deterministic: a case always gets the same array (seeded
from its dtype, variant and shape), so two runs measure the same data.

A case is (dtype, variant, size):

- dtype: a numeric numpy dtype name (`DTYPES`);
- variant: "" for float, int8/uint8 and bool; for the varint dtypes (int32,
  int64, uint32, uint64) "full" (uniform over the whole range: negatives of
  signed types are 10-byte varints on the wire) or "small" (0..127: one byte
  each, as counters, indices and discrete actions are);
- size: "scalar", a byte count of array data ("1KB", "64KB", "1MB", "8MB";
  KB = 1024 B), or a shape ("84x84x3").
"""

import functools
import re
import zlib
from typing import Optional, Tuple

import numpy as np

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

Tensor = dm_env_rpc_pb2.Tensor

DTYPES = ("float32", "float64", "int8", "uint8", "int32", "int64", "uint32", "uint64", "bool")
FIXED_WIDTH = ("float32", "float64", "int8", "uint8")
COPIED_FIXED_WIDTH = ("float32", "float64")  # int8/uint8 decode to views either way
VARINT = ("int32", "int64", "uint32", "uint64")

# Payload field of each dtype, and the ones protobuf holds as bytes.
PAYLOAD = {
    "float32": "floats", "float64": "doubles", "int8": "int8s", "uint8": "uint8s",
    "int32": "int32s", "int64": "int64s", "uint32": "uint32s", "uint64": "uint64s",
    "bool": "bools",
}
BYTES_PAYLOADS = ("int8s", "uint8s")

# Every (dtype, variant) with data of its own.
DATA_KINDS = (
    ("float32", ""), ("float64", ""), ("int8", ""), ("uint8", ""),
    ("int32", "full"), ("int32", "small"), ("int64", "full"), ("int64", "small"),
    ("uint32", "full"), ("uint32", "small"), ("uint64", "full"), ("uint64", "small"),
    ("bool", ""),
)

KB, MB = 1 << 10, 1 << 20
# The bandwidth targets and figures are about bulk arrays, from this size up: below it a
# call's fixed cost (~1 us) dominates and bandwidth is not the figure that matters.
BULK_BYTES = 64 * KB

# The sizes the pytest suites run (the harness picks from the same labels).
SIZES = ("scalar", "64B", "1KB", "64KB", "84x84x3", "1MB", "8MB")

_UNITS = {"B": 1, "KB": KB, "MB": MB, "GB": 1 << 30}
_SIZE_RE = re.compile(r"^(\d+)\s*(B|K|KB|KIB|M|MB|MIB|G|GB|GIB)$", re.IGNORECASE)
_SHAPE_RE = re.compile(r"^\d+(x\d+)*$")


def parse_size(text: str) -> str:
  """Normalises a size given on a command line: "scalar", "<n>B|KB|MB|GB" or a shape.

  Args:
    text: e.g. "scalar", "1kb", "64K", "8MiB", "84x84x3" (case-insensitive).

  Returns:
    The canonical label: "scalar", "1KB", "64KB", "8MB", "84x84x3".

  Raises:
    ValueError: the text is none of these.
  """
  text = text.strip()
  if text.lower() == "scalar":
    return "scalar"
  m = _SIZE_RE.match(text)
  if m:
    unit = m.group(2).upper().replace("I", "")
    unit = unit if unit.endswith("B") else unit + "B"
    if int(m.group(1)) == 0:
      raise ValueError(f"size {text!r}: must be more than 0 bytes")
    return f"{int(m.group(1))}{unit}"
  if _SHAPE_RE.match(text.lower()):
    return text.lower()
  raise ValueError(f"size {text!r}: expected 'scalar', a byte count such as 1KB, 64KB, 1MB, "
                   "8MB (KB = 1024 B), or a shape such as 84x84x3")


def parse_kind(text: str) -> Tuple[str, str]:
  """Parses "float32", "int32" (full range), "int32_small", "int64_full" to (dtype, variant)."""
  text = text.strip().lower()
  dtype, _, variant = text.partition("_")
  if dtype not in DTYPES:
    raise ValueError(f"dtype {text!r}: expected one of {', '.join(DTYPES)} "
                     "(varint dtypes also as e.g. int32_small, int32_full)")
  if dtype in VARINT:
    variant = variant or "full"
    if variant not in ("full", "small"):
      raise ValueError(f"dtype {text!r}: the variant of a varint dtype is 'full' or 'small'")
  elif variant:
    raise ValueError(f"dtype {text!r}: only int32/int64/uint32/uint64 have variants")
  return dtype, variant


def kind_label(dtype: str, variant: str) -> str:
  """`float32`, `int32_full`, `int64_small`: the name a (dtype, variant) goes by."""
  return f"{dtype}_{variant}" if variant else dtype


def shape_of(dtype: str, size: str) -> Tuple[int, ...]:
  """The array shape of a size label for a dtype (a byte count becomes a 1-d array)."""
  if size == "scalar":
    return ()
  if _SHAPE_RE.match(size):
    return tuple(int(d) for d in size.split("x"))
  m = _SIZE_RE.match(size)
  if not m:
    raise ValueError(f"unknown size {size!r}")
  nbytes = int(m.group(1)) * _UNITS[m.group(2).upper()]
  return (max(1, nbytes // np.dtype(dtype).itemsize),)


def _seed(*parts) -> int:
  return zlib.crc32("/".join(map(str, parts)).encode())


def make_array(dtype: str, variant: str, shape) -> np.ndarray:
  """The deterministic data of one case: a C-contiguous array (0-d for a scalar)."""
  rng = np.random.default_rng(_seed(dtype, variant, tuple(shape)))
  dt = np.dtype(dtype)
  if dt.kind == "f":
    array = np.asarray(rng.standard_normal(shape)).astype(dt)
  elif dt.kind == "b":
    array = rng.integers(0, 2, shape, dtype=np.uint8).astype(bool)
  elif variant == "small":
    array = rng.integers(0, 128, shape, dtype=dt)
  else:
    info = np.iinfo(dt)
    array = rng.integers(info.min, info.max, shape, dtype=dt, endpoint=True)
  return np.array(array, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)


def reference_message(value) -> dm_env_rpc_pb2.Tensor:
  """The Tensor message of a numeric value, built with protobuf alone (no codec of ours)."""
  array = np.asarray(value)
  tensor = Tensor()
  name = PAYLOAD[array.dtype.name]
  if name in BYTES_PAYLOADS:
    getattr(tensor, name).array = array.tobytes()
  else:
    getattr(tensor, name).array.extend(array.ravel().tolist())
  tensor.shape[:] = array.shape
  return tensor


class Case:
  """One (dtype, variant, size): the value to encode, and protobuf's message and bytes of it.

  Attributes:
    dtype, variant, size: what the case is.
    shape: the array's shape (() for a scalar).
    array: the data, a C-contiguous array (0-d for a scalar).
    value: what encoders get: the array, or a numpy scalar for a scalar case.
    nbytes: bytes of array data (what MB/s figures count).
    message: the Tensor message protobuf builds for it.
    wire: `message.SerializeToString()`: the bytes every encoder must return.
  """

  def __init__(self, dtype: str, variant: str, size: str):
    self.dtype, self.variant, self.size = dtype, variant, size
    self.shape = shape_of(dtype, size)
    self.array = make_array(dtype, variant, self.shape)
    # Scalars are passed as numpy scalars, as users step with them.
    self.value = self.array[()] if self.shape == () else self.array
    self.nbytes = self.array.nbytes
    self.message = reference_message(self.value)
    self.wire = self.message.SerializeToString()

  @property
  def kind(self) -> str:
    return kind_label(self.dtype, self.variant)

  @property
  def label(self) -> str:
    return f"{self.kind}-{self.size}"


# Callers run all implementations of a case back to back, so one cached case at
# a time avoids rebuilding it without holding every 8 MB array in memory.
@functools.lru_cache(maxsize=1)
def get_case(dtype: str, variant: str, size: str) -> Case:
  return Case(dtype, variant, size)


# ---------------------------------------------------------------------------
# Checks: each raises CheckFailed (an AssertionError, so pytest reports it as a
# failed assertion) with a message that says what was wrong.

class CheckFailed(AssertionError):
  """A result is not what the case asks for."""


def _first_difference(got: np.ndarray, want: np.ndarray) -> str:
  flat_got, flat_want = got.ravel(), want.ravel()
  unequal = np.flatnonzero(flat_got != flat_want)
  if not unequal.size:
    return "the elements differ (NaN where a number is due, or the reverse)"
  i = int(unequal[0])
  return (f"{unequal.size} of {flat_want.size} elements differ, the first at flat index {i}: "
          f"{flat_got[i]!r} instead of {flat_want[i]!r}")


def check_array(result, expected: np.ndarray) -> None:
  """The result equals `expected`: type, dtype, shape and every element.

  Args:
    result: what a decoder returned.
    expected: the array it must equal; a 0-d array means a numpy scalar is due.
  """
  if expected.shape == ():
    if not isinstance(result, np.generic):
      raise CheckFailed(f"a scalar decoded to {type(result).__name__}, not a numpy scalar")
    if result.dtype != expected.dtype:
      raise CheckFailed(f"dtype {result.dtype} instead of {expected.dtype}")
    if not np.array_equal(np.asarray(result), expected, equal_nan=expected.dtype.kind == "f"):
      raise CheckFailed(f"value {result!r} instead of {expected[()]!r}")
    return
  if not isinstance(result, np.ndarray):
    raise CheckFailed(f"decoded to {type(result).__name__}, not a numpy array")
  if result.dtype != expected.dtype:
    raise CheckFailed(f"dtype {result.dtype} instead of {expected.dtype}")
  if result.shape != expected.shape:
    raise CheckFailed(f"shape {result.shape} instead of {expected.shape}")
  if not np.array_equal(result, expected, equal_nan=expected.dtype.kind == "f"):
    raise CheckFailed(_first_difference(result, expected))


def check_bytes(got, want: bytes) -> None:
  """The encoded bytes are exactly protobuf's (no diff of megabytes in the message)."""
  if not isinstance(got, bytes):
    raise CheckFailed(f"encoded to {type(got).__name__}, not bytes")
  if got != want:
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    raise CheckFailed(f"bytes differ from protobuf's: {len(got)} bytes instead of {len(want)}, "
                      f"first difference at offset {at}: "
                      f"{got[at:at + 16].hex()} instead of {want[at:at + 16].hex()}")


def check_parsed(message, case: Case) -> None:
  """A parsed Tensor message holds the case (it serialises back to the same bytes)."""
  if not isinstance(message, Tensor):
    raise CheckFailed(f"parsed to {type(message).__name__}, not a Tensor")
  check_bytes(message.SerializeToString(), case.wire)


def check_ownership(result, case: Case, zero_copy: bool) -> None:
  """A copying decode returns a writable copy, a zero-copy one a read-only view of the wire.

  Only float32/float64 arrays: int8/uint8 are views either way, varints and
  scalars are always fresh.
  """
  if case.dtype not in COPIED_FIXED_WIDTH or case.shape == ():
    return
  shares = np.shares_memory(result, np.frombuffer(case.wire, np.uint8))
  if zero_copy and (not shares or result.flags.writeable):
    raise CheckFailed("zero_copy decode did not return a read-only view of the wire bytes")
  if not zero_copy and (shares or not result.flags.writeable):
    raise CheckFailed("copying decode returned a view of the wire bytes, not a writable copy")


def aligned_buffer(nbytes: int, offset: int = 0) -> np.ndarray:
  """A uint8 array of nbytes starting `offset` bytes after a 4096-aligned address."""
  raw = np.empty(nbytes + offset + 4096, np.uint8)
  start = (-raw.ctypes.data) % 4096 + offset
  view = raw[start:start + nbytes]
  assert view.ctypes.data % 4096 == offset
  return view


def size_bytes(size: str, dtype: str = "uint8") -> Optional[int]:
  """Bytes of array data of a size label for a dtype (None for a scalar)."""
  shape = shape_of(dtype, size)
  if shape == ():
    return None
  return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
