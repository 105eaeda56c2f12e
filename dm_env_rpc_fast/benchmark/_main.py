"""`dm-env-rpc-fast bench`: the command line, and the run from start to end."""

import argparse
import datetime
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, TextIO

from dm_env_rpc_fast.benchmark import cases as cases_lib
from dm_env_rpc_fast.benchmark import codec_bench
from dm_env_rpc_fast.benchmark import e2e
from dm_env_rpc_fast.benchmark import environment
from dm_env_rpc_fast.benchmark import impls
from dm_env_rpc_fast.benchmark import jsonfile
from dm_env_rpc_fast.benchmark import plot
from dm_env_rpc_fast.benchmark import progress
from dm_env_rpc_fast.benchmark import tables
from dm_env_rpc_fast.benchmark import timing
from dm_env_rpc_fast.benchmark import vector_bench
from dm_env_rpc_fast.shm import _wire as shm_wire

# What each mode measures.  Codec: dtypes x sizes, every implementation, both
# ways.  End to end: observations (dtype, shape), every client.
MODES: Dict[str, Dict[str, Any]] = {
    "quick": {
        "dtypes": ["float32", "uint8", "int32"],
        "sizes": ["scalar", "1KB", "1MB"],
        "passes": 3, "seconds": 0.01,
        "observations": ["float32:84x84x3", "float32:256x256x3"],
        "e2e_passes": 5, "e2e_seconds": 0.05,
    },
    "default": {
        "dtypes": ["float32", "float64", "uint8", "int32"],
        "sizes": ["scalar", "1KB", "64KB", "1MB", "8MB"],
        "passes": 5, "seconds": 0.02,
        "observations": ["float32:256", "float32:84x84x3", "float32:256x256x3",
                         "float64:1000x1000"],
        "e2e_passes": 9, "e2e_seconds": 0.08,
    },
    "full": {
        "dtypes": [cases_lib.kind_label(d, v) for d, v in cases_lib.DATA_KINDS],
        "sizes": list(cases_lib.SIZES),
        "passes": 7, "seconds": 0.05,
        "observations": ["float32:256", "float32:84x84x3", "uint8:84x84x3", "float32:256x256x3",
                         "uint8:256x256x3", "int32:256x256", "float64:1000x1000"],
        "e2e_passes": 15, "e2e_seconds": 0.15,
    },
}

# Guessed speeds (bytes/s) of each implementation, only to make the progress
# bar move evenly; nothing is judged by them.
_GUESSED_RATE = {"native": 5e9, "pure": 1e9, "upstream": 8e7, "protobuf": 1e9, "memcpy": 1e10}
_SERVER_START_S = 2.0


def _csv(text: str) -> List[str]:
  return [part for part in (p.strip() for p in text.split(",")) if part]


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="dm-env-rpc-fast bench",
      description=(
          "Measure dm_env_rpc_fast side by side with dm-env-rpc (when installed) and the limits "
          "under both: codec encode/decode MB/s per dtype and size (native, pure, dm-env-rpc, "
          "protobuf alone, memcpy), and end-to-end steps/s over loopback gRPC against "
          "`dm-env-rpc-fast serve` in another process, with the raw gRPC stream as the ceiling. "
          "The default run takes about a minute."),
      epilog="Exit status: 0 when every cell checked out, 1 when a cell failed its check "
             "(decoded array != input, encoded bytes != protobuf's) or could not run, 2 for a "
             "usage error.")
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_const", dest="mode", const="quick",
                    help="a smoke run of ~10-15 s: 2 dtypes, 3 sizes, 2 observation sizes, "
                         "3 short passes (figures are rough)")
  mode.add_argument("--full", action="store_const", dest="mode", const="full",
                    help="every dtype (varint dtypes with full-range and small data), size "
                         "84x84x3 too, more observation sizes, 7 longer passes: several minutes")
  parser.set_defaults(mode="default")
  parser.add_argument("--dtypes", type=_csv, metavar="LIST",
                      help="codec dtypes, comma-separated: "
                           f"{', '.join(cases_lib.DTYPES)}; varint dtypes take full-range data "
                           "unless written e.g. int32_small (0..127)")
  parser.add_argument("--sizes", type=_csv, metavar="LIST",
                      help="codec sizes, comma-separated: scalar, a byte count of array data "
                           "(1KB, 64KB, 1MB, 8MB; KB = 1024 B) or a shape (84x84x3)")
  parser.add_argument("--observations", type=_csv, metavar="LIST",
                      help="end-to-end observations, comma-separated DTYPE:SHAPE, e.g. "
                           "float32:84x84x3,float64:1000x1000")
  parser.add_argument("--passes", type=int, metavar="N",
                      help="timed passes per cell (codec and end to end)")
  parser.add_argument("--seconds", type=float, metavar="S",
                      help="length of one codec pass per implementation")
  parser.add_argument("--e2e-seconds", type=float, metavar="S",
                      help="length of one end-to-end pass per client")
  parser.add_argument("--no-codec", action="store_true", help="skip the codec section")
  parser.add_argument("--no-e2e", action="store_true", help="skip the end-to-end section")
  parser.add_argument("--no-upstream", action="store_true",
                      help="leave dm-env-rpc out even when it is installed")
  parser.add_argument("--vector", action="store_true",
                      help="also measure many environments from one agent: aggregate steps/s of "
                           "dm_env_rpc_fast.vector over N local servers against N threads of "
                           "DmEnvAdaptor loops and one loop (N = 1,2,4,8; ~15 s with --quick)")
  parser.add_argument("--vector-counts", type=_csv, metavar="LIST",
                      help="the N of --vector, comma-separated (default 1,2,4,8)")
  parser.add_argument("--vector-observation", metavar="DTYPE:SHAPE",
                      help=f"the observation of --vector (default {vector_bench.OBSERVATION})")
  parser.add_argument("--vector-transport", choices=("auto", "grpc", "shm"),
                      help="the transport of --vector's connections (default: as Connection picks)")
  parser.add_argument("--json", metavar="FILE",
                      help="write every sample, median, spread, the versions and the machine here")
  parser.add_argument("--plot", metavar="FILE.png",
                      help="plot throughput against size (needs matplotlib: "
                           "pip install \"dm-env-rpc-fast[plot]\")")
  parser.add_argument("--no-progress", action="store_true",
                      help="no progress bar (there is none when stderr is not a terminal)")
  parser.add_argument("--no-prime-allocator", action="store_true",
                      help="leave glibc's mmap/trim thresholds alone (then large results land "
                           "on fresh pages, and page faults show up as codec cost)")
  return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
  """Parses and validates; raises SystemExit(2) with a message on a usage error."""
  parser = _parser()
  args = parser.parse_args(list(argv))
  mode = MODES[args.mode]
  try:
    args.kinds = list(dict.fromkeys(cases_lib.parse_kind(d) for d in (args.dtypes or mode["dtypes"])))
    args.size_labels = list(dict.fromkeys(cases_lib.parse_size(s) for s in (args.sizes or mode["sizes"])))
    args.observation_cases = list(dict.fromkeys(
        e2e.parse_observation(o) for o in (args.observations or mode["observations"])))
  except ValueError as e:
    parser.error(str(e))
  if args.dtypes == [] or args.sizes == [] or args.observations == []:
    parser.error("--dtypes, --sizes and --observations need at least one item")
  for size in args.size_labels:
    if (cases_lib.size_bytes(size) or 0) > 256 * cases_lib.MB:
      parser.error(f"size {size}: at most 256MB")
  if args.passes is not None and args.passes < 1:
    parser.error("--passes must be at least 1")
  args.e2e_passes = mode["e2e_passes"] if args.passes is None else args.passes
  args.vector_passes = vector_bench.PASSES[args.mode] if args.passes is None else args.passes
  args.passes = mode["passes"] if args.passes is None else args.passes
  args.seconds = mode["seconds"] if args.seconds is None else args.seconds
  args.e2e_seconds = mode["e2e_seconds"] if args.e2e_seconds is None else args.e2e_seconds
  if args.seconds <= 0 or args.e2e_seconds <= 0:
    parser.error("--seconds and --e2e-seconds must be positive")
  if args.no_codec and args.no_e2e and not args.vector:
    parser.error("--no-codec and --no-e2e together leave nothing to measure")
  if not args.no_e2e or args.vector:
    try:
      shm_wire.spin_setting()  # read by every connection and server the run makes
    except ValueError as e:
      parser.error(str(e))
  try:
    args.vector_n = sorted({int(n) for n in (args.vector_counts or vector_bench.COUNTS)})
    args.vector_case = e2e.parse_observation(args.vector_observation or vector_bench.OBSERVATION)
  except ValueError as e:
    parser.error(f"--vector-counts/--vector-observation: {e}")
  if args.vector_counts == [] or not all(1 <= n <= 64 for n in args.vector_n):
    parser.error("--vector-counts: numbers from 1 to 64")
  args.vector_seconds = vector_bench.PASS_SECONDS[args.mode]
  return args


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None,
         err: Optional[TextIO] = None) -> int:
  """Runs the harness; returns the exit status (0 ok, 1 a cell failed, 2 usage)."""
  out = sys.stdout if out is None else out
  err = sys.stderr if err is None else err
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    args = parse_args(argv)
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else 2
  args.argv = argv
  if args.plot:
    try:
      plot.check_plot_support()
    except plot.PlotUnavailable as e:
      print(f"dm-env-rpc-fast bench: {e}", file=err)
      return 2
  run = _Run(args, out, err)
  try:
    return run.run()
  except KeyboardInterrupt:
    run.progress.clear()
    print("dm-env-rpc-fast bench: interrupted", file=err)
    return 130


class _Run:
  """One run of the harness: measures, prints, writes."""

  def __init__(self, args: argparse.Namespace, out: TextIO, err: TextIO):
    self.args, self.out, self.err = args, out, err
    self.codec_rows: List[codec_bench.CodecRow] = []
    self.cases: List[e2e.E2ECase] = []
    self.vector_cases: List[vector_bench.VectorCase] = []
    self.failures: List[str] = []
    self.progress = progress.Progress(0.0, err, enabled=False)

  def _print(self, lines: Sequence[str] = ()) -> None:
    self.progress.clear()
    for line in lines:
      print(line, file=self.out)
    self.out.flush()

  def settings(self) -> Dict[str, Any]:
    a = self.args
    return {
        "argv": a.argv, "mode": a.mode, "passes": a.passes, "pass_seconds": a.seconds,
        "e2e_passes": a.e2e_passes, "e2e_pass_seconds": a.e2e_seconds,
        "dtypes": [cases_lib.kind_label(d, v) for d, v in a.kinds], "sizes": a.size_labels,
        "observations": [f"{d}:{'x'.join(map(str, s))}" for d, s in a.observation_cases],
        "codec": not a.no_codec, "e2e": not a.no_e2e, "upstream": not a.no_upstream,
        "vector": ({"counts": a.vector_n, "observation": f"{a.vector_case[0]}:{'x'.join(map(str, a.vector_case[1]))}",
                    "passes": a.vector_passes, "pass_seconds": a.vector_seconds,
                    "transport": a.vector_transport} if a.vector else None),
        "noisy_spread": timing.NOISY_SPREAD, "allocator": self.allocator,
        "started": self.started,
    }

  def run(self) -> int:
    a = self.args
    self.started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    start = time.monotonic()
    if a.no_prime_allocator:
      self.allocator = "left alone (--no-prime-allocator)"
    elif timing.prime_allocator():
      self.allocator = ("primed: glibc keeps freed memory (mmap threshold 1 GiB, trim threshold "
                        "2 GiB, here and in the servers)")
    else:
      self.allocator = "not primed (not glibc); large results may land on fresh pages"
    self.env = environment.probe()
    settings = self.settings()
    self.progress = progress.Progress(self._estimate(), self.err, enabled=not a.no_progress)
    self._print(tables.header_lines(self.env, settings) + [""])
    if not a.no_codec:
      self._run_codec()
    if not a.no_e2e:
      self._run_e2e()
    if a.vector:
      self._run_vector()
    note = None
    if not a.no_upstream and not self.env["dm_env_rpc"]:
      note = ("dm-env-rpc is not installed, so it was not compared: `pip install dm-env-rpc` "
              "and run again to see the ratios against it")
    self._print(tables.summary_lines(self.codec_rows, self.cases, note))
    self._collect_failures()
    status = 1 if self.failures else 0
    elapsed = time.monotonic() - start
    if a.json:
      jsonfile.write(a.json, env=self.env, settings=settings, codec_rows=self.codec_rows,
                     cases=self.cases, vector_cases=self.vector_cases if a.vector else None,
                     failures=self.failures, elapsed_s=elapsed)
      self._print([f"JSON written to {a.json}"])
    if a.plot:
      try:
        plot.write(a.plot, self.codec_rows, self.cases, self.env)
        self._print([f"plot written to {a.plot}"])
      except Exception as e:  # pylint: disable=broad-except
        self._print([f"plot FAILED: {type(e).__name__}: {e}"])
        status = 1
    if self.failures:
      self._print(["", f"{len(self.failures)} cell(s) FAILED ({elapsed:.0f} s; exit status 1):"]
                  + [f"  {f}" for f in self.failures])
    else:
      cells = sum(1 for r in self.codec_rows for c in r.cells.values() if c.ok) \
          + sum(1 for c in self.cases for cell in c.cells.values() if cell.ok) \
          + sum(1 for c in self.vector_cases for cell in c.cells.values() if cell.ok)
      self._print(["", f"all {cells} measured cells passed their checks ({elapsed:.0f} s)"])
    return status

  # -- estimates for the progress bar ----------------------------------------

  def _codec_case_estimate(self, dtype, size) -> float:
    a = self.args
    nbytes = cases_lib.size_bytes(size, dtype) or 8
    total = 0.0
    for impl in impls.IMPLS:
      per_call = nbytes / _GUESSED_RATE[impl] * (4 if dtype in cases_lib.VARINT else 1)
      total += (a.passes + 2) * max(a.seconds, per_call)
    return total * len(codec_bench.OPS)

  def _e2e_case_estimate(self) -> float:
    a = self.args
    return len(e2e.CLIENTS) * (a.e2e_passes + 1) * a.e2e_seconds + 0.5

  def _estimate(self) -> float:
    a = self.args
    total = 0.0
    if not a.no_codec:
      total += sum(self._codec_case_estimate(d, s) for d, _, s in
                   codec_bench.plan(a.kinds, a.size_labels))
    if not a.no_e2e:
      total += _SERVER_START_S + len(a.observation_cases) * self._e2e_case_estimate()
    if a.vector:
      total += _SERVER_START_S + len(a.vector_n) * self._vector_case_estimate()
    return total

  def _vector_case_estimate(self) -> float:
    a = self.args
    return len(vector_bench.CLIENTS) * (a.vector_passes * a.vector_seconds + 0.1) + 0.5

  # -- sections ---------------------------------------------------------------

  def _run_codec(self) -> None:
    a = self.args
    skip = {"upstream": "left out (--no-upstream)"} if a.no_upstream else None
    for dtype, variant, size in codec_bench.plan(a.kinds, a.size_labels):
      estimate = self._codec_case_estimate(dtype, size)
      step = estimate / (len(codec_bench.OPS) * (a.passes + 2))
      label = f"codec {cases_lib.kind_label(dtype, variant)} {size}"
      self.progress.set_label(label)
      self.progress.advance(step)  # the warm-up

      def on_pass(op, _, label=label, step=step):
        self.progress.advance(step, f"{label} {op}")

      self.codec_rows += codec_bench.run_case(
          dtype, variant, size, passes=a.passes, pass_seconds=a.seconds,
          warmup_seconds=a.seconds, skip=skip, on_pass=on_pass)
      self.progress.advance(step)
    for op in codec_bench.OPS:
      self._print(tables.codec_table(self.codec_rows, op, impls.IMPLS) + [""])

  def _run_e2e(self) -> None:
    a = self.args
    self.cases = [e2e.E2ECase(d, s) for d, s in a.observation_cases]
    self.progress.set_label("end to end: starting the servers")
    try:
      ours, raw = e2e.start_servers(prime=not a.no_prime_allocator)
    except Exception as e:  # pylint: disable=broad-except
      for case in self.cases:
        case.cells = {name: timing.Cell("FAILED", f"servers did not start: {e}") for name in e2e.CLIENTS}
      self._print(tables.e2e_table(self.cases, a.e2e_passes) + [""])
      return
    self.progress.advance(_SERVER_START_S)
    try:
      for case in self.cases:
        step = self._e2e_case_estimate() / (a.e2e_passes + 1)
        label = f"end to end {case.label}"
        self.progress.set_label(label)
        self.progress.advance(step)
        e2e.measure_case(case, ours, raw, passes=a.e2e_passes, pass_seconds=a.e2e_seconds,
                         warmup_seconds=min(a.e2e_seconds, 0.1), upstream=not a.no_upstream,
                         on_pass=lambda _, label=label, step=step: self.progress.advance(step, label))
    finally:
      ours.stop()
      raw.stop()
    self._print(tables.e2e_table(self.cases, a.e2e_passes) + [""]
                + tables.server_cost_lines(self.cases) + [""]
                + tables.target_lines(self.cases) + [""])

  def _run_vector(self) -> None:
    a = self.args
    self.progress.set_label("many environments: starting the servers")
    step = self._vector_case_estimate() / max(1, a.vector_passes)

    def on_pass(_):
      self.progress.advance(step, "many environments")

    self.vector_cases = vector_bench.run(
        a.vector_n, a.vector_case, passes=a.vector_passes, pass_seconds=a.vector_seconds,
        prime=not a.no_prime_allocator, transport=a.vector_transport, on_pass=on_pass)
    self._print(vector_bench.table_lines(self.vector_cases) + [""])

  def _collect_failures(self) -> None:
    for row in self.codec_rows:
      for impl, cell in row.cells.items():
        if cell.status == "FAILED":
          self.failures.append(f"codec {row.op} {row.kind} {row.size} {impl}: {cell.reason}")
    for case in self.cases:
      for name, cell in case.cells.items():
        if cell.status == "FAILED":
          self.failures.append(f"e2e {case.label} {name}: {cell.reason}")
    self.failures += vector_bench.failures(self.vector_cases)
