"""Runs the differential fuzzer (tests/fuzz_differential.py) for a bounded time.

Usage: python tools/fuzz_differential.py [--seconds 60] [--backend both|native|pure]
                                         [--seed N] [--out build/fuzz/differential]

Each generated input is decoded as a Tensor, an EnvironmentRequest step and an
EnvironmentResponse step by the chosen backends (both zero_copy settings) and
compared with protobuf's reading (and, with both backends, with each other).
Findings are written to OUT/finding-<n>.bin with the error beside them; the
exit status is 1 if there are any.  Prints the number of inputs and decodes run.
"""

import argparse
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
try:
  import dm_env_rpc_fast  # noqa: F401  (the installed package, if there is one)
except ImportError:
  sys.path.insert(0, ROOT)  # else the source tree, as pytest's pythonpath does

import fuzz_differential  # noqa: E402
from conftest import load_backend  # noqa: E402


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seconds", type=float, default=60.0)
  parser.add_argument("--backend", choices=("both", "native", "pure"), default="both")
  parser.add_argument("--seed", type=int, default=None)
  parser.add_argument("--out", default=os.path.join(ROOT, "build", "fuzz", "differential"))
  args = parser.parse_args()
  seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
  names = ["native", "pure"] if args.backend == "both" else [args.backend]
  backends = [load_backend(name) for name in names]
  os.makedirs(args.out, exist_ok=True)
  found = []

  def on_finding(buf, error):
    path = os.path.join(args.out, f"finding-{len(found)}.bin")
    with open(path, "wb") as f:
      f.write(buf)
    with open(path + ".txt", "w") as f:
      f.write(f"{error}\n")
    found.append(path)
    print(f"FINDING {path}: {str(error)[:300]}", flush=True)

  start = time.monotonic()
  inputs, decodes, findings = fuzz_differential.fuzz(
      backends, seed, seconds=args.seconds, on_finding=on_finding)
  took = time.monotonic() - start
  print(f"differential fuzz ({'+'.join(names)}, seed {seed}): {inputs} inputs, "
        f"{decodes} decodes compared with protobuf in {took:.0f}s, {findings} findings")
  return 1 if findings else 0


if __name__ == "__main__":
  sys.exit(main())
