"""How every cell is measured: warm-up, interleaved passes, medians, spreads, checks.

A *group* is the set of implementations (or clients) of one case.  They are
measured together, so that each of them sees the same moment of a noisy
machine:

1. each one runs once and its result is checked (a wrong result is a failed
   cell, reported with the reason, and is not timed);
2. each one warms up (at least `warmup_seconds` of calls, at least two calls,
   which also faults in the memory its steady state reuses) and the warm-up
   sets how many calls make a pass of about `pass_seconds`;
3. `passes` passes: in each, every member times its block of calls, in an
   order rotated from pass to pass; the sample is the time per call;
4. the result of the last timed call is checked again.

The figure of a cell is the median of its samples; its spread is max/min of
them, and a cell whose spread exceeds `NOISY_SPREAD` is flagged.

The garbage collector is off during timed blocks (as `timeit` does).
"""

import ctypes
import gc
import math
import os
import resource
import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

from dm_env_rpc_fast.benchmark import cases as cases_lib
from dm_env_rpc_fast.benchmark.impls import Call, Unavailable

NOISY_SPREAD = 1.3  # max/min of a cell's passes above this: flagged

# glibc gives big blocks back to the kernel (mmap/munmap, heap trimming), so a
# fresh multi-megabyte result would land on fresh pages on every call, and a
# first touch of a page runs at ~1 GB/s on small VMs: the kernel, not the code
# under test, would set the pace.  Keeping freed memory in the process removes
# that for every implementation alike.  Children get the same through these
# environment variables.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def prime_allocator() -> bool:
  """Applies MALLOC_ENV's settings to this (already running) process; False if not glibc."""
  try:
    libc = ctypes.CDLL("libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 31))


class Cell:
  """The outcome of one member of a group.

  Attributes:
    status: "ok", "FAILED", "not installed" or "n/a".
    reason: why it is not "ok" (None when it is).
    samples: seconds per call, one per pass.
    calls_per_pass: how many calls each pass timed.
    faults_per_call: minor page faults per call during the timed passes.
    probe_samples: per pass, the probe's increase per call (e.g. a server's
      CPU seconds per step), when the member had a probe.
  """

  def __init__(self, status: str = "ok", reason: Optional[str] = None):
    self.status, self.reason = status, reason
    self.samples: List[float] = []
    self.calls_per_pass = 0
    self.faults_per_call: Optional[float] = None
    self.probe_samples: List[float] = []

  @property
  def ok(self) -> bool:
    return self.status == "ok"

  @property
  def median(self) -> Optional[float]:
    return statistics.median(self.samples) if self.ok and self.samples else None

  @property
  def spread(self) -> Optional[float]:
    if not self.ok or not self.samples or min(self.samples) <= 0:
      return None
    return max(self.samples) / min(self.samples)

  @property
  def noisy(self) -> bool:
    spread = self.spread
    return spread is not None and spread > NOISY_SPREAD

  @property
  def probe_median(self) -> Optional[float]:
    return statistics.median(self.probe_samples) if self.ok and self.probe_samples else None

  def fail(self, reason: str) -> None:
    self.status, self.reason = "FAILED", reason

  def to_json(self) -> Dict[str, Any]:
    out = {"status": self.status, "reason": self.reason, "samples_s": self.samples,
           "median_s": self.median, "spread": self.spread, "noisy": self.noisy,
           "calls_per_pass": self.calls_per_pass, "faults_per_call": self.faults_per_call}
    if self.probe_samples:
      out["probe_samples"] = self.probe_samples
      out["probe_median"] = self.probe_median
    return out


def paired_ratio(numerator: List[float], denominator: List[float]) -> Optional[float]:
  """The median over passes of numerator[i] / denominator[i].

  Members of a group run one after another within each pass, so pairing their
  samples pass by pass compares them at the same moment: a slow patch of the
  machine that hits one pass moves both sides and cancels out, where a ratio
  of medians would keep it.
  """
  pairs = [a / b for a, b in zip(numerator, denominator) if b > 0]
  return statistics.median(pairs) if pairs and len(numerator) == len(denominator) else None


class StepCells:
  """The cells of one case's clients, whose samples are seconds per step: rates and ratios.

  Attributes:
    cells: client name -> Cell.
  """

  def __init__(self):
    self.cells: Dict[str, Cell] = {}

  def steps_per_s(self, client: str) -> Optional[float]:
    cell = self.cells.get(client)
    median = cell.median if cell is not None else None
    return 1.0 / median if median else None

  def ok_cells(self, *names: str) -> Optional[List[Cell]]:
    """The cells of `names`, or None unless every one of them ran and has samples."""
    cells = [self.cells.get(name) for name in names]
    return cells if all(c is not None and c.ok and c.samples for c in cells) else None

  def speedup(self, client: str, base: str) -> Optional[float]:
    """How many times more steps/s `client` makes than `base`: paired pass by pass."""
    cells = self.ok_cells(client, base)
    return paired_ratio(cells[1].samples, cells[0].samples) if cells else None


def _describe(error: BaseException) -> str:
  if isinstance(error, cases_lib.CheckFailed):
    return f"wrong result: {error}"
  return f"raised {type(error).__name__}: {error}"


class Member:
  """A member of a group: its call, and optionally a probe read around each block."""

  def __init__(self, call: Call, probe: Optional[Callable[[], float]] = None):
    self.call, self.probe = call, probe


def measure_group(members: Mapping[str, Union[Call, Member, Unavailable]], *, passes: int,
                  pass_seconds: float, warmup_seconds: Optional[float] = None,
                  on_pass: Optional[Callable[[int], None]] = None) -> Dict[str, Cell]:
  """Measures a group's members together (see the module docstring).

  Args:
    members: name -> Call (or Member, to add a probe), or the Unavailable that
      says why the member cannot run (kept, so nothing disappears silently).
    passes: timed passes per member (at least 1).
    pass_seconds: the target duration of one member's block of calls.
    warmup_seconds: warm-up per member (default: pass_seconds).
    on_pass: called with the pass index after every pass (progress display).

  Returns:
    name -> Cell, for every member, in the order given.
  """
  passes = max(1, int(passes))
  warmup_seconds = pass_seconds if warmup_seconds is None else warmup_seconds
  cells: Dict[str, Cell] = {}
  live: Dict[str, Member] = {}
  counts: Dict[str, int] = {}
  for name, member in members.items():
    if isinstance(member, Unavailable):
      cells[name] = Cell(member.status, member.reason)
      continue
    member = member if isinstance(member, Member) else Member(member)
    cell = cells[name] = Cell()
    try:
      counts[name] = _warm_up(member.call, pass_seconds, warmup_seconds)
    except Exception as e:  # pylint: disable=broad-except
      cell.fail(_describe(e))
      continue
    cell.calls_per_pass = counts[name]
    live[name] = member
  last: Dict[str, Any] = {}
  faults = {name: 0 for name in live}
  for p in range(passes):
    order = list(live)
    if order:
      shift = p % len(order)
      order = order[shift:] + order[:shift]
    for name in order:
      if not cells[name].ok:
        continue
      member, count = live[name], counts[name]
      try:
        elapsed, nfaults, probe, last[name] = _block(member, count)
      except Exception as e:  # pylint: disable=broad-except
        cells[name].fail(_describe(e))
        continue
      cells[name].samples.append(elapsed / count)
      faults[name] += nfaults
      if probe is not None:
        cells[name].probe_samples.append(probe / count)
    if on_pass is not None:
      on_pass(p)
  for name, member in live.items():
    cell = cells[name]
    if not cell.ok:
      continue
    cell.faults_per_call = faults[name] / (passes * counts[name])
    try:
      member.call.check(last.pop(name))
    except Exception as e:  # pylint: disable=broad-except
      cell.fail(_describe(e))
  return cells


def _warm_up(call: Call, pass_seconds: float, warmup_seconds: float) -> int:
  """Checks one result, warms the call up; returns how many calls take about pass_seconds.

  Warm-up calls run in batches of doubling size (as `timeit`'s autorange does)
  until they have taken warmup_seconds and made at least two calls (one when a
  single call takes longer than the warm-up: an 8 MB case of a slow
  implementation).  The last batch gives the time per call.
  """
  fn = call.fn
  start = time.perf_counter()
  result = fn()
  first = time.perf_counter() - start
  call.check(result)
  del result
  min_calls = 1 if first >= warmup_seconds else 2
  batch, calls, total = 1, 0, 0.0
  while True:
    start = time.perf_counter()
    for _ in range(batch):
      fn()
    elapsed = time.perf_counter() - start
    calls += batch
    total += elapsed
    per_call = elapsed / batch
    if calls >= min_calls and total >= warmup_seconds:
      break
    remaining = warmup_seconds - total
    batch = max(1, min(batch * 2, int(remaining / per_call) + 1)) if per_call > 0 else batch * 2
  if per_call <= 0:
    return 1000
  return max(1, int(math.ceil(pass_seconds / per_call)))


def _block(member: Member, count: int):
  fn = member.call.fn
  probe = member.probe
  gc_was_enabled = gc.isenabled()
  gc.disable()
  try:
    before_probe = probe() if probe is not None else None
    before_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(count - 1):
      fn()
    result = fn()
    elapsed = time.perf_counter() - start
    after_faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    after_probe = probe() if probe is not None else None
  finally:
    if gc_was_enabled:
      gc.enable()
  probe_delta = None if probe is None else after_probe - before_probe
  return elapsed, after_faults - before_faults, probe_delta, result


# ---------------------------------------------------------------------------
# Another process's CPU time (for the server-cost figure).

def process_cpu_clock(pid: int) -> Optional[Callable[[], float]]:
  """A function returning the CPU seconds (user + system, all threads) of process `pid`.

  Linux's per-process CPU clock (nanoseconds) when readable, else
  /proc/PID/stat's utime + stime (clock ticks, usually 10 ms), else None.
  """
  clock_id = ((~pid) << 3) | 2  # the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
  try:
    time.clock_gettime(clock_id)
    return lambda: time.clock_gettime(clock_id)
  except (OSError, AttributeError, OverflowError):
    pass
  path = f"/proc/{pid}/stat"
  try:
    ticks = os.sysconf("SC_CLK_TCK")
    with open(path) as f:
      f.read()
  except (OSError, ValueError, AttributeError):
    return None

  def read():
    with open(path) as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks

  return read
