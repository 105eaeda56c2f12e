"""`dm-env-rpc-fast bench --vector`: the many-environments section runs, checks and reports."""
import io
import json

import pytest

from dm_env_rpc_fast.benchmark import _main
from dm_env_rpc_fast.benchmark import timing
from dm_env_rpc_fast.benchmark import vector_bench


def test_vector_section_measures_every_client_and_writes_json(tmp_path):
  path = tmp_path / "bench.json"
  out, err = io.StringIO(), io.StringIO()
  status = _main.main(["--quick", "--no-codec", "--no-e2e", "--vector", "--vector-counts", "1,2",
                       "--vector-observation", "float32:8x8x3", "--passes", "1", "--no-progress",
                       "--no-prime-allocator", "--json", str(path)], out=out, err=err)
  text = out.getvalue()
  assert status == 0, text + err.getvalue()
  assert "Many environments" in text and "batched/threads" in text
  data = json.loads(path.read_text())
  assert data["settings"]["vector"]["counts"] == [1, 2]
  cases = data["vector"]
  assert [case["n"] for case in cases] == [1, 2]
  for case in cases:
    assert set(case["clients"]) == set(vector_bench.CLIENTS)
    for name, cell in case["clients"].items():
      assert cell["status"] == "ok" and cell["samples_s"] and cell["steps_per_s"] > 0, (name, cell)
    assert case["batched_vs_one_loop"] > 0 and case["batched_vs_threads"] > 0
  # The target line is printed only for the default observation.
  assert "Target at N = 4" not in text


def test_a_wrong_observation_fails_the_cell_and_the_run(monkeypatch):
  # The checks are real: a client that decodes something else is FAILED, not timed.
  real = vector_bench.large_observation.pattern
  monkeypatch.setattr(vector_bench.large_observation, "pattern",
                      lambda *a, **k: real(*a, **k) + 1)
  case = vector_bench.VectorCase(2, "float32", (4, 3))
  servers = vector_bench.start_servers(2, prime=False)
  try:
    vector_bench.measure_case(case, [s.address for s in servers], passes=1, pass_seconds=0.02)
  finally:
    for s in servers:
      s.stop()
  assert {name: cell.status for name, cell in case.cells.items()} == {
      "batched": "FAILED", "threads": "FAILED", "one_loop": "FAILED"}
  assert all("wrong result" in cell.reason for cell in case.cells.values())
  assert vector_bench.failures([case])


def test_vector_options_are_checked():
  with pytest.raises(SystemExit):
    _main.parse_args(["--vector", "--vector-counts", "0"])
  with pytest.raises(SystemExit):
    _main.parse_args(["--vector", "--vector-observation", "float32"])
  args = _main.parse_args(["--no-codec", "--no-e2e", "--vector"])  # a vector-only run is allowed
  assert args.vector_n == list(vector_bench.COUNTS) and args.vector_passes == vector_bench.PASSES["default"]


def test_ratios_are_aggregate_steps_per_second_paired_by_pass():
  case = vector_bench.VectorCase(4, "float32", (84, 84, 3))
  for name, seconds_per_step in (("batched", [1e-4, 2e-4]), ("one_loop", [2e-4, 6e-4]),
                                 ("threads", [1e-4, 4e-4])):
    case.cells[name] = timing.Cell()
    case.cells[name].samples = seconds_per_step
  assert case.speedup("batched", "one_loop") == pytest.approx(2.5)  # median of 2x and 3x
  assert case.speedup("batched", "threads") == pytest.approx(1.5)  # median of 1x and 2x
  assert case.steps_per_s("batched") == pytest.approx(1 / 1.5e-4)
  lines = "\n".join(vector_bench.table_lines([case]))
  assert "Target at N = 4" in lines and "2.5x (met)" in lines and "1.5x (met)" in lines
