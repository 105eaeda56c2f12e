"""The cases, data and baselines of the codec benchmarks (imported by the test modules).

Everything here is deterministic: the same case always gets the same array
(seeded from its name), so two runs measure the same bytes.

Implementations measured side by side in one run:

- ``native`` / ``pure``: the two codec backends, imported directly so that both
  run in the same process (skipped, with the reason, when one does not import);
- ``upstream``: the protobuf path as dm-env-rpc takes it (element by element
  through Python lists and ``np.fromiter``), written here from its description;
- ``protobuf``: protobuf alone, on a message that is already built;
- ``memcpy``: ``np.copyto`` of the same number of bytes between preallocated,
  page-aligned buffers: the bandwidth ceiling for anything that moves the bytes.
"""

import functools
import importlib
import resource
import zlib

import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

# ---------------------------------------------------------------------------
# Implementations.

BACKENDS = ("native", "pure")
BASELINES = ("upstream", "protobuf")
IMPLS = BACKENDS + BASELINES

_BACKEND_MODULES = {
    "native": "dm_env_rpc_fast.codec._native_backend",
    "pure": "dm_env_rpc_fast.codec._pure",
}


@functools.lru_cache(maxsize=None)
def backend(name):
  """(module, None) for a codec backend, or (None, why it did not import)."""
  try:
    return importlib.import_module(_BACKEND_MODULES[name]), None
  except ImportError as e:
    return None, f"{type(e).__name__}: {e}"


def require_backend(name):
  """The backend module, or skip the test saying why it is missing."""
  module, why = backend(name)
  if module is None:
    pytest.skip(f"backend {name!r} unavailable ({why})")
  return module


Tensor = dm_env_rpc_pb2.Tensor

# Payload field of each dtype, and whether protobuf holds it as bytes.
PAYLOAD = {
    "float32": "floats", "float64": "doubles", "int8": "int8s", "uint8": "uint8s",
    "int32": "int32s", "int64": "int64s", "uint32": "uint32s", "uint64": "uint64s",
    "bool": "bools",
}
BYTES_PAYLOADS = ("int8s", "uint8s")


def upstream_message(value):
  """A Tensor message built the way dm-env-rpc's pack_tensor builds it."""
  array = np.asarray(value)
  tensor = Tensor()
  name = PAYLOAD[array.dtype.name]
  if name in BYTES_PAYLOADS:
    getattr(tensor, name).array = array.tobytes()
  else:
    getattr(tensor, name).array.extend(array.ravel().tolist())
  tensor.shape[:] = array.shape
  return tensor


def upstream_encode(value):
  """dm-env-rpc's encode: Python lists into the message, then serialise."""
  return upstream_message(value).SerializeToString()


_DTYPE_OF_PAYLOAD = {name: np.dtype(dtype) for dtype, name in PAYLOAD.items()}


def upstream_decode(buf):
  """dm-env-rpc's decode: parse, then np.fromiter (np.frombuffer for bytes)."""
  tensor = Tensor.FromString(buf)
  name = tensor.WhichOneof("payload")
  payload = getattr(tensor, name).array
  dtype = _DTYPE_OF_PAYLOAD[name]
  if name in BYTES_PAYLOADS:
    flat = np.frombuffer(payload, dtype)
  else:
    flat = np.fromiter(payload, dtype, len(payload))
  shape = list(tensor.shape)
  if not shape:
    return flat[0]
  return flat.reshape(shape)


def protobuf_decode(buf):
  # A fresh message per call: re-parsing into one message would grow its upb
  # arena on every call (Clear does not free it), which is not what users see.
  return Tensor.FromString(buf)


# ---------------------------------------------------------------------------
# Data.

# (dtype, variant).  Varint kinds get two kinds of data, both realistic:
# "full" = uniform over the whole range (negatives of signed types are 10-byte
# varints on the wire), "small" = 0..127 (one byte each: counters, indices,
# discrete actions).
DATA_KINDS = (
    ("float32", ""), ("float64", ""), ("int8", ""), ("uint8", ""),
    ("int32", "full"), ("int32", "small"), ("int64", "full"), ("int64", "small"),
    ("uint32", "full"), ("uint32", "small"), ("uint64", "full"), ("uint64", "small"),
    ("bool", ""),
)
FIXED_WIDTH = ("float32", "float64", "int8", "uint8")
COPIED_FIXED_WIDTH = ("float32", "float64")  # int8/uint8 decode to views either way
VARINT = ("int32", "int64", "uint32", "uint64")

KB, MB = 1 << 10, 1 << 20
# Size label -> bytes of array data (None: a fixed shape, or a scalar).
SIZES = {"scalar": None, "1KB": KB, "64KB": 64 * KB, "84x84x3": None, "1MB": MB, "8MB": 8 * MB}


def kind_label(dtype, variant):
  return f"{dtype}_{variant}" if variant else dtype


def shape_of(dtype, size):
  if size == "scalar":
    return ()
  if size == "84x84x3":
    return (84, 84, 3)
  return (SIZES[size] // np.dtype(dtype).itemsize,)


def _seed(*parts):
  return zlib.crc32("/".join(map(str, parts)).encode())


def make_array(dtype, variant, shape):
  """The deterministic test data of one case: a C-contiguous array (or 0-d)."""
  rng = np.random.default_rng(_seed(dtype, variant, shape))
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


class Case:
  """One (dtype, variant, size): the value to encode and protobuf's bytes for it."""

  def __init__(self, dtype, variant, size):
    self.dtype, self.variant, self.size = dtype, variant, size
    self.shape = shape_of(dtype, size)
    array = make_array(dtype, variant, self.shape)
    # Scalars are passed as numpy scalars, as users step with them.
    self.value = array[()] if self.shape == () else array
    self.array = array
    self.nbytes = array.nbytes
    self.message = upstream_message(self.value)
    self.wire = self.message.SerializeToString()  # the reference bytes

  @property
  def label(self):
    return f"{kind_label(self.dtype, self.variant)}-{self.size}"


# The tests run each case's implementations back to back, so one cached case
# at a time avoids rebuilding it without holding every 8 MB array in memory.
@functools.lru_cache(maxsize=1)
def get_case(dtype, variant, size):
  return Case(dtype, variant, size)


def check_decoded(result, case):
  """Asserts that a decode result is the case's array, dtype and shape included."""
  if case.shape == ():
    assert isinstance(result, np.generic), type(result)
    assert result.dtype == case.array.dtype
    assert result == case.value
  else:
    assert isinstance(result, np.ndarray), type(result)
    assert result.dtype == case.array.dtype
    assert result.shape == case.shape
    assert np.array_equal(result, case.array)


def assert_same_bytes(got, want):
  # Not a plain ==: pytest's diff of two 8 MB byte strings is unreadable.
  assert isinstance(got, bytes), type(got)
  if got != want:
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    pytest.fail(f"encoded bytes differ from protobuf's: lengths {len(got)} vs {len(want)}, "
                f"first difference at offset {at}: "
                f"{got[at:at + 16].hex()} vs {want[at:at + 16].hex()}")


def check_parsed(message, case):
  """Asserts that a parsed Tensor message holds the case's array."""
  name = PAYLOAD[case.dtype]
  payload = getattr(message, name).array
  if name in BYTES_PAYLOADS:
    flat = np.frombuffer(payload, case.array.dtype)
  else:
    flat = np.fromiter(payload, case.array.dtype, len(payload))
  assert list(message.shape) == list(case.shape)
  assert np.array_equal(flat, case.array.ravel())


def aligned_buffer(nbytes, offset):
  """A uint8 array of nbytes starting `offset` bytes after a 4096-aligned address."""
  raw = np.empty(nbytes + offset + 4096, np.uint8)
  start = (-raw.ctypes.data) % 4096 + offset
  view = raw[start:start + nbytes]
  assert view.ctypes.data % 4096 == offset
  return view


def record(benchmark, **info):
  """Names the benchmark's group and stores what summarise.py needs to read it back.

  `correct` starts False and the test sets it True once its result checks out:
  a timing whose result was wrong still lands in the JSON (the check runs after
  the timing), and summarise.py must not credit it.
  """
  benchmark.group = info.pop("group")
  benchmark.extra_info.update(info, correct=False)


def count_faults(benchmark, fn, *args, calls=3, **kwargs):
  """Records the minor page faults per call of fn, in steady state.

  Warmup and steady sizes should make this 0 for every case (malloc reusing
  mapped memory); where it is not, the time includes first-touch page faults,
  which run at ~1 GB/s on these VMs, and the summary shows it.  One call first,
  uncounted: the result checks in between may have moved the heap around.
  """
  fn(*args, **kwargs)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(calls):
    fn(*args, **kwargs)
  after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  benchmark.extra_info["faults_per_call"] = (after - before) / calls


def checked(benchmark):
  """Marks the benchmark's result as verified (call after the last assertion)."""
  benchmark.extra_info["correct"] = True
