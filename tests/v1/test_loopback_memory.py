"""10,000 steps over loopback gRPC keep a stable resident set and leak no references.

A leak of one small object per step is several MB over the run; the bound is
generous so that allocator noise never trips it.
"""
import gc
import sys
from concurrent import futures

import grpc
import numpy as np
import pytest

from dm_env_rpc_fast import codec
from dm_env_rpc_fast.v1 import connection as dm_connection
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2

STEPS = 10_000
WARMUP = 1_000
RSS_BOUND = 16 << 20

_Req = dm_env_rpc_pb2.EnvironmentRequest
_Resp = dm_env_rpc_pb2.EnvironmentResponse
OBS = np.arange(64 * 64 * 3, dtype=np.float32).reshape(64, 64, 3)  # 48 KiB


def _specs():
  specs = dm_env_rpc_pb2.ActionObservationSpecs()
  specs.observations[1].name = "obs"
  specs.observations[1].dtype = dm_env_rpc_pb2.FLOAT
  specs.observations[1].shape.extend(OBS.shape)
  specs.observations[2].name = "count"
  specs.observations[2].dtype = dm_env_rpc_pb2.INT64
  specs.actions[1].name = "act"
  specs.actions[1].dtype = dm_env_rpc_pb2.INT32
  return specs


def _process(requests, context):
  del context
  steps = 0
  for data in requests:
    request = _Req.FromString(data)
    kind = request.WhichOneof("payload")
    if kind == "step":
      steps += 1
      actions, _ = codec.decode_step_request(data)
      yield codec.encode_step_response(codec.RUNNING, {1: OBS, 2: np.int64(steps + int(actions.get(1, 0)))})
    elif kind == "create_world":
      yield _Resp(create_world=dm_env_rpc_pb2.CreateWorldResponse(world_name="w")).SerializeToString()
    elif kind == "join_world":
      yield _Resp(join_world=dm_env_rpc_pb2.JoinWorldResponse(specs=_specs())).SerializeToString()
    elif kind == "reset":
      yield _Resp(reset=dm_env_rpc_pb2.ResetResponse(specs=_specs())).SerializeToString()
    else:
      response = _Resp()
      getattr(response, kind).SetInParent()
      yield response.SerializeToString()


@pytest.fixture(scope="module")
def address():
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
  server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
      "dm_env_rpc.v1.Environment", {"Process": grpc.stream_stream_rpc_method_handler(_process)}),))
  port = server.add_secure_port("127.0.0.1:0", grpc.local_server_credentials())
  server.start()
  yield f"127.0.0.1:{port}"
  server.stop(grace=None)


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * 4096


def _under_asan() -> bool:
  with open("/proc/self/maps") as f:
    return "asan" in f.read()


@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero_copy"])
def test_ten_thousand_steps_keep_a_stable_rss(address, zero_copy):
  with dm_connection.create_secure_channel_and_connect(address, timeout=30) as conn:
    env, _ = dm_env_adaptor.create_and_join_world(conn, {}, {}, zero_copy=zero_copy)
    env.reset()
    action = {"act": np.int32(1)}
    for _ in range(WARMUP):
      timestep = env.step(action)
    gc.collect()
    before = _rss_bytes()
    objects_before = len(gc.get_objects())
    for _ in range(STEPS):
      timestep = env.step(action)
    gc.collect()
    grown = _rss_bytes() - before
    objects_grown = len(gc.get_objects()) - objects_before
    assert timestep.observation["count"] == WARMUP + STEPS + 1 + 1  # reset's step, +1 per action
    np.testing.assert_array_equal(timestep.observation["obs"], OBS)
    env.close()
  if not _under_asan():  # ASan's quarantine keeps freed memory resident by design
    assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB over {STEPS} steps"
  assert objects_grown < 1000, f"{objects_grown} more tracked objects after {STEPS} steps"


def test_a_zero_copy_observation_releases_its_response_when_dropped(address):
  with dm_connection.create_secure_channel_and_connect(address, timeout=30) as conn:
    env, _ = dm_env_adaptor.create_and_join_world(conn, {}, {}, zero_copy=True)
    env.reset()
    obs = env.step({"act": np.int32(0)}).observation["obs"]
    assert not obs.flags.writeable and not obs.flags.owndata
    owner = obs
    while getattr(owner, "base", None) is not None:
      owner = owner.base
    if isinstance(owner, memoryview):
      owner = owner.obj
    assert isinstance(owner, bytes) and len(owner) > OBS.nbytes  # the whole response
    with_view = sys.getrefcount(owner)
    del obs
    gc.collect()
    assert sys.getrefcount(owner) < with_view, "dropping the view did not release the response"
    env.close()
