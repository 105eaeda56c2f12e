"""`dm-env-rpc-fast bench --vector`: many environments from one agent.

For N = 1, 2, 4, 8 (by default), N `dm-env-rpc-fast serve` processes on this
host serve the large-observation environment (one observation of the chosen
dtype and shape), and three clients in this process step them:

  batched    one `dm_env_rpc_fast.vector.VectorEnv` over the N servers,
             `step(actions)` for all N at once from one thread;
  threads    N `DmEnvAdaptor.step` loops, one per server, each in its own thread;
  one_loop   one `DmEnvAdaptor.step` loop against one server (the same for
             every N: the baseline of a single environment).

Each client's figure is aggregate steps/s (environment steps, all servers
together).  The three are measured together for each N: each pass gives every
client a block of `pass_seconds`, in an order rotated from pass to pass, and
the ratios are paired pass by pass (see `timing`).  Every client's first
result is checked against the environment's known observation (row by row for
the batched client).  Connections use the transport `Connection` picks by
default (the same-host shared-memory channel when offered), or the one given.
"""

import concurrent.futures
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dm_env_rpc_fast.benchmark import cases as cases_lib
from dm_env_rpc_fast.benchmark import e2e
from dm_env_rpc_fast.benchmark import tables
from dm_env_rpc_fast.benchmark import timing
from dm_env_rpc_fast.examples import large_observation

CLIENTS = ("batched", "threads", "one_loop")
CLIENT_TITLES = {
    "batched": "dm_env_rpc_fast.vector, one thread",
    "threads": "N DmEnvAdaptor loops, a thread each",
    "one_loop": "one DmEnvAdaptor loop, one server",
}
COUNTS = (1, 2, 4, 8)
# Passes and seconds per pass of each client, by the run's mode.
PASSES = {"quick": 3, "default": 5, "full": 7}
PASS_SECONDS = {"quick": 0.2, "default": 0.5, "full": 1.0}
OBSERVATION = "float32:84x84x3"
# The targets, judged at N = 4 on the default observation.
TARGET_N = 4
TARGET_VS_ONE_LOOP = 1.8
TARGET_VS_THREADS = 1.5


class VectorCase(timing.StepCells):
  """One N: the cells of its three clients (samples: seconds per aggregate step)."""

  def __init__(self, n: int, dtype: str, shape: Tuple[int, ...]):
    super().__init__()
    self.n, self.dtype, self.shape = n, dtype, tuple(shape)
    self.transport: Optional[str] = None

  def to_json(self) -> Dict[str, Any]:
    return {
        "n": self.n, "dtype": self.dtype, "shape": list(self.shape), "transport": self.transport,
        "clients": {name: dict(cell.to_json(), steps_per_s=self.steps_per_s(name))
                    for name, cell in self.cells.items()},
        "batched_vs_one_loop": self.speedup("batched", "one_loop"),
        "batched_vs_threads": self.speedup("batched", "threads"),
        "threads_vs_one_loop": self.speedup("threads", "one_loop"),
    }


def settings_for(dtype, shape):
  return {"dtype": dtype, "shape": np.asarray(shape, np.int32), "episode_length": 0}


class Runner:
  """A client: run(seconds) -> (seconds, environment steps); step() makes one call
  (all N environments for the batched client; None for the threads)."""

  def __init__(self, run: Callable[[float], Tuple[float, int]], close: Callable[[], None],
               step: Optional[Callable[[], Any]] = None, check: Optional[Callable[[Any], None]] = None):
    self.run, self.close, self.step, self.check = run, close, step, check


def _adaptor(address, settings, transport):
  from dm_env_rpc_fast.v1 import connection  # pylint: disable=import-outside-toplevel
  from dm_env_rpc_fast.v1 import dm_env_adaptor  # pylint: disable=import-outside-toplevel
  conn = connection.create_secure_channel_and_connect(address, timeout=30, transport=transport)
  try:
    env, _ = dm_env_adaptor.create_and_join_world(conn, settings, {})
    env.reset()
  except BaseException:
    conn.close()
    raise
  return env, conn


def _close_adaptors(pairs):
  for env, conn in pairs:
    try:
      env.close()
    finally:
      conn.close()


def _loop(step: Callable[[], Any], steps_per_call: int):
  def run(seconds: float) -> Tuple[float, int]:
    start = time.perf_counter()
    deadline = start + seconds
    calls = 0
    while True:
      step()
      calls += 1
      now = time.perf_counter()
      if now >= deadline:
        return now - start, calls * steps_per_call
  return run


def _check_batch(expected, n):
  def check(batch):
    got = batch.observation[e2e.OBSERVATION]
    for k in range(n):
      cases_lib.check_array(got[k], expected)
    if list(batch.step_type) != [1] * n:
      raise cases_lib.CheckFailed(f"step types {list(batch.step_type)}, not all MID")
  return check


def batched(addresses, settings, transport, expected) -> Tuple[Runner, Optional[str]]:
  """The batched client over `addresses`, checked once; and the transport it got."""
  from dm_env_rpc_fast import vector  # pylint: disable=import-outside-toplevel
  envs = vector.create_and_join_world(addresses, settings, {}, transport=transport, timeout=30)
  try:
    envs.reset()
    actions = {"action": np.zeros(len(addresses), np.int32)}
    check = _check_batch(expected, len(addresses))
    check(envs.step(actions))
    transport_used = getattr(envs._connections[0], "transport", None)
  except BaseException:
    envs.close()
    raise
  step = lambda: envs.step(actions)  # pylint: disable=unnecessary-lambda-assignment
  return Runner(_loop(step, len(addresses)), envs.close, step, check), transport_used


def _check_timestep(timestep, expected) -> None:
  cases_lib.check_array(timestep.observation[e2e.OBSERVATION], expected)


def _threads(addresses, settings, transport, expected) -> Runner:
  pairs = []
  try:
    for address in addresses:
      pairs.append(_adaptor(address, settings, transport))
    action = {"action": np.int32(0)}
    for env, _ in pairs:
      _check_timestep(env.step(action), expected)
  except BaseException:
    _close_adaptors(pairs)
    raise

  def run(seconds: float) -> Tuple[float, int]:
    stop = threading.Event()
    counts = [0] * len(pairs)
    failures: List[BaseException] = []

    def loop(k):
      step, n = pairs[k][0].step, 0
      try:
        while not stop.is_set():
          step(action)
          n += 1
      except BaseException as e:  # pylint: disable=broad-except
        failures.append(e)
      counts[k] = n

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(len(pairs))]
    start = time.perf_counter()
    for t in threads:
      t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
      t.join()
    elapsed = time.perf_counter() - start
    if failures:
      raise failures[0]
    return elapsed, sum(counts)

  return Runner(run, lambda: _close_adaptors(pairs))


def one_loop(address, settings, transport, expected) -> Runner:
  """One DmEnvAdaptor against `address`, checked once."""
  pair = _adaptor(address, settings, transport)
  action = {"action": np.int32(0)}
  try:
    _check_timestep(pair[0].step(action), expected)
  except BaseException:
    _close_adaptors([pair])
    raise
  step = lambda: pair[0].step(action)  # pylint: disable=unnecessary-lambda-assignment
  return Runner(_loop(step, 1), lambda: _close_adaptors([pair]), step,
                lambda ts: _check_timestep(ts, expected))


def _describe(e: BaseException) -> str:
  if isinstance(e, cases_lib.CheckFailed):
    return f"wrong result: {e}"
  return f"{type(e).__name__}: {e}"


def measure_case(case: VectorCase, addresses: Sequence[str], *, passes: int, pass_seconds: float,
                 transport: Optional[str] = None,
                 on_pass: Optional[Callable[[int], None]] = None) -> None:
  """Measures the three clients for N = case.n; fills case.cells (never raises)."""
  settings = settings_for(case.dtype, case.shape)
  expected = large_observation.pattern(case.dtype, case.shape, 0)
  addresses = list(addresses)[:case.n]
  runners: Dict[str, Runner] = {}
  makers = {
      "batched": lambda: batched(addresses, settings, transport, expected),
      "threads": lambda: _threads(addresses, settings, transport, expected),
      "one_loop": lambda: one_loop(addresses[0], settings, transport, expected),
  }
  try:
    for name in CLIENTS:
      case.cells[name] = timing.Cell()
      try:
        made = makers[name]()
        if name == "batched":
          made, case.transport = made
        runners[name] = made
        made.run(min(pass_seconds, 0.1))  # warm-up
      except Exception as e:  # pylint: disable=broad-except
        case.cells[name].fail(_describe(e))
    for p in range(max(1, passes)):
      order = [name for name in CLIENTS if name in runners and case.cells[name].ok]
      if order:
        shift = p % len(order)
        order = order[shift:] + order[:shift]
      for name in order:
        try:
          elapsed, steps = runners[name].run(pass_seconds)
        except Exception as e:  # pylint: disable=broad-except
          case.cells[name].fail(_describe(e))
          continue
        case.cells[name].samples.append(elapsed / max(steps, 1))
        case.cells[name].calls_per_pass = steps
      if on_pass is not None:
        on_pass(p)
  finally:
    for runner in runners.values():
      try:
        runner.close()
      except Exception:  # pylint: disable=broad-except
        pass


def start_servers(n: int, prime: bool) -> List[e2e.ServerProcess]:
  """Starts n `dm-env-rpc-fast serve` processes at once (raises RuntimeError if one fails)."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
    futures = [pool.submit(e2e.ServerProcess, f"our #{k}", ["dm_env_rpc_fast", "serve"], prime)
               for k in range(n)]
  servers, errors = [], []
  for f in futures:
    try:
      servers.append(f.result())
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
  if errors:
    for s in servers:
      s.stop()
    raise RuntimeError(str(errors[0]))
  return servers


def run(counts: Sequence[int], observation: Tuple[str, Tuple[int, ...]], *, passes: int,
        pass_seconds: float, prime: bool, transport: Optional[str] = None,
        on_pass: Optional[Callable[[int], None]] = None) -> List[VectorCase]:
  """Starts max(counts) servers, measures every N, stops them; never raises."""
  dtype, shape = observation
  cases = [VectorCase(n, dtype, shape) for n in counts]
  try:
    servers = start_servers(max(counts), prime)
  except Exception as e:  # pylint: disable=broad-except
    for case in cases:
      case.cells = {name: timing.Cell("FAILED", f"servers did not start: {e}") for name in CLIENTS}
    return cases
  try:
    addresses = [s.address for s in servers]
    for case in cases:
      measure_case(case, addresses, passes=passes, pass_seconds=pass_seconds,
                   transport=transport, on_pass=on_pass)
      dead = [s for s in servers[:case.n] if not s.alive()]
      if dead:
        for cell in case.cells.values():
          if cell.ok:
            cell.fail(f"the {dead[0].name} server died: {dead[0].log_tail()}")
  finally:
    for s in servers:
      s.stop()
  return cases


def table_lines(cases: Sequence[VectorCase]) -> List[str]:
  """The section's table, its notes and the target lines."""
  if not cases:
    return []
  notes = tables.Notes()
  head = ["N", "batched", "N threads", "one loop", "batched/one", "batched/threads", "threads/one"]
  rows = [head]
  for case in cases:
    line = [str(case.n)]
    for name in CLIENTS:
      cell = case.cells.get(name)
      if cell is not None:
        notes.cell(f"N={case.n}", name, cell)
      rate = case.steps_per_s(name)
      line.append(tables.cell_text(cell, "-" if rate is None else f"{rate:,.0f}/s"))
    line += [tables.fmt_ratio(case.speedup("batched", "one_loop")),
             tables.fmt_ratio(case.speedup("batched", "threads")),
             tables.fmt_ratio(case.speedup("threads", "one_loop"))]
    rows.append(line)
  first = cases[0]
  transports = sorted({c.transport or "?" for c in cases})
  title = (f"Many environments: aggregate steps/s of N local servers, {e2e.observation_label(first.dtype, first.shape)} "
           f"(transport: {', '.join(transports)}), median of the passes; ratios paired pass by pass\n"
           f"  batched = {CLIENT_TITLES['batched']}; N threads = {CLIENT_TITLES['threads']}; "
           f"one loop = {CLIENT_TITLES['one_loop']}")
  lines = [title, ""] + ["  " + line for line in tables.aligned(rows, "r" * len(head))]
  lines += ["  " + line for line in notes.lines()]
  target = next((c for c in cases if c.n == TARGET_N), None)
  if target is not None and (first.dtype, first.shape) == e2e.parse_observation(OBSERVATION):
    one, threads = target.speedup("batched", "one_loop"), target.speedup("batched", "threads")
    lines += ["", f"Target at N = {TARGET_N}: batched >= {TARGET_VS_ONE_LOOP}x one loop: "
              f"{tables.fmt_ratio(one)} ({_verdict(one, TARGET_VS_ONE_LOOP)}); "
              f">= {TARGET_VS_THREADS}x N threads: {tables.fmt_ratio(threads)} "
              f"({_verdict(threads, TARGET_VS_THREADS)})"]
  return lines


def _verdict(value: Optional[float], target: float) -> str:
  if value is None:
    return "not measured"
  return "met" if value >= target else "NOT met"


def failures(cases: Sequence[VectorCase]) -> List[str]:
  return [f"vector N={case.n} {name}: {cell.reason}"
          for case in cases for name, cell in case.cells.items() if cell.status == "FAILED"]
