"""Views of the wire bytes: read-only, sharing memory, keeping the buffer alive; copies are not."""

import array as pyarray
import gc
import weakref

import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2 as pb
from support.codec_reference import f32field, f64field, lfield, tensor_bytes


class OwnedBuffer(bytearray):
  """A bytearray that can be weakly referenced, to watch its lifetime."""


def wire(buf) -> np.ndarray:
  return np.frombuffer(buf, np.uint8)


FLOATS = np.array([1.5, -0.0, np.inf, 3.25, 1e-30, -7.0], np.float32)
DOUBLES = FLOATS.astype(np.float64) * 1e200


def float_tensor(kind: str, shape=(2, 3)) -> bytes:
  values = FLOATS if kind == "floats" else DOUBLES
  return tensor_bytes(kind, values, list(shape))


@pytest.mark.parametrize("kind", ["floats", "doubles"])
@pytest.mark.parametrize("make", [bytes, bytearray, OwnedBuffer,
                                  lambda b: np.frombuffer(b, np.uint8).copy()],
                         ids=["bytes", "bytearray", "subclass", "ndarray"])
def test_zero_copy_floats_are_read_only_views(codec, kind, make):
  buf = make(float_tensor(kind))
  out = codec.decode_tensor(buf, zero_copy=True)
  values = FLOATS if kind == "floats" else DOUBLES
  assert np.array_equal(out, values.reshape(2, 3))
  assert not out.flags.writeable
  assert np.shares_memory(out, wire(buf))
  with pytest.raises(ValueError):
    out[0, 0] = 1


@pytest.mark.parametrize("kind", ["floats", "doubles"])
def test_zero_copy_views_may_be_unaligned(codec, kind):
  raw = float_tensor(kind)
  for pad in range(1, 9):
    buf = bytearray(b"\x00" * pad + raw)
    view = memoryview(buf)[pad:]
    out = codec.decode_tensor(view, zero_copy=True)
    assert np.shares_memory(out, wire(buf))
    assert np.array_equal(out, (FLOATS if kind == "floats" else DOUBLES).reshape(2, 3))


@pytest.mark.parametrize("kind", ["floats", "doubles"])
@pytest.mark.parametrize("make", [bytes, bytearray, OwnedBuffer], ids=["bytes", "bytearray",
                                                                        "subclass"])
def test_copies_are_writable_and_private(codec, kind, make):
  buf = make(float_tensor(kind))
  out = codec.decode_tensor(buf, zero_copy=False)
  assert out.flags.writeable and out.flags.c_contiguous
  assert not np.shares_memory(out, wire(buf))
  out[...] = 0
  assert codec.decode_tensor(buf, zero_copy=False).any()  # the wire bytes are untouched
  default = codec.decode_tensor(buf)
  assert default.flags.writeable and not np.shares_memory(default, wire(buf))


@pytest.mark.parametrize("kind", ["int8s", "uint8s"])
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_int8_results_are_always_views(codec, kind, zero_copy):
  buf = OwnedBuffer(tensor_bytes(kind, [1, 2, 3, 4, 5, 6], [3, 2]))
  out = codec.decode_tensor(buf, zero_copy=zero_copy)
  assert np.shares_memory(out, wire(buf))
  assert not out.flags.writeable
  assert out.tolist() == [[1, 2], [3, 4], [5, 6]]


@pytest.mark.parametrize("kind", ["floats", "doubles", "int8s", "uint8s"])
def test_views_keep_the_buffer_alive(codec, kind):
  raw = tensor_bytes(kind, [1, 2, 3, 4, 5, 6, 7, 8], [8])
  buf = OwnedBuffer(raw)
  alive = weakref.ref(buf)
  out = codec.decode_tensor(buf, zero_copy=True)
  del buf
  gc.collect()
  assert alive() is not None, "the buffer died while a view of it is alive"
  np.frombuffer(bytearray(len(raw) * 4), np.uint8)[:] = 0xAB  # churn the allocator
  assert out.tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
  del out
  gc.collect()
  assert alive() is None, "the buffer outlived every view of it (leaked reference)"


def test_views_keep_a_memoryview_source_alive(codec):
  buf = OwnedBuffer(float_tensor("doubles"))
  alive = weakref.ref(buf)
  out = codec.decode_tensor(memoryview(buf)[0:], zero_copy=True)
  del buf
  gc.collect()
  assert alive() is not None
  assert np.array_equal(out, DOUBLES.reshape(2, 3))
  del out
  gc.collect()
  assert alive() is None


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_copies_and_varint_kinds_do_not_hold_the_buffer(codec, zero_copy):
  for kind in ("int32s", "int64s", "uint32s", "uint64s", "bools"):
    buf = OwnedBuffer(tensor_bytes(kind, [1, 0, 1], [3]))
    alive = weakref.ref(buf)
    out = codec.decode_tensor(buf, zero_copy=zero_copy)
    assert out.flags.writeable and not np.shares_memory(out, wire(buf))
    del buf
    gc.collect()
    assert alive() is None, f"{kind}: a fresh array still references the buffer"
    assert out.tolist() == [1, 0, 1]
  buf = OwnedBuffer(float_tensor("floats"))
  alive = weakref.ref(buf)
  out = codec.decode_tensor(buf, zero_copy=False)
  del buf
  gc.collect()
  assert alive() is None, "a copied float array still references the buffer"


def test_other_buffer_exporters(codec):
  """array.array: neither bytes nor bytearray, exports through the buffer protocol only."""
  source = pyarray.array("B", float_tensor("floats"))
  out = codec.decode_tensor(source, zero_copy=True)
  assert np.array_equal(out, FLOATS.reshape(2, 3)) and not out.flags.writeable
  assert np.shares_memory(out, wire(source))
  alive = weakref.ref(source)
  del source
  gc.collect()
  assert np.array_equal(out, FLOATS.reshape(2, 3))
  del out
  gc.collect()
  assert alive() is None


@pytest.mark.parametrize("kind,pieces", [
    ("floats", [lfield(1, FLOATS[:2].tobytes()), lfield(1, FLOATS[2:].tobytes())]),
    ("floats", [f32field(1, v) for v in FLOATS]),
    ("doubles", [f64field(1, v) for v in DOUBLES[:3]] + [lfield(1, DOUBLES[3:].tobytes())]),
])
def test_split_or_unpacked_payloads_are_read_only_copies_under_zero_copy(codec, kind, pieces):
  field = 1 if kind == "floats" else 2
  buf = OwnedBuffer(lfield(field, b"".join(pieces)) + lfield(15, b"\x02\x03"))
  expected = (FLOATS if kind == "floats" else DOUBLES).reshape(2, 3)
  out = codec.decode_tensor(buf, zero_copy=True)
  assert np.array_equal(out, expected) and not out.flags.writeable
  out = codec.decode_tensor(buf, zero_copy=False)
  assert np.array_equal(out, expected) and out.flags.writeable
  assert not np.shares_memory(out, wire(buf))


def test_merged_payload_messages_under_zero_copy(codec):
  """floats{..} floats{..}: the runs concatenate (one message on the wire after merging)."""
  buf = (lfield(1, lfield(1, FLOATS[:3].tobytes())) + lfield(1, lfield(1, FLOATS[3:].tobytes())) +
         lfield(15, b"\x06"))
  assert np.array_equal(pb.Tensor.FromString(buf).floats.array, FLOATS)
  for zero_copy in (False, True):
    out = codec.decode_tensor(buf, zero_copy=zero_copy)
    assert np.array_equal(out, FLOATS) and out.flags.writeable == (not zero_copy)


@pytest.mark.parametrize("kind", ["floats", "doubles", "int8s", "uint8s"])
def test_empty_and_broadcast_results_under_zero_copy(codec, kind):
  empty = codec.decode_tensor(tensor_bytes(kind, [], [0, 4]), zero_copy=True)
  assert empty.shape == (0, 4) and not empty.flags.writeable
  filled = codec.decode_tensor(tensor_bytes(kind, [3], [2, 2]), zero_copy=True)
  assert filled.flags.writeable and filled.flags.owndata and (filled == 3).all()
  scalar = codec.decode_tensor(tensor_bytes(kind, [3]), zero_copy=True)
  assert isinstance(scalar, np.generic) and scalar == 3


def test_zero_copy_results_survive_the_source_being_mutated_only_as_views(codec):
  """A view sees later writes to a mutable source; a copy does not."""
  buf = bytearray(float_tensor("floats"))
  view = codec.decode_tensor(buf, zero_copy=True)
  copy = codec.decode_tensor(buf, zero_copy=False)
  offset = bytes(buf).index(FLOATS.tobytes())
  buf[offset:offset + 4] = np.float32(42.0).tobytes()
  assert view[0, 0] == 42.0
  assert copy[0, 0] == 1.5


@pytest.mark.parametrize("which", ["request", "response"])
def test_step_message_views(codec, which):
  """Map values follow the tensor rules: views share the message buffer and keep it alive."""
  values = {1: FLOATS.reshape(2, 3), 2: DOUBLES, 3: np.arange(5, dtype=np.int8),
            4: np.arange(3, dtype=np.int32)}
  if which == "request":
    raw = codec.encode_step_request(values, [1])
    decode = lambda buf, zc: codec.decode_step_request(buf, zero_copy=zc)[0]
  else:
    raw = codec.encode_step_response(1, values)
    decode = lambda buf, zc: codec.decode_step_response(buf, zero_copy=zc)[1]
  buf = OwnedBuffer(raw)
  copies = decode(buf, False)
  assert copies[1].flags.writeable and not np.shares_memory(copies[1], wire(buf))
  assert not copies[3].flags.writeable and np.shares_memory(copies[3], wire(buf))
  views = decode(buf, True)
  for key in (1, 2, 3):
    assert np.shares_memory(views[key], wire(buf)) and not views[key].flags.writeable
  assert views[4].flags.writeable and not np.shares_memory(views[4], wire(buf))
  alive = weakref.ref(buf)
  del buf, copies
  gc.collect()
  assert alive() is not None
  assert np.array_equal(views[1], FLOATS.reshape(2, 3)) and np.array_equal(views[2], DOUBLES)
  del views
  gc.collect()
  assert alive() is None
