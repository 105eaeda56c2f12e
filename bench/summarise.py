#!/usr/bin/env python3
"""Turns a pytest-benchmark JSON of bench/ into the Markdown tables we report.

Usage:
  pytest bench/ --benchmark-only --benchmark-json /tmp/bench.json
  python bench/summarise.py /tmp/bench.json

Per case: the median time, throughput (array bytes / median), speed-up over
upstream dm-env-rpc, % of memcpy bandwidth for the same bytes, and the spread
(IQR / median) as a noise gauge.  Cases that carry a performance target are
marked PASS or FAIL; a summary of every target closes the output.  Reads only
the JSON (the `extra_info` the benchmarks record) and the harness's tables of
dtypes and operations (`dm_env_rpc_fast.benchmark`), so it runs wherever
dm_env_rpc_fast imports.
"""

import argparse
import json
import sys

from dm_env_rpc_fast.benchmark.cases import BULK_BYTES, COPIED_FIXED_WIDTH, FIXED_WIDTH, VARINT
from dm_env_rpc_fast.benchmark.impls import OPS

NOISY = 0.25  # IQR/median above this: the verdict may be the machine's, not the code's
CODEC_OPS = OPS + ("memcpy",)  # the codec's operations, and the alignment suite's memcpy baselines
SECTIONS = (
    ("encode", "Encode (value -> wire bytes)"),
    ("decode", "Decode, copying (wire bytes -> array; the default)"),
    ("decode_zc", "Decode, zero_copy=True"),
    ("offsets", "Native encode with the source at a byte offset from a 4096-aligned address"),
    ("memcpy", "memcpy baselines (np.copyto between preallocated buffers)"),
)


class Row:
  """One benchmark: its identity (from extra_info) and its statistics."""

  def __init__(self, bench):
    info = bench["extra_info"]
    stats = bench["stats"]
    self.id = bench["name"].split("[", 1)[-1].rstrip("]")
    self.op = info["op"]
    self.dtype = info["dtype"]
    self.variant = info.get("variant", "")
    self.size = info["size"]
    self.impl = info["impl"]
    self.nbytes = info["nbytes"]
    self.offset = info.get("offset")
    self.dst_offset = info.get("dst_offset", 0)
    # False when the benchmark's result check failed (the timing is still in
    # the JSON: pytest-benchmark keeps it, the assertion came afterwards).
    self.correct = info.get("correct", True)
    self.faults = info.get("faults_per_call")
    self.median = stats["median"]
    self.iqr = stats["iqr"]
    self.rounds = stats["rounds"]

  @property
  def section(self):
    if self.op == "encode" and self.offset is not None:
      return "offsets"
    return self.op

  @property
  def noisy(self):
    return self.median > 0 and self.iqr / self.median > NOISY

  @property
  def bulk(self):
    return self.nbytes >= BULK_BYTES

  @property
  def gbps(self):
    return self.nbytes / self.median / 1e9

  @property
  def case_key(self):
    # Upstream has one decode; zero-copy decodes are compared with it.
    op = "decode" if self.op == "decode_zc" else self.op
    return op, self.dtype, self.variant, self.size


class Context:
  """Lookups across rows: upstream's time and memcpy's time for a case."""

  def __init__(self, rows):
    self.upstream = {r.case_key: r.median for r in rows
                     if r.impl == "upstream" and r.offset is None}
    self.memcpy = {r.nbytes: r.median for r in rows
                   if r.impl == "memcpy" and r.offset == 0 and not r.dst_offset}

  def vs_upstream(self, row):
    """How many times faster than upstream (None if upstream did not run this case)."""
    base = self.upstream.get(row.case_key)
    return base / row.median if base is not None and row.impl != "memcpy" else None

  def of_memcpy(self, row):
    """Bandwidth as a fraction of page-aligned memcpy of the same bytes (None if unknown)."""
    if row.size == "scalar":
      return None
    base = self.memcpy.get(row.nbytes)
    return base / row.median if base is not None else None


# ---------------------------------------------------------------------------
# Targets (CODEC_SPEC.md, "Performance targets").  Each: which rows it judges,
# and whether a row meets it, with the figure it was judged on.

class Target:

  def __init__(self, name, short, applies, check):
    self.name, self.short, self.applies, self.check = name, short, applies, check


def _native(row, *ops):
  return row.impl == "native" and row.op in ops


# A check returns (ok, figure, margin): ok is None when the row cannot be
# judged; margin is how far inside the target the row is (1.0 = on the line),
# so the summary can name the case closest to failing.

def _pct_memcpy(row, ctx):
  frac = ctx.of_memcpy(row)
  if frac is None:
    return None, "no memcpy", None
  return frac >= 0.5, f"{frac * 100:.0f}% memcpy", frac / 0.5


def _gbps_at_least(floor):
  def check(row, ctx):
    return row.gbps >= floor, f"{row.gbps:.3g} GB/s", row.gbps / floor
  return check


def _time_below(limit_us, strict):
  def check(row, ctx):
    us = row.median * 1e6
    return (us < limit_us if strict else us <= limit_us), f"{us:.2f} us", limit_us / us
  return check


def _speedup_at_least(floor):
  def check(row, ctx):
    ratio = ctx.vs_upstream(row)
    if ratio is None:
      return None, "no upstream", None
    return ratio >= floor, f"{ratio:.3g}x upstream", ratio / floor
  return check


TARGETS = (
    Target("native fixed-width encode >= 50% memcpy (>= 64 KiB, every offset)", ">= 50% memcpy",
           lambda r: _native(r, "encode") and r.dtype in FIXED_WIDTH and r.bulk,
           _pct_memcpy),
    Target("native zero_copy decode < 2 us", "< 2 us",
           lambda r: _native(r, "decode_zc"), _time_below(2.0, strict=True)),
    Target("native copying decode >= 50% memcpy (float32/64, >= 64 KiB)", ">= 50% memcpy",
           lambda r: _native(r, "decode") and r.dtype in COPIED_FIXED_WIDTH and r.bulk
           and r.size != "scalar", _pct_memcpy),
    Target("native varint kinds >= 1 GB/s each way (>= 64 KiB)", ">= 1 GB/s",
           lambda r: _native(r, "encode", "decode") and r.dtype in VARINT and r.bulk
           and r.offset is None, _gbps_at_least(1.0)),
    Target("native bool >= 5 GB/s each way (>= 64 KiB)", ">= 5 GB/s",
           lambda r: _native(r, "encode", "decode") and r.dtype == "bool" and r.bulk,
           _gbps_at_least(5.0)),
    Target("native scalar <= 1 us each way", "<= 1 us",
           lambda r: _native(r, "encode", "decode") and r.size == "scalar",
           _time_below(1.0, strict=False)),
    Target("pure >= 10x upstream at (84,84,3), every numeric dtype", ">= 10x upstream",
           lambda r: r.impl == "pure" and r.op in ("encode", "decode") and r.size == "84x84x3",
           _speedup_at_least(10.0)),
    Target("pure never slower than upstream, any size", ">= upstream",
           lambda r: r.impl == "pure" and r.op in ("encode", "decode"),
           _speedup_at_least(1.0)),
)


def judge(rows, ctx):
  """{row id: [(target, ok, figure, margin)]} for every row a target applies to."""
  verdicts = {}
  for row in rows:
    for target in TARGETS:
      if target.applies(row):
        ok, figure, margin = target.check(row, ctx)
        if not row.correct:
          ok, figure, margin = False, "wrong result", 0.0
        verdicts.setdefault(row.id, []).append((target, ok, figure, margin))
  return verdicts


# ---------------------------------------------------------------------------
# Formatting.

def fmt_time(seconds):
  for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
    if seconds >= scale:
      return f"{seconds / scale:.3g} {unit}"
  return f"{seconds * 1e9:.3g} ns"


def fmt_status(ok):
  return "n/a" if ok is None else ("PASS" if ok else "**FAIL**")


def case_table(rows, ctx, verdicts):
  lines = ["| case | median | GB/s | vs upstream | % memcpy | spread | faults | target |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
  for row in rows:
    ratio = ctx.vs_upstream(row)
    frac = ctx.of_memcpy(row)
    marks = "; ".join(f"{fmt_status(ok)} {target.short}"
                      for target, ok, _, _ in verdicts.get(row.id, ()))
    if marks and row.noisy:
      marks += " (noisy)"
    if not row.correct:
      marks = "**WRONG RESULT** " + marks
    lines.append("| {} | {} | {} | {} | {} | {:.0f}% | {} | {} |".format(
        row.id, fmt_time(row.median),
        "—" if row.size == "scalar" else f"{row.gbps:.3g}",
        "—" if ratio is None else f"{ratio:.3g}x",
        "—" if frac is None else f"{frac * 100:.3g}%",
        100 * row.iqr / row.median if row.median else 0.0,
        "—" if row.faults is None else f"{row.faults:.0f}",
        marks))
  return lines


def target_table(rows, verdicts):
  by_id = {row.id: row for row in rows}
  lines = ["| target | status | cases | pass | fail | worst / failing cases |",
           "|---|---|---:|---:|---:|---|"]
  for target in TARGETS:
    judged = [(by_id[rid], ok, fig, margin) for rid, vs in verdicts.items()
              for t, ok, fig, margin in vs if t is target and ok is not None]
    if not judged:
      lines.append(f"| {target.name} | NOT MEASURED | 0 | 0 | 0 | |")
      continue
    failed = [(row, fig) for row, ok, fig, _ in judged if not ok]
    if failed:
      shown = ", ".join(f"{row.id} ({fig}{', noisy' if row.noisy else ''})"
                        for row, fig in failed[:8])
      if len(failed) > 8:
        shown += f", ... {len(failed) - 8} more"
    else:
      row, _, fig, _ = min(judged, key=lambda j: j[3])
      shown = f"closest: {row.id} ({fig})"
    lines.append("| {} | {} | {} | {} | {} | {} |".format(
        target.name, "PASS" if not failed else "**FAIL**", len(judged),
        len(judged) - len(failed), len(failed), shown))
  return lines


def other_table(benches):
  """pack_tensor / unpack_tensor and end-to-end steps: median, rate, ratio to upstream."""
  def impl(bench):
    info = bench.get("extra_info", {})
    return info.get("impl") or info.get("client")

  upstream = {b.get("group"): b["stats"]["median"] for b in benches if impl(b) == "upstream"}
  lines = ["| benchmark | median | per second | vs upstream | spread |",
           "|---|---:|---:|---:|---:|"]
  for bench in benches:
    median = bench["stats"]["median"]
    base = upstream.get(bench.get("group"))
    ratio = "—" if base is None or impl(bench) == "upstream" else f"{base / median:.3g}x"
    spread = bench["stats"]["iqr"] / median if median else 0.0
    lines.append(f"| {bench['name'].split('[', 1)[-1].rstrip(']')} | {fmt_time(median)} | "
                 f"{1 / median:,.0f} | {ratio} | {spread:.0%} |")
  return lines


def header(data, rows):
  machine = data.get("machine_info", {})
  ours = machine.get("dm_env_rpc_fast_bench", {})
  commit = data.get("commit_info", {})
  options = data["benchmarks"][0]["options"] if data.get("benchmarks") else {}
  cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
  backends = ", ".join(f"{k}: {v}" for k, v in ours.get("backends", {}).items())
  return [
      "## Codec benchmarks",
      "",
      f"- Run {data.get('datetime', '?')}, commit {commit.get('id', '?')}"
      f"{' (dirty tree)' if commit.get('dirty') else ''}",
      f"- Host: {cpu}, {ours.get('cpu_count', '?')} CPUs, "
      f"{machine.get('system', '?')} {machine.get('release', '')}, {ours.get('libc', '')}",
      f"- Python {machine.get('python_version', '?')}, numpy {ours.get('numpy', '?')}, "
      f"protobuf {ours.get('protobuf', '?')} ({ours.get('protobuf_api', '?')})",
      f"- Backends: {backends or '?'}",
      f"- Settings: warmup up to {options.get('warmup', '?')} iterations, "
      f"min_rounds {options.get('min_rounds', '?')}, max_time {options.get('max_time', '?')} s; "
      f"{len(rows)} benchmarks",
      "",
      "Times are medians over rounds (the machine is shared and noisy; `spread` is IQR/median;",
      f"verdicts on cases whose spread exceeds {NOISY:.0%} are marked noisy: re-run them).",
      "GB/s = bytes of array data / median, with GB = 1e9 bytes; sizes are array bytes",
      "(1KB = 1024 B, 1MB = 2^20 B) or a shape.  `vs upstream` = upstream's median / this",
      "median (decode_zc against upstream's decode).  `% memcpy` = page-aligned np.copyto of",
      "the same bytes / this median.  Varint `_full` = uniform over the dtype's range,",
      "`_small` = 0..127.  `faults` = minor page faults per call (3 calls after timing): non-zero",
      "means the time includes first-touch page faults (~1 GB/s here), i.e. memory the",
      "implementation allocated afresh (beyond what malloc kept) on every call.",
  ]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("json", help="file written by pytest --benchmark-json")
  args = parser.parse_args(argv)
  with open(args.json) as f:
    data = json.load(f)
  benches = data.get("benchmarks", [])
  rows = [Row(b) for b in benches if b.get("extra_info", {}).get("op") in CODEC_OPS]
  others = [b for b in benches if b.get("extra_info", {}).get("op") not in CODEC_OPS]
  if not rows and not others:
    sys.exit(f"{args.json}: no codec benchmarks in it (was it run with --benchmark-only?)")
  wrong = [row.id for row in rows if not row.correct]
  ctx = Context(rows)
  verdicts = judge(rows, ctx)
  out = header(data, rows)
  for section, title in SECTIONS:
    chosen = [r for r in rows if r.section == section]
    if chosen:
      out += ["", f"### {title}", ""] + case_table(chosen, ctx, verdicts)
  if others:
    out += ["", "### tensor_utils and end to end (upstream = dm-env-rpc in the same group)", ""]
    out += other_table(others)
  if rows:
    out += ["", "### Targets", ""] + target_table(rows, verdicts)
  if wrong:
    out += ["", f"**{len(wrong)} benchmark(s) returned a wrong result** (their times are shown "
            "but count as FAIL; see the pytest output): " + ", ".join(wrong)]
  print("\n".join(out))


if __name__ == "__main__":
  main()
