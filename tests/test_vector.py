"""dm_env_rpc_fast.vector: N worlds stepped together from one thread.

Most tests serve `CountingEnv` from servers in this process, over the
transport Connection picks by default (the same-host shared-memory channel
where it is offered) and over gRPC alone; the fault tests kill servers in
other processes.  Every batched result is compared with what one
`DmEnvAdaptor` per world gives for the same actions.
"""
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import dm_env
from dm_env import specs
import numpy as np
import pytest

import dm_env_rpc_fast
from dm_env_rpc_fast import server
from dm_env_rpc_fast import vector
from dm_env_rpc_fast.v1 import connection
from dm_env_rpc_fast.v1 import dm_env_adaptor
from dm_env_rpc_fast.v1 import dm_env_rpc_pb2
from dm_env_rpc_fast.v1 import error
from support import interop_world

PACKAGE_PARENT = str(pathlib.Path(dm_env_rpc_fast.__file__).resolve().parent.parent)
TRANSPORTS = ["grpc", "auto"]


class CountingEnv(dm_env.Environment):
  """Observations that depend on the world's seed, the step and the last action.

  Episodes last `episode_length` steps after their first, so worlds with
  different lengths end at different times.  An action of 99 makes step()
  raise; `delay` seconds of sleep per step make a world slow.
  """

  def __init__(self, seed=0, episode_length=3, delay=0.0, width=3):
    self._seed, self._length, self._delay, self._width = int(seed), int(episode_length), float(delay), int(width)
    self._t = 0

  def _observation(self, action):
    t, seed = self._t, self._seed
    return {
        "image": (np.arange(2 * self._width, dtype=np.float32).reshape(2, self._width)
                  + np.float32(100 * seed + t + 0.5 * action)),
        "count": np.int32(t * 10 + seed),
        "inner": {"bytes": ((np.arange(4) + t + seed) % 256).astype(np.uint8)},
    }

  def reset(self):
    self._t = 0
    return dm_env.restart(self._observation(0))

  def step(self, action):
    if self._delay:
      time.sleep(self._delay)
    move = int(action["move"])
    if move == 99:
      raise RuntimeError("the environment was asked to fail")
    self._t += 1
    reward = np.float32(move + 0.25 * self._seed)
    if self._t >= self._length:
      return dm_env.termination(reward, self._observation(move))
    return dm_env.transition(reward, self._observation(move), discount=np.float64(0.5))

  def observation_spec(self):
    return {"image": specs.Array((2, self._width), np.float32, name="image"),
            "count": specs.Array((), np.int32, name="count"),
            "inner": {"bytes": specs.Array((4,), np.uint8, name="bytes")}}

  def action_spec(self):
    return {"move": specs.BoundedArray((), np.int32, -100, 100, name="move")}

  def reward_spec(self):
    return specs.Array((), np.float32, name="reward")


def make_env(**settings):
  return CountingEnv(**settings)


@pytest.fixture
def servers():
  """servers(n, **serve_kwargs) -> n running in-process servers (stopped after the test)."""
  running = []

  def start(n, make=make_env, **kwargs):
    for _ in range(n):
      running.append(server.serve(make, "127.0.0.1:0", **kwargs))
    return [r.address for r in running[-n:]]

  yield start
  for r in running:
    r.stop()


def _flat(observation, prefix=""):
  out = {}
  for key, value in observation.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


class Reference:
  """One DmEnvAdaptor per world, driven with the vector's restart rule, for comparison."""

  def __init__(self, addresses, settings, transport):
    self.conns = [connection.create_secure_channel_and_connect(a, transport=transport)
                  for a in addresses]
    self.envs = [dm_env_adaptor.create_and_join_world(c, s, {})[0]
                 for c, s in zip(self.conns, settings)]

  def reset(self):
    return [env.reset() for env in self.envs]

  def step(self, moves, ids=None):
    ids = range(len(self.envs)) if ids is None else ids
    # Next-step autoreset: a step after LAST is simply sent; the server starts the new episode.
    return [self.envs[i].step({"move": np.int32(m)}) for i, m in zip(ids, moves)]

  def close(self):
    for env, conn in zip(self.envs, self.conns):
      env.close()
      conn.close()


def assert_batch_matches(batch, timesteps):
  """A batched TimeStep against the per-world TimeSteps of DmEnvAdaptor, row by row."""
  n = len(timesteps)
  assert batch.step_type.shape == (n,) and batch.step_type.dtype == np.int32
  for k, ts in enumerate(timesteps):
    assert batch.step_type[k] == int(ts.step_type), (k, batch.step_type, ts.step_type)
    want_reward = 0.0 if ts.first() else ts.reward
    assert batch.reward[k] == want_reward, (k, batch.reward, ts.reward)
    assert batch.discount[k] == ts.discount, (k, batch.discount, ts.discount)
    got, want = _flat(batch.observation), _flat(ts.observation)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
      assert got[name].shape == (n,) + np.shape(value), name
      assert got[name].dtype == np.asarray(value).dtype, name
      np.testing.assert_array_equal(got[name][k], value, err_msg=f"{name} row {k}")


def settings_for(n, **extra):
  return [dict({"seed": i + 1, "episode_length": 2 + i}, **extra) for i in range(n)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_step_wait_matches_one_adaptor_per_world(servers, transport):
  addresses = servers(3)
  settings = settings_for(3)
  ref = Reference(addresses, settings, transport)
  envs = vector.create_and_join_world(addresses, settings, {}, transport=transport)
  try:
    assert envs.num_envs == 3
    assert envs.reward_spec().dtype == np.float32
    first = envs.reset()
    assert_batch_matches(first, ref.reset())
    assert list(first.step_type) == [0, 0, 0]
    seen = set()
    for step in range(9):
      moves = np.array([step, -step, 2 * step], np.int64)  # cast to int32 by the spec
      batch = envs.step({"move": moves})
      assert_batch_matches(batch, ref.step(moves))
      seen.update(int(t) for t in batch.step_type)
    assert seen == {0, 1, 2}  # episodes ended and restarted on their own schedules
    assert batch.reward.dtype == np.float32 and batch.discount.dtype == np.float64
  finally:
    envs.close()
    ref.close()


def test_one_settings_mapping_for_all_and_nested_flag(servers):
  addresses = servers(2)
  with vector.create_and_join_world(addresses, {"seed": 5}, {}, nested_tensors=False) as envs:
    batch = envs.reset()
    assert sorted(batch.observation) == ["count", "image", "inner.bytes"]
    np.testing.assert_array_equal(batch.observation["count"], [5, 5])


def test_connections_made_by_the_user_stay_open_and_worlds_go(servers):
  addresses = servers(2)
  conns = [connection.create_secure_channel_and_connect(a) for a in addresses]
  try:
    envs = vector.create_and_join_world(conns, {"seed": 1}, {})
    worlds = [world for _, world in envs._owned]  # pylint: disable=protected-access
    envs.reset()
    envs.close()
    envs.close()  # idempotent
    for conn, world in zip(conns, worlds):
      # The world was left and destroyed; the connection still works.
      with pytest.raises(error.DmEnvRpcError):
        conn.send(dm_env_rpc_pb2.JoinWorldRequest(world_name=world))
      conn.send(dm_env_rpc_pb2.CreateWorldRequest())
    with pytest.raises(ValueError, match="closed"):
      envs.step({"move": np.zeros(2, np.int32)})
  finally:
    for conn in conns:
      conn.close()


def test_close_closes_the_connections_it_opened(servers):
  addresses = servers(2)
  envs = vector.create_and_join_world(addresses, {}, {})
  envs.reset()
  envs.step_async({"move": np.zeros(2, np.int32)})  # in flight at close: collected first
  conns = list(envs._connections)  # pylint: disable=protected-access
  envs.close()
  for conn in conns:
    with pytest.raises(ValueError, match="closed"):
      conn.send(dm_env_rpc_pb2.ResetRequest())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_send_recv_returns_answered_envs_with_ids(servers, transport):
  addresses = servers(4)
  settings = settings_for(4)
  ref = Reference(addresses, settings, transport)
  envs = vector.create_and_join_world(addresses, settings, {}, transport=transport, batch_size=2)
  try:
    ref.reset()
    envs.async_reset()
    got = set()
    for _ in range(2):
      batch, ids = envs.recv()
      assert len(ids) == 2 and list(ids) == sorted(ids) and ids.dtype == np.int32
      assert list(batch.step_type) == [0, 0]
      got.update(int(i) for i in ids)
    assert got == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="nothing in flight"):
      envs.recv()
    # Step a subset; rows follow env_ids.
    envs.send({"move": np.array([7, 8, 9], np.int32)}, env_ids=[3, 0, 2])
    want = dict(zip([3, 0, 2], ref.step([7, 8, 9], ids=[3, 0, 2])))
    batch, ids = envs.recv()
    batch2, ids2 = envs.recv()  # the one left over
    assert len(ids) == 2 and len(ids2) == 1
    assert_batch_matches(batch, [want[int(i)] for i in ids])
    assert_batch_matches(batch2, [want[int(i)] for i in ids2])
    with pytest.raises(ValueError, match="distinct"):
      envs.send({"move": np.zeros(2, np.int32)}, env_ids=[1, 1])
    envs.send({"move": np.zeros(1, np.int32)}, env_ids=[1])
    with pytest.raises(ValueError, match=r"environments \[1\] have a step in flight"):
      envs.send({"move": np.zeros(2, np.int32)}, env_ids=[0, 1])
    assert list(envs.recv()[1]) == [1]
  finally:
    envs.close()
    ref.close()


def test_recv_returns_the_fast_environments_first_over_shared_memory(servers):
  addresses = servers(3)
  settings = [{"delay": 0.0}, {"delay": 0.0}, {"delay": 0.0}]
  envs = vector.create_and_join_world(addresses, settings, {}, batch_size=2)
  try:
    envs.reset()
    if any(c.transport != "shm" for c in envs._connections):  # pylint: disable=protected-access
      pytest.skip("no shared-memory channel here: gRPC answers are read in the order sent")
  finally:
    envs.close()
  settings[0]["delay"] = 3.0  # far beyond any scheduling delay on a loaded machine
  with vector.create_and_join_world(addresses, settings, {}, batch_size=2) as envs:
    envs.reset()
    envs.send({"move": np.zeros(3, np.int32)})
    start = time.monotonic()
    _, ids = envs.recv()
    assert list(ids) == [1, 2] and time.monotonic() - start < 2.0  # not waiting for world 0
    _, ids = envs.recv()
    assert list(ids) == [0]


def test_copy_false_reuses_arrays_and_copy_true_does_not(servers):
  addresses = servers(2)
  for copy in (True, False):
    with vector.create_and_join_world(addresses, {"seed": 1}, {}, copy=copy) as envs:
      a = envs.reset()
      b = envs.step({"move": np.ones(2, np.int32)})
      assert (a.observation["image"] is b.observation["image"]) == (not copy)
      if copy:
        assert a.observation["count"][0] == 1 and b.observation["count"][0] == 11


def test_autoreset_reset_sends_reset_requests(servers):
  addresses = servers(2)
  with vector.create_and_join_world(addresses, {"episode_length": 1}, {},
                                    autoreset="reset") as envs:
    envs.reset()
    types = [list(envs.step({"move": np.zeros(2, np.int32)}).step_type) for _ in range(4)]
    assert types == [[2, 2], [0, 0], [2, 2], [0, 0]]


def test_actions_are_checked_before_anything_is_sent(servers):
  addresses = servers(2)
  with vector.create_and_join_world(addresses, {}, {}) as envs:
    envs.reset()
    with pytest.raises(ValueError, match=r"leading axis"):
      envs.step({"move": np.zeros(3, np.int32)})
    with pytest.raises(ValueError, match="unknown action 'jump'"):
      envs.step({"jump": np.zeros(2, np.int32)})
    with pytest.raises(ValueError, match="step_async"):
      envs.step_wait()
    envs.step_async({"move": [1, 2]})  # lists are cast like DmEnvAdaptor casts
    with pytest.raises(ValueError, match="in flight"):
      envs.step_async({"move": [1, 2]})
    assert list(envs.step_wait().step_type) == [1, 1]


def test_mismatched_specs_are_refused_naming_the_environment(servers):
  addresses = servers(3)
  settings = [{"width": 3}, {"width": 3}, {"width": 4}]
  with pytest.raises(ValueError, match=r"environment 2 \(127\.0\.0\.1:\d+\) has specs different "
                     r"from environment 0's .*observations UID \d+.*image") as caught:
    vector.create_and_join_world(addresses, settings, {})
  assert addresses[2] in str(caught.value)


def test_a_failed_connect_names_the_environment(servers):
  addresses = servers(1)
  with pytest.raises(vector.VectorEnvError, match=r"environment 1 \(127\.0\.0\.1:1\)") as caught:
    vector.create_and_join_world([addresses[0], "127.0.0.1:1"], {}, {}, timeout=0.5)
  assert caught.value.env_id == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_environment_error_names_it_and_the_others_carry_on(servers, transport):
  addresses = servers(3)
  settings = settings_for(3, episode_length=50)
  ref = Reference(addresses, settings, transport)
  envs = vector.create_and_join_world(addresses, settings, {}, transport=transport)
  try:
    ref.reset()
    envs.reset()
    with pytest.raises(vector.VectorEnvError, match=r"environment 1 \(127\.0\.0\.1:\d+\).*"
                       r"asked to fail") as caught:
      envs.step({"move": np.array([1, 99, 1], np.int32)})
    assert caught.value.env_id == 1 and caught.value.address == addresses[1]
    assert isinstance(caught.value.__cause__, error.DmEnvRpcError)
    assert [i for i, _, _ in caught.value.failures] == [1]
    # Worlds 0 and 2 took their step; world 1 did not.  All stay usable.
    ref.step([1], ids=[0])
    ref.step([1], ids=[2])
    batch = envs.step({"move": np.array([2, 2, 2], np.int32)})
    assert_batch_matches(batch, ref.step([2, 2, 2]))
    # The same through recv: the failure is raised, the others' answers kept.
    envs.send({"move": np.array([3, 99, 3], np.int32)})
    ref.step([3], ids=[0])
    ref.step([3], ids=[2])
    answered = []
    with pytest.raises(vector.VectorEnvError, match="environment 1"):
      while True:
        answered += list(envs.recv()[1])
    while len(answered) < 2:
      answered += list(envs.recv()[1])
    assert sorted(answered) == [0, 2]
  finally:
    envs.close()
    ref.close()


# ---------------------------------------------------------------------------
# Servers in other processes: a dead server must not hang the others.

class ServerProcess:

  def __init__(self, tmp_path, name, backend_env=None):
    port_file = tmp_path / f"port_{name}"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
    env.update(backend_env or {})
    self.proc = subprocess.Popen(
        [sys.executable, "-m", "dm_env_rpc_fast", "serve", "--port-file", str(port_file)],
        env=env, cwd=tmp_path, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not port_file.exists():
      assert self.proc.poll() is None and time.monotonic() < deadline, "server did not start"
      time.sleep(0.05)
    self.address = f"127.0.0.1:{int(port_file.read_text())}"

  def kill(self):
    if self.proc.poll() is None:
      self.proc.send_signal(signal.SIGKILL)
    self.proc.wait(30)


@pytest.fixture
def processes(tmp_path):
  made = []

  def start(n, backend_env=None):
    for _ in range(n):
      made.append(ServerProcess(tmp_path, str(len(made)), backend_env))
    return made[-n:]

  yield start
  for p in made:
    p.kill()


def _within(seconds, fn):
  """Runs fn() in a thread; fails the test if it takes longer than `seconds` (a hang)."""
  result = {}

  def run():
    try:
      result["value"] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      result["error"] = e

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(seconds)
  assert not thread.is_alive(), f"still waiting after {seconds} s"
  if "error" in result:
    raise result["error"]
  return result.get("value")


LARGE = {"dtype": "float32", "shape": np.array([8, 8, 3], np.int32), "episode_length": 0}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("api", ["step_wait", "recv"])
def test_a_dead_server_is_named_and_hangs_nothing(processes, transport, api):
  procs = processes(3)
  envs = vector.create_and_join_world([p.address for p in procs], LARGE, {}, transport=transport)
  try:
    envs.reset()
    actions = {"action": np.zeros(3, np.int32)}
    envs.step(actions)
    procs[1].kill()
    with pytest.raises(vector.VectorEnvError, match=rf"environment 1 \({procs[1].address}\)") as caught:
      if api == "step_wait":
        _within(60, lambda: envs.step(actions))
      else:
        def recv_all():
          envs.send(actions)
          while True:
            envs.recv()
        _within(60, recv_all)
    assert caught.value.env_id == 1
    if api == "recv":  # the others' answers are still there to receive
      received = []
      while len(received) < 2:
        received += list(_within(60, envs.recv)[1])
      assert sorted(received) == [0, 2]
    # The broken one is refused at once from now on; close() does not hang.
    with pytest.raises(vector.VectorEnvError, match=r"broke earlier.*environment 1"):
      _within(60, lambda: envs.step(actions))
    assert not envs._in_flight  # pylint: disable=protected-access  (nothing was sent)
  finally:
    _within(60, envs.close)


def test_the_pure_backend_client(processes, tmp_path):
  """The batched client in a process on the pure codec backend (a pure server too)."""
  procs = processes(2, {"DM_ENV_RPC_FAST_PURE": "1"})
  script = tmp_path / "client.py"
  script.write_text(f"""
import numpy as np
from dm_env_rpc_fast import codec, vector
from dm_env_rpc_fast.examples import large_observation
assert codec.BACKEND == "pure"
settings = {{"dtype": "float32", "shape": np.array([5, 4], np.int32), "episode_length": 2}}
with vector.create_and_join_world({[p.address for p in procs]!r}, settings, {{}}) as envs:
  types = [list(envs.reset().step_type)]
  for _ in range(3):
    ts = envs.step({{"action": np.zeros(2, np.int32)}})
    types.append(list(ts.step_type))
  want = large_observation.pattern("float32", (5, 4))
  assert (ts.observation["obs_0"] == want).all(), ts.observation["obs_0"]
  assert types == [[0, 0], [1, 1], [2, 2], [0, 0]], types
print("ok")
""")
  env = dict(os.environ, DM_ENV_RPC_FAST_PURE="1")
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_PARENT, env.get("PYTHONPATH")]))
  done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                        timeout=120, cwd=tmp_path)
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ---------------------------------------------------------------------------
# Connections without start_step: steps go as messages, one world after another.

class MessageOnly:
  """A connection with only send and close (as dm-env-rpc's, or a test double)."""

  def __init__(self, conn):
    self._conn = conn

  def send(self, request):
    return self._conn.send(request)

  def close(self):
    self._conn.close()


def test_connections_without_start_step_step_by_messages(servers):
  addresses = servers(2)
  settings = settings_for(2)
  ref = Reference(addresses, settings, "grpc")
  conns = [MessageOnly(connection.create_secure_channel_and_connect(a)) for a in addresses]
  try:
    with vector.create_and_join_world(conns, settings, {}, batch_size=1) as envs:
      assert_batch_matches(envs.reset(), ref.reset())
      for step in range(5):
        moves = np.array([step, step + 1], np.int32)
        assert_batch_matches(envs.step({"move": moves}), ref.step(moves))
      envs.send({"move": np.array([4], np.int32)}, env_ids=[1])
      batch, ids = envs.recv()
      assert list(ids) == [1]
      assert_batch_matches(batch, ref.step([4], ids=[1]))
  finally:
    ref.close()
    for conn in conns:
      conn.close()


def test_reset_of_some_environments_and_a_vector_from_adaptors(servers):
  addresses = servers(3)
  settings = settings_for(3, episode_length=50)
  ref = Reference(addresses, settings, None)
  conns = [connection.create_secure_channel_and_connect(a) for a in addresses]
  adaptors = [dm_env_adaptor.create_and_join_world(c, s, {})[0] for c, s in zip(conns, settings)]
  try:
    with vector.VectorEnv(adaptors, addresses=addresses) as envs:
      assert_batch_matches(envs.reset(), ref.reset())
      moves = np.array([1, 2, 3], np.int32)
      assert_batch_matches(envs.step({"move": moves}), ref.step(moves))
      # Reset worlds 2 and 0 only: their FIRST steps, in that order; world 1 carries on.
      batch = envs.reset(env_ids=[2, 0])
      assert list(batch.step_type) == [0, 0]
      assert_batch_matches(batch, [ref.envs[2].reset(), ref.envs[0].reset()])
      assert_batch_matches(envs.step({"move": moves}), ref.step(moves))
  finally:
    ref.close()
    for conn in conns:
      conn.close()


def test_observations_are_decoded_straight_into_the_batch_rows(servers, monkeypatch):
  """Our Connection gets a row of the batch array as `out`, and the codec writes it there."""
  assert vector.DECODES_INTO, "codec.decode_step_response has no out= parameter"
  given, returned = [], []
  start, finish = connection.Connection.start_step, connection.Connection.finish_step

  def spy_start(self, *args, **kwargs):
    given.append(kwargs.get("out"))
    return start(self, *args, **kwargs)

  def spy_finish(self):
    answer = finish(self)
    returned.append(answer[1])
    return answer

  monkeypatch.setattr(connection.Connection, "start_step", spy_start)
  monkeypatch.setattr(connection.Connection, "finish_step", spy_finish)
  addresses = servers(3)
  with vector.create_and_join_world(addresses, settings_for(3), {}) as envs:
    envs.reset()
    given.clear()
    returned.clear()
    batch = envs.step({"move": np.ones(3, np.int32)})
  image = batch.observation["image"]
  uid = envs._observations.uid["image"]  # pylint: disable=protected-access
  assert len(given) == 3 and len(returned) == 3
  for k, (out, answer) in enumerate(zip(given, returned)):
    row = out[uid]
    assert row.base is image and row.__array_interface__["data"][0] == image[k].__array_interface__["data"][0]
    assert answer[uid] is row  # the decoder wrote into the row: no array of its own


def test_worlds_without_reward_or_discount_observations(monkeypatch):
  """Reward 0 and discount 1 (0 when an episode TERMINATED), as DmEnvAdaptor computes them."""
  monkeypatch.setattr(interop_world, "OBSERVATIONS",
                      [o for o in interop_world.OBSERVATIONS if o[0] not in ("reward", "discount")])
  running = [interop_world.serve("dm_env_rpc_fast") for _ in range(2)]
  addresses = [f"127.0.0.1:{port}" for _, port in running]
  conns = [connection.create_secure_channel_and_connect(a) for a in addresses]
  adaptors = [dm_env_adaptor.create_and_join_world(c, {}, {})[0] for c in conns]
  try:
    with vector.create_and_join_world(addresses, {}, {}) as envs:
      assert envs.reward_spec().dtype == np.float64 and envs.discount_spec().dtype == np.float64
      batch, want = envs.reset(), [a.reset() for a in adaptors]
      types, lasts = set(), 0
      for i in range(14):
        for k, ts in enumerate(want):
          lasts += ts.last()
          assert batch.step_type[k] == int(ts.step_type)
          assert batch.reward[k] == (0.0 if ts.first() else ts.reward)
          assert batch.discount[k] == (1.0 if ts.first() else ts.discount)
          np.testing.assert_array_equal(batch.observation["image"][k], ts.observation["image"])
        types.update(int(t) for t in batch.step_type)
        action = interop_world.action_for(i)
        batch = envs.step({"move": np.full(2, action["move"]), "force": np.array([action["force"]] * 2)})
        want = [a.step(action) for a in adaptors]
      assert types == {0, 1, 2} and lasts  # episodes TERMINATED (discount 0) and restarted
  finally:
    for a, c in zip(adaptors, conns):
      a.close()
      c.close()
    for server_, _ in running:
      server_.stop(None)


@pytest.mark.parametrize("api", ["step", "step_async"])
def test_a_request_that_cannot_be_sent_is_named_and_the_others_are_collected(servers, api):
  addresses = servers(3)
  with vector.create_and_join_world(addresses, settings_for(3, episode_length=50), {},
                                    batch_size=2) as envs:
    envs.reset()
    envs._connections[1].close()  # pylint: disable=protected-access  (closed underneath)
    actions = {"move": np.zeros(3, np.int32)}
    with pytest.raises(vector.VectorEnvError, match=r"send: environment 1 .*closed") as caught:
      if api == "step":
        envs.step(actions)
      else:
        envs.step_async(actions)
    assert [i for i, _, _ in caught.value.failures] == [1]
    assert not envs._in_flight and not envs._ready  # pylint: disable=protected-access
    # Worlds 0 and 2 took that step and carry on.
    envs.send({"move": np.ones(2, np.int32)}, env_ids=[0, 2])
    batch, ids = envs.recv()
    assert list(ids) == [0, 2] and list(batch.step_type) == [1, 1]
    np.testing.assert_array_equal(batch.observation["count"], [2 * 10 + 1, 2 * 10 + 3])
