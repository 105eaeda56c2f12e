"""`dm-env-rpc-fast bench`: dm_env_rpc_fast measured against dm-env-rpc and the limits.

Run it as `dm-env-rpc-fast bench` (or `python -m dm_env_rpc_fast bench`);
`--help` lists the options.  Two sections, each side by side in one run:

- codec: encode and decode MB/s per dtype and size for the native and pure
  backends, dm-env-rpc's `tensor_utils` (when installed), protobuf alone and
  memcpy (`codec_bench`, `impls`, `cases`);
- end to end: steps/s of `DmEnvAdaptor.step` over loopback gRPC against
  `dm-env-rpc-fast serve` in another process, with the raw gRPC stream against
  a server answering pre-serialised bytes as the ceiling, and the servers' CPU
  time per step (`e2e`, `raw_server`).

`timing` holds the measurement rules (warm-up, interleaved passes, medians,
spreads, checks); `tables` what the run prints, `jsonfile` and `plot` what it
writes, `progress` its progress bar and `environment` the machine and versions
it reports.  The repository's `bench/` pytest-benchmark suites share `cases`
and `impls`.
"""

from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Runs the harness with command-line arguments `argv`; returns the exit status."""
  from dm_env_rpc_fast.benchmark import _main  # pylint: disable=import-outside-toplevel
  return _main.main(argv)


__all__ = ["main"]
