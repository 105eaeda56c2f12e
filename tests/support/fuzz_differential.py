"""Differential fuzzing of the decoders against protobuf, on both backends.

For each generated input and each decoder (Tensor, EnvironmentRequest step,
EnvironmentResponse step): when protobuf's parser accepts the bytes, the
decoder must return what upstream's unpacking of protobuf's reading gives
(values, dtypes, shapes); when it rejects them, the decoder must raise
ValueError (codec_reference.expect_* and check_decode hold those rules).
Both backends must also agree with each other exactly (flags and errors too).

Deliberate differences, left out by codec_reference rather than reported:
- a one-element payload broadcast past MAX_BROADCAST_BYTES is a ValueError
  (upstream would allocate it); broadcasts below that cap but over a few
  million elements are skipped (memory), as is a reshape with one dimension
  below -1 (numpy infers it; the codec refuses it: see Excluded);
- float32 signalling NaNs keep their bits (compared bit-exactly anyway).

Inputs: mutations (bit flips, byte edits, cuts, duplicated and spliced ranges,
interesting varints) of valid messages of every dtype, the same wrapped into
step messages, and plain random bytes.  Run by tests/test_differential_fuzz.py
(fixed seed, bounded count), and for a bounded time from tests/ as

    python -m support.fuzz_differential [--seconds 60] [--backend both|native|pure]
                                        [--seed N] [--out build/fuzz/differential]

which decodes each input with the chosen backends (both zero_copy settings),
compares with protobuf's reading (and, with both backends, each other), writes
findings to OUT/finding-<n>.bin with the error beside them, prints the number
of inputs and decodes run, and exits 1 if there were findings.
"""

import argparse
import os
import pathlib
import random
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
if __name__ == "__main__":
  try:
    import dm_env_rpc_fast  # noqa: F401  (the installed package, if there is one)
  except ImportError:  # Run from a checkout: use it.
    sys.path.insert(0, str(ROOT))

from support.agreement import assert_agree
from support.backends import load_backend
from support.codec_reference import (
    Excluded, as_action, as_observation, check_decode, compare_step_request,
    compare_step_response, compare_tensor, expect_step_request, expect_step_response,
    expect_tensor, varint)
from support.malformed import ALL_VALID

DECODERS = {
    "tensor": ("decode_tensor", expect_tensor, compare_tensor),
    "request": ("decode_step_request", expect_step_request, compare_step_request),
    "response": ("decode_step_response", expect_step_response, compare_step_response),
}

SEEDS = [buf for _, _, buf in ALL_VALID]
TENSOR_SEEDS = [buf for kind, _, buf in ALL_VALID if kind == "tensor"]
INTERESTING = [varint(v) for v in (0, 1, 127, 128, 2**31 - 1, 2**31, 2**32, 2**63, 2**64 - 1,
                                   -1, -(2**31))] + [b"\x80" * 10 + b"\x01", b"\xff" * 5,
                                                     b"\x03", b"\x04", b"\x7a", b"\x0a"]


def mutate(rng: random.Random, buf: bytes) -> bytes:
  data = bytearray(buf)
  for _ in range(rng.randint(1, 4)):
    op = rng.randrange(8)
    pos = rng.randint(0, len(data))
    if op == 0 and data:                              # flip a bit
      i = rng.randrange(len(data))
      data[i] ^= 1 << rng.randrange(8)
    elif op == 1 and data:                            # set a byte
      data[rng.randrange(len(data))] = rng.randrange(256)
    elif op == 2:                                     # insert bytes
      data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    elif op == 3 and data:                            # delete a range
      del data[pos:pos + rng.randint(1, 8)]
    elif op == 4:                                     # cut the tail
      del data[pos:]
    elif op == 5 and data:                            # duplicate a range
      a = rng.randrange(len(data))
      data[pos:pos] = data[a:a + rng.randint(1, 16)]
    elif op == 6:                                     # an interesting varint
      data[pos:pos] = rng.choice(INTERESTING)
    else:                                             # splice in part of another seed
      other = rng.choice(SEEDS)
      a = rng.randrange(len(other) + 1)
      data[pos:pos] = other[a:a + rng.randint(1, 32)]
  return bytes(data)


def generate(rng: random.Random) -> bytes:
  r = rng.random()
  if r < 0.1:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
  if r < 0.4:  # a mutated tensor inside an otherwise valid step message
    inner = mutate(rng, rng.choice(TENSOR_SEEDS))
    return as_action(inner) if rng.random() < 0.5 else as_observation(inner)
  return mutate(rng, rng.choice(SEEDS))


def check_one(backends, buf: bytes) -> int:
  """Checks buf with every decoder on every backend; returns decodes run (0: left out)."""
  runs = 0
  for kind, (name, expect, compare) in DECODERS.items():
    try:
      expected = expect(buf)
    except Excluded:
      continue
    for backend in backends:
      for zero_copy in (False, True):
        decode = getattr(backend, name)
        check_decode(lambda: decode(buf, zero_copy=zero_copy), expected, compare)
        runs += 1
    if len(backends) == 2:
      native, pure = backends
      assert_agree(lambda: getattr(native, name)(buf), lambda: getattr(pure, name)(buf), buf)
  return runs


def fuzz(backends, seed: int, count: int = None, seconds: float = None, on_finding=None):
  """Runs until `count` inputs or `seconds` have gone by.

  Returns (inputs, decodes, findings).  A finding (an AssertionError from the
  checks) is passed to on_finding(buf, error) if given, else raised.
  """
  rng = random.Random(seed)
  deadline = time.monotonic() + seconds if seconds else None
  inputs = decodes = findings = 0
  while (count is None or inputs < count) and (deadline is None or time.monotonic() < deadline):
    buf = generate(rng)
    inputs += 1
    try:
      decodes += check_one(backends, buf)
    except AssertionError as e:
      findings += 1
      if on_finding is None:
        raise AssertionError(f"input {buf.hex()}: {e}") from e
      on_finding(buf, e)
  return inputs, decodes, findings


def main() -> int:
  parser = argparse.ArgumentParser(
      prog="python -m support.fuzz_differential",
      description="Runs the differential fuzzer for a bounded time.")
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
  inputs, decodes, findings = fuzz(backends, seed, seconds=args.seconds, on_finding=on_finding)
  took = time.monotonic() - start
  print(f"differential fuzz ({'+'.join(names)}, seed {seed}): {inputs} inputs, "
        f"{decodes} decodes compared with protobuf in {took:.0f}s, {findings} findings")
  return 1 if findings else 0


if __name__ == "__main__":
  sys.exit(main())
