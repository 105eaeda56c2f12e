"""Hypothesis strategies for the codec tests: numeric arrays in every memory layout, uids
and the values a step message carries."""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.codec_reference import U64, reference_tensor

NUMERIC = [np.dtype(t) for t in (np.float32, np.float64, np.int8, np.int32, np.int64,
                                 np.uint8, np.uint32, np.uint64, np.bool_)]
F32_QUIET = np.uint32(0x00400000)


def quiet_float32_nans(array: np.ndarray) -> np.ndarray:
  """Sets the quiet bit of float32 NaNs: upstream's tolist() path quiets signalling NaNs."""
  if array.dtype != np.float32:
    return array
  bits = array.view(np.uint32).copy()
  bits[np.isnan(array)] |= F32_QUIET
  return bits.view(np.float32)


LAYOUTS = ["c", "fortran", "strided", "reversed", "transposed", "bigendian", "unaligned",
           "broadcast"]


def with_layout(array: np.ndarray, layout: str) -> np.ndarray:
  """`array` (or an array made from it) in a given memory layout."""
  if array.ndim == 0 and layout not in ("bigendian", "unaligned"):
    return array
  if array.size > 2000 and layout == "broadcast":
    return array
  if layout == "fortran":
    return np.asfortranarray(array)
  if layout == "strided":
    base = np.zeros((array.shape[0] * 2,) + array.shape[1:], array.dtype)
    base[::2] = array
    return base[::2]
  if layout == "reversed":
    return array[::-1]
  if layout == "transposed":
    return array.T
  if layout == "bigendian":
    return array.astype(array.dtype.newbyteorder(">"))
  if layout == "unaligned":  # (keeps the byte order, drops the strides)
    raw = np.zeros(array.nbytes + 1, np.uint8)[1:]
    out = raw.view(array.dtype).reshape(array.shape)
    out[...] = array
    return out
  if layout == "broadcast":  # zero strides along a new leading axis
    return np.broadcast_to(array, (2,) + array.shape)
  return array


@st.composite
def numeric_arrays(draw, dtypes=NUMERIC, max_side=6):
  dtype = draw(st.sampled_from(dtypes))
  shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=max_side))
  array = draw(hnp.arrays(dtype, shape))
  array = quiet_float32_nans(array)
  for layout in draw(st.lists(st.sampled_from(LAYOUTS), min_size=1, max_size=2)):
    array = with_layout(array, layout)  # e.g. big-endian AND unaligned AND strided
  return array



UIDS = st.one_of(st.sampled_from([0, 1, 127, 128, 2**32, 2**63, U64 - 1, U64]),
                 st.integers(0, U64))
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=6)


@st.composite
def action_values(draw):
  """(value given to the codec, the Tensor message protobuf would carry)."""
  choice = draw(st.sampled_from(["array", "scalar", "python", "strings", "message", "empty"]))
  if choice == "array":
    value = draw(numeric_arrays(max_side=4))
  elif choice == "scalar":
    value = draw(numeric_arrays(max_side=1)).reshape(-1)[:1]
    value = value.reshape(())[()] if value.size else np.float32(0.5)
  elif choice == "python":
    value = draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
                           st.booleans(), st.lists(st.integers(-5, 5), max_size=4)))
  elif choice == "strings":
    value = np.array(draw(st.lists(TEXT, max_size=4)), dtype=str)
  elif choice == "message":
    return reference_tensor(draw(numeric_arrays(max_side=3))), None
  else:
    return pb.Tensor(), None
  return value, reference_tensor(value)
