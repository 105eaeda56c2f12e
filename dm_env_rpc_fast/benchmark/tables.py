"""What the harness prints: the header, the tables with their notes, the targets, the summary.

Every function returns lines of text; `_main` prints them.  Number formats and
the markers under the tables (noisy cells, views, failures) are shared by every
section, `vector_bench`'s table too.
"""

import statistics
from typing import Any, Dict, List, Optional, Sequence

from dm_env_rpc_fast.benchmark import cases as cases_lib
from dm_env_rpc_fast.benchmark import codec_bench
from dm_env_rpc_fast.benchmark import e2e
from dm_env_rpc_fast.benchmark import impls
from dm_env_rpc_fast.benchmark import timing

NOISY_MARK = "~"
VIEW_MARK = "v"
IMPL_TITLES = {"native": "native", "pure": "pure", "upstream": "upstream",
               "protobuf": "protobuf", "memcpy": "memcpy"}


# ---------------------------------------------------------------------------
# The header: the machine, the versions, the settings.

def header_lines(env: Dict[str, Any], settings: Dict[str, Any]) -> List[str]:
  cores = f"{env['cpu_count']} cores"
  if env.get("cpus_usable") and env["cpus_usable"] != env["cpu_count"]:
    cores += f" ({env['cpus_usable']} usable)"
  backends = ", ".join(f"{k} {v}" for k, v in env["backends"].items())
  upstream = f"dm-env-rpc {env['dm_env_rpc']}" if env["dm_env_rpc"] else "dm-env-rpc not installed"
  if env["dm_env_rpc"] and not settings["upstream"]:
    upstream += " (left out: --no-upstream)"
  return [
      f"dm-env-rpc-fast bench ({settings['mode']} mode: {settings['passes']} passes per codec "
      f"cell, {settings['e2e_passes']} per end-to-end cell; started {settings['started']})",
      f"  machine    {env['cpu']}, {cores}; {env['os']}",
      f"  python     {env['python']}; numpy {env['numpy']}, protobuf {env['protobuf']}, "
      f"grpcio {env['grpcio']}",
      f"  library    dm-env-rpc-fast {env['dm_env_rpc_fast']}, live backend {env['backend']} "
      f"({backends})",
      f"  upstream   {upstream}",
      f"  allocator  {settings['allocator']}",
      f"  channel    {_polling_text(env.get('shm_polling_us'))}",
  ]


def _polling_text(micros: Optional[int]) -> str:
  if micros is None:
    return "DM_ENV_RPC_FAST_SPIN_US is not a valid setting"
  if not micros:
    return "shared-memory waits block (DM_ENV_RPC_FAST_SPIN_US unset or 0: no polling)"
  return (f"shared-memory waits poll up to {micros} us where it measures faster "
          f"(DM_ENV_RPC_FAST_SPIN_US={micros})")



# ---------------------------------------------------------------------------
# Number formatting.

def fmt_rate(value: Optional[float]) -> str:
  if value is None:
    return "-"
  if value >= 1e6:
    return f"{value:.1e}".replace("e+0", "e").replace("e+", "e")
  if value >= 100:
    return f"{value:,.0f}"
  if value >= 10:
    return f"{value:.1f}"
  return f"{value:.2f}"


def fmt_time(seconds: Optional[float]) -> str:
  if seconds is None:
    return "-"
  us = seconds * 1e6
  if us < 10:
    return f"{us:.2f}us"
  if us < 1000:
    return f"{us:.0f}us"
  return f"{us / 1000:.1f}ms"


def fmt_ratio(value: Optional[float]) -> str:
  if value is None:
    return "-"
  if value >= 100:
    return f"{value:,.0f}x"
  if value >= 10:
    return f"{value:.0f}x"
  return f"{value:.1f}x"


def fmt_pct(value: Optional[float]) -> str:
  return "-" if value is None else f"{100 * value:.0f}%"


def aligned(rows: List[List[str]], aligns: str) -> List[str]:
  """Aligned columns: `aligns` has "l" (left) or "r" (right) for each column."""
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  out = []
  for r in rows:
    cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, aligns)]
    out.append("  ".join(cells).rstrip())
  return out


class Notes:
  """The lines under a table: failures, unavailable implementations, markers used."""

  def __init__(self):
    self.failures: List[str] = []
    self.unavailable: Dict[str, str] = {}
    self.noisy = 0
    self.views = False
    self.extra: List[str] = []

  def cell(self, where: str, name: str, cell: timing.Cell) -> None:
    if cell.status == "FAILED":
      self.failures.append(f"FAILED  {where} {name}: {cell.reason}")
    elif not cell.ok:
      self.unavailable.setdefault(f"{name}: {cell.status} ({cell.reason})", where)
    elif cell.noisy:
      self.noisy += 1

  def lines(self) -> List[str]:
    out = list(self.failures)
    for text, where in self.unavailable.items():
      out.append(f"n/a     {text}; first at {where}")
    if self.noisy:
      out.append(f"{NOISY_MARK}       passes disagree: max/min of the passes above "
                 f"{timing.NOISY_SPREAD}x ({self.noisy} cells); the machine was busy, "
                 "re-run before trusting them")
    if self.views:
      out.append(f"{VIEW_MARK}       a view of the wire bytes, as dm-env-rpc returns for int8/uint8: "
                 "no bytes move, so the figure is the call's fixed cost spread over the array")
    return out + self.extra


def cell_text(cell: Optional[timing.Cell], figure: str, mark: str = "") -> str:
  """A cell's figure with its markers, or why it has none (-, FAILED, n/a)."""
  if cell is None:
    return "-"
  if cell.status == "FAILED":
    return "FAILED"
  if not cell.ok:
    return "n/a"
  return figure + mark + (NOISY_MARK if cell.noisy else "")


# ---------------------------------------------------------------------------
# Tables.

def codec_table(rows: Sequence["codec_bench.CodecRow"], op: str,
                impl_names: Sequence[str]) -> List[str]:
  rows = [r for r in rows if r.op == op]
  if not rows:
    return []
  notes = Notes()
  head = ["dtype", "size"] + [IMPL_TITLES[i] for i in impl_names]
  ratio_cols = [("native/up", "native", "upstream"), ("pure/up", "pure", "upstream"),
                ("native/memcpy", "memcpy", "native")]
  head += [c[0] for c in ratio_cols]
  table = [head]
  for row in rows:
    line = [row.kind, row.size]
    for impl in impl_names:
      cell = row.cells.get(impl)
      if row.scalar and impl == "memcpy":
        line.append("-")  # no array bytes to copy
        continue
      if cell is not None:
        notes.cell(f"{op} {row.kind} {row.size}", impl, cell)
      view = row.is_view(impl)
      notes.views |= view and cell is not None and cell.ok
      figure = fmt_time(row.median(impl)) if row.scalar else fmt_rate(row.mb_per_s(impl))
      line.append(cell_text(cell, figure, VIEW_MARK if view else ""))
    line.append(fmt_ratio(row.ratio("native", "upstream")))
    line.append(fmt_ratio(row.ratio("pure", "upstream")))
    # native as a share of memcpy's bandwidth: memcpy's time / native's time.
    if row.is_view("native"):
      line.append("view")
    else:
      memcpy_share = None if row.scalar else row.ratio("memcpy", "native")
      line.append(fmt_pct(None if memcpy_share is None else 1 / memcpy_share))
    table.append(line)
  if any(r.dtype in cases_lib.VARINT for r in rows):
    notes.extra.append("        _full: uniform over the dtype's range (negatives of signed types "
                       "take 10 bytes each on the wire); _small: 0..127 (1 byte each)")
  title = (f"Codec {codec_bench.OP_TITLES[op]}\n"
           "  MB/s of array data (1 MB = 1e6 B; sizes: 1KB = 1024 B), median of the passes; "
           "scalars in microseconds per call")
  return [title, ""] + ["  " + line for line in aligned(table, "ll" + "r" * (len(head) - 2))] \
      + _indent(notes.lines())


def _indent(lines: List[str]) -> List[str]:
  return ["  " + line for line in lines] if lines else []


_E2E_COLUMNS = {"ceiling": "ceiling", "raw_ours": "raw->ours", "raw_copy": "raw+copy",
                "fast": "fast", "fast_zc": "fast zc", "upstream": "upstream",
                "shm_raw": "shm raw", "shm_fast": "shm fast", "shm_fast_zc": "shm fast zc",
                "pingpong": "ping-pong", "memcpy": "memcpy"}


def e2e_table(cases: Sequence["e2e.E2ECase"], passes: int) -> List[str]:
  if not cases:
    return []
  notes = Notes()
  head = ["observation", "bytes/step"] + [_E2E_COLUMNS[name] for name in e2e.GRPC_CLIENTS] \
      + ["fast/up", "zc/up"]
  table = [head]
  for case in cases:
    line = [case.label, f"{case.response_bytes:,}" if case.response_bytes else "-"]
    for name in e2e.GRPC_CLIENTS:
      cell = case.cells.get(name)
      if cell is not None:
        notes.cell(case.label, name, cell)
      rate = case.steps_per_s(name)
      figure = "-" if rate is None else f"{rate:,.0f}/s"
      share = case.of_ceiling(name)
      if name != "ceiling" and share is not None:
        figure += f" ({fmt_pct(share)})"
      line.append(cell_text(cell, figure))
    for name in ("fast", "fast_zc"):
      line.append(fmt_ratio(case.speedup(name, "upstream")))
    table.append(line)
  title = ("End to end: steps/s over loopback gRPC, median of the passes; (%) of the ceiling and "
           "x/up paired pass by pass\n"
           "  ceiling = raw stream against a server answering pre-serialised bytes; every other "
           "column against our server\n  (`dm-env-rpc-fast serve`, large-observation environment); "
           "raw+copy = raw->ours plus one copy of each\n  response: the least a client returning "
           "writable arrays (fast, as dm-env-rpc) can do")
  lines = [title, ""] + ["  " + line for line in aligned(table, "lr" + "r" * (len(head) - 2))]
  return lines + _indent(notes.lines()) + [""] + shm_table(cases)


def shm_table(cases: Sequence["e2e.E2ECase"]) -> List[str]:
  """The same-host shared-memory channel beside the gRPC ceiling and memcpy."""
  if not cases:
    return []
  notes = Notes()
  head = ["observation", "ceiling", "fast (gRPC)"] \
      + [_E2E_COLUMNS[name] for name in e2e.SHM_CLIENTS] + ["fast of memcpy", "zc of memcpy"]
  table = [head]
  for case in cases:
    line = [case.label]
    for name in ("ceiling", "fast") + e2e.SHM_CLIENTS:
      cell = case.cells.get(name)
      if cell is not None and name in e2e.SHM_CLIENTS:
        notes.cell(case.label, name, cell)
      rate = case.steps_per_s(name)
      figure = "-" if rate is None else f"{rate:,.0f}/s"
      share = case.of_ceiling(name)
      if name not in ("ceiling", "memcpy") and share is not None:
        figure += f" ({fmt_ratio(share)})"
      line.append(cell_text(cell, figure))
    for name in ("shm_fast", "shm_fast_zc"):
      line.append(fmt_pct(case.of_memcpy(name)))
    table.append(line)
  title = ("Same host, shared-memory channel (transport \"shm\", the default where both ends "
           "are dm_env_rpc_fast):\n  steps/s, median of the passes; (x) the gRPC ceiling's "
           "steps/s, paired; ping-pong = a 16-byte packet to another\n  process and back over a "
           "Unix socket, the wake-up floor of the channel (no memory, no server); memcpy = one\n"
           "  copy of the observation, no server; 'of memcpy' = observation bytes/s against "
           "memcpy's, paired")
  lines = [title, ""] + ["  " + line for line in aligned(table, "l" + "r" * (len(head) - 1))]
  return lines + _indent(notes.lines())


def shm_target_lines(cases: Sequence["e2e.E2ECase"]) -> List[str]:
  """The shared-memory channel's targets, judged on this run."""
  out = []
  for case in cases:
    ratio = case.of_ceiling("shm_fast")
    if ratio is None:
      continue
    verdict = "met" if ratio >= e2e.SHM_SPEEDUP_TARGET else "NOT met"
    out.append(f"  {case.label}: DmEnvAdaptor over shared memory >= "
               f"{e2e.SHM_SPEEDUP_TARGET:g}x the gRPC ceiling's steps/s: {fmt_ratio(ratio)}  {verdict}")
    if verdict != "met":
      bounds = [f"{_E2E_COLUMNS[name]} {fmt_ratio(case.of_ceiling(name))}"
                for name in ("shm_raw", "pingpong") if case.of_ceiling(name) is not None]
      if bounds:
        out.append(f"    (bounds in this run, x the ceiling: {', '.join(bounds)})")
  dtype, shape = e2e.SHM_BANDWIDTH_CASE
  case = next((c for c in cases if c.dtype == dtype and tuple(c.shape) == shape), None)
  if case is not None:
    for name, target in e2e.SHM_BANDWIDTH_TARGETS.items():
      share = case.of_memcpy(name)
      if share is None:
        continue
      verdict = "met" if share >= target else "NOT met"
      out.append(f"  {case.label}: {e2e.CLIENT_TITLES[name]} >= {target:.0%} of memcpy's "
                 f"bandwidth: {fmt_pct(share)}  {verdict}")
  return ["Shared-memory targets:"] + out if out else []


def server_cost_lines(cases: Sequence["e2e.E2ECase"]) -> List[str]:
  rows = [c for c in cases if c.server_cpu_per_step("raw_ours") or c.server_cpu_per_step("ceiling")]
  if not cases:
    return []
  if not rows:
    return ["Server cost: not measured (no per-process CPU clock here, or the raw clients failed)"]
  table = [["observation", "our server", "pre-serialised", "ours/pre-serialised"]]
  for case in rows:
    table.append([case.label, fmt_time(case.server_cpu_per_step("raw_ours")),
                  fmt_time(case.server_cpu_per_step("ceiling")), fmt_ratio(case.server_cost_ratio())])
  return (["Server cost: CPU time per step of the server process (all threads), both servers "
           "driven by the raw client", ""]
          + ["  " + line for line in aligned(table, "lrrr")])


def target_lines(cases: Sequence["e2e.E2ECase"]) -> List[str]:
  dtype, shape = e2e.TARGET_CASE
  case = next((c for c in cases if c.dtype == dtype and tuple(c.shape) == shape), None)
  if case is None:
    return []
  out = [f"Targets at {case.label}:"]
  ratio = case.server_cost_ratio()
  verdict = "-" if ratio is None else ("met" if ratio <= e2e.SERVER_COST_TARGET else "NOT met")
  out.append(f"  our server's CPU per step <= {e2e.SERVER_COST_TARGET}x the pre-serialised "
             f"server's: {'-' if ratio is None else f'{ratio:.2f}x'}  {verdict}")
  for name, title in (("fast", "DmEnvAdaptor"), ("fast_zc", "DmEnvAdaptor zero_copy=True")):
    share = case.of_ceiling(name)
    verdict = "-" if share is None else ("met" if share >= e2e.CLIENT_TARGET else "NOT met")
    out.append(f"  {title} against our server >= {e2e.CLIENT_TARGET:.0%} of the ceiling: "
               f"{'-' if share is None else f'{100 * share:.1f}%'}  {verdict}")
  bound = case.of_ceiling("raw_copy")
  if bound is not None:
    out.append(f"  (the raw stream to our server plus one copy of each response, the least any "
               f"client returning writable arrays does: {100 * bound:.1f}%)")
  shm = shm_target_lines(cases)
  return out + ([""] + shm if shm else [])


def _speedups(rows, impl, base, min_bytes=0):
  values = [r.ratio(impl, base) for r in rows
            if r.nbytes >= min_bytes and not r.scalar and not r.is_view(impl)]
  return [v for v in values if v is not None]


def _span(values, fmt) -> str:
  if len(values) == 1:
    return fmt(values[0])
  return f"{fmt(min(values))} to {fmt(max(values))}"


def _median(values, fmt) -> str:
  return f"median {fmt(statistics.median(values))}; " if len(values) > 1 else ""


def summary_lines(codec_rows: Sequence["codec_bench.CodecRow"],
                  cases: Sequence["e2e.E2ECase"], upstream_note: Optional[str] = None) -> List[str]:
  """Where the library stands, in a few lines (and upstream_note, if given, last)."""
  out = []
  for op in codec_bench.OPS:
    rows = [r for r in codec_rows if r.op == op]
    for impl in impls.BACKENDS:
      ups = _speedups(rows, impl, "upstream")
      views = any(r.is_view(impl) for r in rows)
      if ups:
        out.append(f"  codec {op:<6} {impl:<6} {_span(ups, fmt_ratio)} dm-env-rpc's speed "
                   f"({_median(ups, fmt_ratio)}{len(ups)} array cells"
                   f"{', views left out' if views else ''})")
    shares = [1 / v for v in _speedups([r for r in rows if r.dtype in cases_lib.COPIED_FIXED_WIDTH],
                                       "memcpy", "native", min_bytes=cases_lib.BULK_BYTES)]
    if shares:
      out.append(f"  codec {op:<6} native {_span(shares, fmt_pct)} of memcpy's bandwidth "
                 f"({_median(shares, fmt_pct)}float32/float64 arrays >= 64KB)")
  for case in cases:
    parts = []
    for name in ("fast", "fast_zc", "upstream"):
      share = case.of_ceiling(name)
      if share is not None:
        parts.append(f"{name} {fmt_pct(share)}")
    speedup = case.speedup("fast", "upstream")
    if parts:
      extra = f"; fast = {fmt_ratio(speedup)} dm-env-rpc's steps/s" if speedup else ""
      out.append(f"  e2e {case.label}: {', '.join(parts)} of the ceiling{extra}")
    shm = [f"{name} {fmt_ratio(case.of_ceiling(name))}" for name in ("shm_fast", "shm_fast_zc")
           if case.of_ceiling(name) is not None]
    if shm:
      out.append(f"  e2e {case.label} over shared memory: {', '.join(shm)} the gRPC ceiling's "
                 f"steps/s ({fmt_pct(case.of_memcpy('shm_fast'))} of memcpy's bandwidth)")
  if upstream_note:
    out.append(f"  {upstream_note}")
  return ["Summary"] + out if out else []
