"""SpecManager: name <-> UID translation, shape and dtype checks."""
import numpy as np
import pytest

from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import spec_manager
from dm_env_rpc_fast.v1 import tensor_utils

DT = dm_env_rpc_pb2.DataType
TensorSpec = dm_env_rpc_pb2.TensorSpec

SPECS = {
    54: TensorSpec(name="fuzz", shape=[2], dtype=DT.FLOAT),
    55: TensorSpec(name="foo", dtype=DT.INT32),
    56: TensorSpec(name="bar", shape=[-1, 3], dtype=DT.UINT8),
    57: TensorSpec(name="label", dtype=DT.STRING),
}


@pytest.fixture
def manager():
  return spec_manager.SpecManager(SPECS)


def test_lookups(manager):
  assert set(manager.names()) == {"fuzz", "foo", "bar", "label"}
  assert set(manager.uids()) == {54, 55, 56, 57}
  for uid, tensor_spec in SPECS.items():
    assert manager.name_to_uid(tensor_spec.name) == uid
    assert manager.uid_to_name(uid) == tensor_spec.name
    assert manager.uid_to_spec(uid) is tensor_spec
    assert manager.name_to_spec(tensor_spec.name) is tensor_spec
  assert manager.specs_by_uid is SPECS
  assert manager.specs_by_name == {s.name: s for s in SPECS.values()}


def test_unknown_keys_raise_key_error(manager):
  for call, key in [(manager.name_to_uid, "nope"), (manager.uid_to_name, 1),
                    (manager.name_to_spec, "nope"), (manager.uid_to_spec, 1)]:
    with pytest.raises(KeyError):
      call(key)
  with pytest.raises(KeyError):
    manager.pack({"nope": 1})
  with pytest.raises(KeyError):
    manager.unpack({1: tensor_utils.pack_tensor(1)})


def test_duplicate_names_rejected():
  with pytest.raises(ValueError, match="There are duplicate names in the tensor specs."):
    spec_manager.SpecManager({1: TensorSpec(name="a"), 2: TensorSpec(name="a")})


def test_two_variable_dimensions_rejected():
  with pytest.raises(ValueError, match='"v" shape has > 1 variable length dimension. Spec:\n'):
    spec_manager.SpecManager({1: TensorSpec(name="v", shape=[-1, -1])})


def test_empty_specs():
  manager = spec_manager.SpecManager({})
  assert not manager.names() and not manager.uids()
  assert manager.pack({}) == {} and manager.unpack({}) == {}


def test_pack_casts_to_spec_dtype(manager):
  packed = manager.pack({"fuzz": [1, 2], "foo": 3.7, "bar": np.ones((4, 3)), "label": "x"})
  assert set(packed) == {54, 55, 56, 57}
  assert packed[54] == tensor_utils.pack_tensor(np.array([1, 2], np.float32))
  assert packed[55] == tensor_utils.pack_tensor(np.int32(3))
  assert packed[56] == tensor_utils.pack_tensor(np.ones((4, 3), np.uint8))
  assert list(packed[57].strings.array) == ["x"]


def test_unpack_round_trip(manager):
  values = {"fuzz": np.array([1.5, 2.5], np.float32), "foo": np.int32(7),
            "bar": np.arange(6, dtype=np.uint8).reshape(2, 3), "label": "hello"}
  unpacked = manager.unpack(manager.pack(values))
  assert set(unpacked) == set(values)
  for name, value in values.items():
    np.testing.assert_array_equal(unpacked[name], value)
    assert np.asarray(unpacked[name]).dtype == np.asarray(value).dtype


@pytest.mark.parametrize("name,value", [("fuzz", [1, 2, 3]), ("foo", [1]), ("bar", np.ones((2, 4)))])
def test_pack_shape_mismatch(manager, name, value):
  tensor_spec = manager.name_to_spec(name)
  with pytest.raises(ValueError) as info:
    manager.pack({name: value})
  got = np.asarray(value).shape
  assert str(info.value) == (
      f"Received dm_env_rpc tensor {name} with shape {np.asarray(got)} but spec has "
      f"shape {np.asarray(tensor_spec.shape)}.")


def test_unpack_shape_mismatch(manager):
  with pytest.raises(ValueError, match=r"tensor fuzz with shape \[3\] but spec has shape \[2\]"):
    manager.unpack({54: tensor_utils.pack_tensor(np.zeros(3, np.float32))})


def test_unpack_accepts_any_size_in_variable_dimension(manager):
  for rows in (0, 1, 5):
    tensor = tensor_utils.pack_tensor(np.zeros((rows, 3), np.uint8))
    assert manager.unpack({56: tensor})["bar"].shape == (rows, 3)


def test_unpack_dtype_mismatch(manager):
  with pytest.raises(ValueError) as info:
    manager.unpack({54: tensor_utils.pack_tensor(np.zeros(2, np.float64))})
  assert str(info.value) == (
      "Received dm_env_rpc tensor fuzz with dtype float64 but spec has dtype float32.")


def test_unpack_tensor_without_payload(manager):
  with pytest.raises(TypeError, match="Unknown NumPy type None"):
    manager.unpack({55: dm_env_rpc_pb2.Tensor()})
