"""`dm-env-rpc-fast bench`: its arguments, its rules of measurement, its output and JSON.

These test the harness's logic, never its speed: nothing here asserts a time.
The real runs are tiny (one dtype, one size, a 16x16 observation, short
passes) and pass --no-prime-allocator, so that the test process keeps glibc's
usual allocator settings.
"""

import importlib.util
import io
import json
import os
import re
import statistics
import sys

import numpy as np
import pytest

from dm_env_rpc_fast import cli
from dm_env_rpc_fast.benchmark import _main
from dm_env_rpc_fast.benchmark import cases
from dm_env_rpc_fast.benchmark import codec_bench
from dm_env_rpc_fast.benchmark import e2e
from dm_env_rpc_fast.benchmark import environment
from dm_env_rpc_fast.benchmark import impls
from dm_env_rpc_fast.benchmark import plot
from dm_env_rpc_fast.benchmark import progress
from dm_env_rpc_fast.benchmark import tables
from dm_env_rpc_fast.benchmark import timing


def native_built() -> bool:
  """Whether the harness must measure the native backend in this installation.

  Always, as everywhere in the suite, except in a pure installation (the pure
  wheel: DM_ENV_RPC_FAST_PURE set and no extension), where the harness must
  show it as not installed instead.
  """
  if os.environ.get("DM_ENV_RPC_FAST_PURE", "") in ("", "0"):
    return True
  return importlib.util.find_spec("dm_env_rpc_fast._native") is not None


def upstream_imports() -> bool:
  """Whether dm-env-rpc imports here.  It is in the test extra, but its generated
  code needs protobuf >= 5.29, so at the floors (protobuf 5.26) it cannot; the
  harness must then show it as not installed.  CI's main stage checks separately
  that the harness measured it."""
  try:
    importlib.import_module("dm_env_rpc.v1.tensor_utils")
  except Exception:  # pylint: disable=broad-except
    return False
  return True


def expected_status(impl: str) -> str:
  if impl == "native" and not native_built():
    return "not installed"
  if impl == "upstream" and not upstream_imports():
    return "not installed"
  return "ok"


def measured_cells(ops: int = 2) -> int:
  return ops * sum(expected_status(impl) == "ok" for impl in impls.IMPLS)

TINY = ["--quick", "--dtypes", "float32", "--sizes", "1KB", "--passes", "2", "--seconds", "0.002",
        "--no-progress", "--no-prime-allocator"]
TINY_E2E = ["--observations", "float32:16x16", "--e2e-seconds", "0.01"]


def run(argv):
  """Runs the harness in this process; returns (status, stdout text, stderr text)."""
  out, err = io.StringIO(), io.StringIO()
  status = _main.main(argv, out=out, err=err)
  return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------
# Arguments.

def test_default_mode_is_the_representative_subset():
  args = _main.parse_args([])
  assert args.mode == "default"
  assert args.kinds == [("float32", ""), ("float64", ""), ("uint8", ""), ("int32", "full")]
  assert args.size_labels == ["scalar", "1KB", "64KB", "1MB", "8MB"]
  assert ("float32", (256, 256, 3)) in args.observation_cases
  assert args.passes == _main.MODES["default"]["passes"]
  assert args.e2e_passes == _main.MODES["default"]["e2e_passes"]


def test_full_mode_covers_every_dtype_and_the_pytest_sizes():
  args = _main.parse_args(["--full"])
  assert {dtype for dtype, _ in args.kinds} == set(cases.DTYPES)
  assert ("int64", "small") in args.kinds and ("int64", "full") in args.kinds
  assert args.size_labels == list(cases.SIZES)


def test_dtypes_sizes_and_observations_are_parsed_and_normalised():
  args = _main.parse_args(["--dtypes", "float32, int32_small,uint64", "--sizes", "scalar,1kb,8MiB,84X84x3",
                           "--observations", "uint8:84x84x3,float64:10", "--passes", "4"])
  assert args.kinds == [("float32", ""), ("int32", "small"), ("uint64", "full")]
  assert args.size_labels == ["scalar", "1KB", "8MB", "84x84x3"]
  assert args.observation_cases == [("uint8", (84, 84, 3)), ("float64", (10,))]
  assert args.passes == 4 and args.e2e_passes == 4  # --passes sets both sections


@pytest.mark.parametrize("argv, message", [
    (["--dtypes", "float16"], "dtype 'float16'"),
    (["--dtypes", "float32_small"], "only int32/int64/uint32/uint64 have variants"),
    (["--sizes", "12 parsecs"], "size '12 parsecs'"),
    (["--sizes", "0KB"], "more than 0 bytes"),
    (["--observations", "float32"], "DTYPE:SHAPE"),
    (["--passes", "0"], "at least 1"),
    (["--seconds", "-1"], "must be positive"),
    (["--quick", "--full"], "not allowed with"),
    (["--no-codec", "--no-e2e"], "nothing to measure"),
    (["--dtypes", ""], "at least one item"),
    (["--bogus"], "unrecognized arguments"),
])
def test_usage_errors_exit_2_with_a_message(capsys, argv, message):
  status, out, _ = run(argv)
  assert status == 2
  assert out == ""  # nothing measured
  assert message in capsys.readouterr().err


def test_a_bad_polling_setting_is_a_usage_error_before_anything_runs(capsys, monkeypatch):
  monkeypatch.setenv("DM_ENV_RPC_FAST_SPIN_US", "fast")
  status, out, _ = run(TINY + TINY_E2E)
  assert status == 2 and out == ""
  assert "DM_ENV_RPC_FAST_SPIN_US must be" in capsys.readouterr().err
  status, out, _ = run(TINY + ["--no-e2e"])  # the codec alone never reads it
  assert status == 0 and "not a valid setting" in out


def test_help_through_the_command_line_entry_point(capsys):
  assert cli.main(["bench", "--help"]) == 0
  text = capsys.readouterr().out
  for option in ("--quick", "--full", "--dtypes", "--sizes", "--json", "--plot", "--no-upstream"):
    assert option in text


def test_plot_without_matplotlib_says_how_to_install_it(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
  status, out, err = run(TINY + ["--no-e2e", "--plot", str(tmp_path / "p.png")])
  assert status == 2
  assert 'pip install "dm-env-rpc-fast[plot]"' in err
  assert out == ""  # refused before measuring anything
  assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------------------
# Cases and checks.

def test_sizes_and_shapes():
  assert cases.parse_size("64k") == "64KB"
  assert cases.shape_of("float32", "1KB") == (256,)
  assert cases.shape_of("float64", "1MB") == (131072,)
  assert cases.shape_of("uint8", "84x84x3") == (84, 84, 3)
  assert cases.shape_of("int32", "scalar") == ()
  assert cases.size_bytes("8MB", "float64") == 8 << 20


def test_case_data_is_deterministic_and_its_wire_bytes_are_protobufs():
  a, b = cases.Case("int64", "full", "1KB"), cases.Case("int64", "full", "1KB")
  np.testing.assert_array_equal(a.array, b.array)
  assert a.array.min() < 0  # full-range data has negatives
  assert cases.Case("int64", "small", "1KB").array.max() < 128
  assert a.wire == cases.reference_message(a.array).SerializeToString()
  scalar = cases.Case("float32", "", "scalar")
  assert isinstance(scalar.value, np.float32) and scalar.nbytes == 4


@pytest.mark.parametrize("result, reason", [
    (np.zeros(3, np.float64), "dtype float64 instead of float32"),
    (np.zeros(4, np.float32), "shape (4,) instead of (3,)"),
    (np.array([0, 1, 5], np.float32), "1 of 3 elements differ, the first at flat index 2"),
    ([0.0, 1.0, 2.0], "not a numpy array"),
])
def test_check_array_says_what_is_wrong(result, reason):
  with pytest.raises(cases.CheckFailed, match=reason.replace("(", r"\(").replace(")", r"\)")):
    cases.check_array(result, np.arange(3, dtype=np.float32))


def test_check_bytes_names_the_first_difference():
  with pytest.raises(cases.CheckFailed, match="first difference at offset 2"):
    cases.check_bytes(b"abXd", b"abcd")
  cases.check_bytes(b"abcd", b"abcd")


# ---------------------------------------------------------------------------
# The rules of measurement.

def test_spread_is_max_over_min_and_flags_disagreeing_passes():
  steady, noisy = timing.Cell(), timing.Cell()
  steady.samples = [1.0, 1.1, 1.2]
  noisy.samples = [1.0, 1.0, 1.31]
  assert steady.spread == pytest.approx(1.2) and not steady.noisy
  assert noisy.spread == pytest.approx(1.31) and noisy.noisy
  assert noisy.median == 1.0


def test_paired_ratio_compares_pass_by_pass():
  # A slow second pass hits both sides: paired, the ratio stays 2.
  assert timing.paired_ratio([2.0, 20.0, 2.0], [1.0, 10.0, 1.0]) == 2.0
  assert timing.paired_ratio([1.0], [1.0, 2.0]) is None


class _Counter:
  def __init__(self):
    self.calls = 0

  def __call__(self):
    self.calls += 1
    return self.calls


def test_measure_group_warms_up_checks_and_times_every_member():
  seen = []
  fn = _Counter()
  cells = timing.measure_group(
      {"a": impls.Call(fn, seen.append), "b": impls.Unavailable("not installed", "why not")},
      passes=3, pass_seconds=0.001, warmup_seconds=0.001)
  a, b = cells["a"], cells["b"]
  assert a.ok and len(a.samples) == 3 and a.calls_per_pass >= 1
  assert seen[0] == 1 and seen[-1] == fn.calls  # the first and the last result were checked
  assert fn.calls >= 1 + 2 + 3 * a.calls_per_pass  # check, warm-up, passes
  assert (b.status, b.reason, b.samples) == ("not installed", "why not", [])


def test_a_wrong_result_is_a_failed_cell_not_a_dropped_one():
  def wrong_check(result):
    raise cases.CheckFailed("decoded 1 instead of 2")

  def raises():
    raise ValueError("boom")

  cells = timing.measure_group({"wrong": impls.Call(lambda: 1, wrong_check),
                                "raises": impls.Call(raises, lambda r: None)},
                               passes=2, pass_seconds=0.001)
  assert cells["wrong"].status == "FAILED"
  assert cells["wrong"].reason == "wrong result: decoded 1 instead of 2"
  assert cells["raises"].reason == "raised ValueError: boom"
  assert cells["wrong"].median is None and cells["wrong"].to_json()["status"] == "FAILED"


def test_a_result_that_goes_wrong_after_the_warm_up_fails_the_cell():
  fn = _Counter()

  def check(result):
    if result > 3:
      raise cases.CheckFailed("went wrong in steady state")

  cell = timing.measure_group({"late": impls.Call(fn, check)}, passes=2, pass_seconds=0.001,
                              warmup_seconds=0.0)["late"]
  assert cell.status == "FAILED" and "steady state" in cell.reason


def test_process_cpu_clock_reads_a_growing_cpu_time():
  import os
  clock = timing.process_cpu_clock(os.getpid())
  if clock is None:
    pytest.skip("no per-process CPU clock on this OS")
  before = clock()
  sum(i * i for i in range(200_000))
  assert clock() > before


@pytest.mark.parametrize("op", ["encode", "decode", "decode_zc"])
@pytest.mark.parametrize("impl", impls.IMPLS)
def test_every_implementation_passes_its_own_check(op, impl):
  case = cases.Case("float64", "", "1KB")
  try:
    call = impls.make_call(op, impl, case)
  except impls.Unavailable as e:
    if expected_status(impl) != "ok" and not (op == "decode_zc" and impl not in impls.BACKENDS):
      assert str(e).startswith("not installed"), e
      return
    assert op == "decode_zc" and impl not in impls.BACKENDS, e
    return
  assert expected_status(impl) == "ok", f"{impl} is measured in a pure installation"
  call.check(call.fn())


def test_copying_decode_that_returns_a_view_fails_the_ownership_check():
  case = cases.Case("float32", "", "1KB")
  view = np.frombuffer(case.wire, np.float32, count=256, offset=len(case.wire) - 1024)
  with pytest.raises(cases.CheckFailed, match="not a writable copy"):
    cases.check_ownership(view, case, zero_copy=False)


# ---------------------------------------------------------------------------
# Real (tiny) runs.

def test_tiny_codec_run_prints_every_implementation(backend):
  status, out, _ = run(TINY + ["--no-e2e"])
  assert status == 0, out
  assert f"live backend {backend}" in out
  for line in ("machine", "python", "library", "upstream", "allocator"):
    assert f"  {line} " in out
  for impl in impls.IMPLS:
    assert impl in out
  assert "Codec encode" in out and "Codec decode" in out
  native_figure = r"[0-9,.]+~?" if native_built() else "n/a"
  assert re.search(rf"^  float32 +1KB +{native_figure} +[0-9,.]+~? ", out, re.MULTILINE)
  assert f"all {measured_cells()} measured cells passed their checks" in out
  if measured_cells() < 10:  # a pure installation, or the floors: shown as not installed
    assert "not installed" in out


def test_tiny_run_with_end_to_end_writes_the_json(backend, tmp_path):
  path = tmp_path / "bench.json"
  status, out, _ = run(TINY + TINY_E2E + ["--json", str(path)])
  assert status == 0, out
  assert "float32 (16,16)" in out and "Server cost" in out
  data = json.loads(path.read_text())
  assert data["schema"] == "dm-env-rpc-fast-bench/1" and data["ok"] is True
  assert data["failures"] == []
  env = data["environment"]
  for key in ("cpu", "cpu_count", "os", "python", "numpy", "protobuf", "grpcio",
              "dm_env_rpc_fast", "backend", "dm_env_rpc"):
    assert key in env
  assert env["backend"] == backend
  # the run says whether its shared-memory waits polled (off unless asked for)
  polling = os.environ.get("DM_ENV_RPC_FAST_SPIN_US", "").strip()
  assert env["shm_polling_us"] == (int(polling) if polling else 0)
  assert ("waits block" in out) == (env["shm_polling_us"] == 0)
  assert data["settings"]["dtypes"] == ["float32"] and data["settings"]["sizes"] == ["1KB"]
  assert [row["op"] for row in data["codec"]] == ["encode", "decode"]
  for row in data["codec"]:
    assert row["array_bytes"] == 1024 and row["shape"] == [256]
    assert set(row["cells"]) == set(impls.IMPLS)
    for impl, cell in row["cells"].items():
      assert cell["status"] == expected_status(impl)
      if cell["status"] != "ok":
        continue
      assert len(cell["samples_s"]) == 2
      assert cell["median_s"] == pytest.approx(statistics.median(cell["samples_s"]))
      assert cell["spread"] >= 1.0 and cell["mb_per_s"] > 0
  [case] = data["e2e"]
  assert case["shape"] == [16, 16] and case["observation_bytes"] == 1024
  assert case["response_bytes"] > 1024
  assert set(case["clients"]) == set(e2e.CLIENTS)
  for name, client in case["clients"].items():
    expected = expected_status("upstream") if name == "upstream" else "ok"
    assert client["status"] == expected, (name, client["reason"])
    if expected != "ok":
      continue
    assert len(client["samples_s"]) == 2 and client["steps_per_s"] > 0
    assert client["server"] == e2e.SERVER_OF[name]
  assert case["clients"]["ceiling"]["of_ceiling"] == pytest.approx(1.0)


def test_a_wrong_decoder_is_reported_as_failed_and_fails_the_run(monkeypatch, tmp_path):
  real = impls.make_call

  def make_call(op, impl, case):
    call = real(op, impl, case)
    if op == "decode" and impl == "pure":
      return impls.Call(lambda: call.fn() + 1, call.check)  # every element off by one
    return call

  monkeypatch.setattr(impls, "make_call", make_call)
  path = tmp_path / "bench.json"
  status, out, _ = run(TINY + ["--no-e2e", "--json", str(path)])
  assert status == 1
  assert "FAILED  decode float32 1KB pure: wrong result: 256 of 256 elements differ" in out
  assert "1 cell(s) FAILED" in out
  data = json.loads(path.read_text())
  assert data["ok"] is False
  [failure] = data["failures"]
  assert failure.startswith("codec decode float32 1KB pure: wrong result: 256 of 256 elements "
                            "differ, the first at flat index 0")
  decode = next(row for row in data["codec"] if row["op"] == "decode")
  assert decode["cells"]["pure"]["status"] == "FAILED"
  for impl in ("native", "upstream", "protobuf", "memcpy"):  # the others still measured
    assert decode["cells"][impl]["status"] == expected_status(impl)


def test_missing_implementations_are_shown_with_the_reason(monkeypatch):
  monkeypatch.setattr(impls, "backend", lambda name: (None, "ImportError: no extension")
                      if name == "native" else (impls.importlib.import_module(
                          "dm_env_rpc_fast.codec._pure"), None))
  monkeypatch.setattr(impls, "upstream", lambda: (None, "ModuleNotFoundError: no dm_env_rpc"))
  monkeypatch.setattr(impls, "upstream_version", lambda: None)
  status, out, _ = run(TINY + ["--no-e2e"])
  assert status == 0  # not a failure: shown, with the reason
  assert "  upstream   dm-env-rpc not installed" in out
  assert "dm-env-rpc is not installed, so it was not compared: `pip install dm-env-rpc`" in out
  assert "native: not installed (ImportError: no extension)" in out
  assert "upstream: not installed (dm-env-rpc not installed (ModuleNotFoundError: no dm_env_rpc))" in out
  rows = [line.split() for line in out.splitlines() if line.strip().startswith("float32")]
  assert len(rows) == 2  # encode and decode
  for row in rows:  # dtype, size, native, pure, upstream, protobuf, memcpy, ratios
    assert row[2] == "n/a" and row[4] == "n/a"
    assert row[3] not in ("n/a", "FAILED") and row[7:9] == ["-", "-"]


def test_servers_that_do_not_start_fail_every_end_to_end_cell(monkeypatch):
  def broken(prime):
    raise RuntimeError("our server exited with status 1")

  monkeypatch.setattr(e2e, "start_servers", broken)
  status, out, _ = run(TINY + TINY_E2E + ["--no-codec"])
  assert status == 1
  for name in e2e.CLIENTS:
    assert f"e2e float32 (16,16) {name}: servers did not start: our server exited" in out


# ---------------------------------------------------------------------------
# Presentation.

def test_codec_table_marks_noisy_failed_and_view_cells():
  case = cases.Case("uint8", "", "1KB")
  row = codec_bench.CodecRow("decode", case)
  for impl in impls.IMPLS:
    row.cells[impl] = timing.Cell()
    row.cells[impl].samples = [1e-6, 1e-6]
  row.cells["pure"].samples = [1e-6, 2e-6]
  row.cells["upstream"] = timing.Cell("FAILED", "wrong result: x")
  lines = tables.codec_table([row], "decode", impls.IMPLS)
  text = "\n".join(lines)
  data_line = next(line for line in lines if line.strip().startswith("uint8"))
  assert data_line.split()[2:5] == ["1,024v", "683v~", "FAILED"]
  assert "FAILED  decode uint8 1KB upstream: wrong result: x" in text
  assert "passes disagree" in text and "a view of the wire bytes" in text


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_draws_only_on_a_terminal():
  tty, pipe = _Tty(), io.StringIO()
  for stream in (tty, pipe):
    bar = progress.Progress(10.0, stream)
    bar.advance(5.0, "codec float32 1KB")
    bar.draw(force=True)
    bar.clear()
  assert "\r[############............]  50%" in tty.getvalue()
  assert "codec float32 1KB" in tty.getvalue()
  assert tty.getvalue().endswith("\r")
  assert pipe.getvalue() == ""
  off = _Tty()
  progress.Progress(1.0, off, enabled=False).advance(1.0, "x")
  assert off.getvalue() == ""


def test_plot_writes_a_png(tmp_path):
  # matplotlib is in the test extra: --plot is tested for real, not skipped.
  rows = []
  for size in ("1KB", "64KB"):
    for op in codec_bench.OPS:
      row = codec_bench.CodecRow(op, cases.Case("float32", "", size))
      for impl in impls.IMPLS:
        row.cells[impl] = timing.Cell()
        row.cells[impl].samples = [1e-5]
      rows.append(row)
  path = tmp_path / "plot.png"
  plot.write(str(path), rows, [], environment.probe())
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_c_stops_the_run_with_status_130(monkeypatch):
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(codec_bench, "run_case", interrupted)
  status, _, err = run(TINY + ["--no-e2e"])
  assert status == 130
  assert "interrupted" in err


def test_targets_are_judged_on_paired_ratios():
  case = e2e.E2ECase("float32", (256, 256, 3))
  # (samples: seconds per step, probe: server CPU seconds per step), two passes each;
  # the second pass is twice as slow for everyone, which pairing cancels.
  for name, samples, probe in [("ceiling", [1.0, 2.0], [1.0, 2.0]),
                               ("raw_ours", [1.1, 2.2], [1.6, 3.2]),
                               ("fast", [1.18, 2.36], [1.0, 1.0]),
                               ("fast_zc", [1.1, 2.2], [1.0, 1.0]),
                               ("raw_copy", [1.25, 2.5], [1.6, 3.2])]:
    cell = timing.Cell()
    cell.samples, cell.probe_samples = samples, probe
    case.cells[name] = cell
  assert case.server_cost_ratio() == pytest.approx(1.6)
  assert case.of_ceiling("fast") == pytest.approx(1 / 1.18)
  lines = tables.target_lines([case])
  assert lines[0] == "Targets at float32 (256,256,3):"
  assert lines[1].endswith("the pre-serialised server's: 1.60x  NOT met")
  assert lines[2].endswith(">= 85% of the ceiling: 84.7%  NOT met")
  assert lines[3].endswith(">= 85% of the ceiling: 90.9%  met")
  assert lines[4].endswith("the least any client returning writable arrays does: 80.0%)")
  assert len(lines) == 5
  assert tables.target_lines([e2e.E2ECase("float32", (16, 16))]) == []  # not the target case
