#!/usr/bin/env bash
# Everything CI runs for the codec's hardening (issue #6), in about 5 minutes on 2 cores:
#   1. tools/fuzz.sh: the four libFuzzer targets over the C++ core, ASan + UBSan,
#      $FUZZ_SECONDS (default 20) each, two at a time, after replaying the kept inputs;
#   2. the differential fuzzer (tests/support/fuzz_differential.py): the decoders of both
#      backends against protobuf and each other, for $DIFF_SECONDS (default 20);
#   3. tools/sanitizer_tests.sh: the test suite's native-backend half against an
#      ASan + UBSan build of the extension (on $PYTEST_WORKERS pytest-xdist workers,
#      default one more than the cores), then a LeakSanitizer run over a short workload.
# CI's 20 s a fuzzer replays the regressions and catches what a change breaks in the
# common paths; searching deeper takes long runs, a job of their own:
# FUZZ_SECONDS=1800 DIFF_SECONDS=600 tools/ci_hardening.sh.
# Exits non-zero if any step fails (every step runs regardless).  Installs clang
# (apt-get) and pybind11 (pip) if missing.  PYTHON (default: the active virtual
# environment's python, else python3) must have the package's [test] extra
# installed (numpy, protobuf, pytest, hypothesis).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}"
export PYTHON="${PYTHON:-python3}"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
DIFF_SECONDS="${DIFF_SECONDS:-20}"
PYTEST_WORKERS="${PYTEST_WORKERS:-$(( $(nproc) + 1 ))}"
failed=()

step() { printf '\n=== ci_hardening: %s (%ss) ===\n' "$*" "$SECONDS"; }

step "libFuzzer targets, ${FUZZ_SECONDS}s each"
"$ROOT/tools/fuzz.sh" "$FUZZ_SECONDS" || failed+=("fuzz.sh")

step "differential fuzzer, both backends against protobuf, ${DIFF_SECONDS}s"
# A module of the tests' support package, run from tests/ (its parent) so that the repository
# root is not on the path and the installed package is the one fuzzed.
(cd "$ROOT/tests" && "$PYTHON" -m support.fuzz_differential --seconds "$DIFF_SECONDS") \
  || failed+=("fuzz_differential")

step "test suite and leak check under ASan + UBSan"
# The whole suite's native-backend half (the pure backend runs no C++): the codec,
# the v1 layer over loopback gRPC and the interop tests, whose other processes
# inherit the preloaded sanitizer runtime too.
"$ROOT/tools/sanitizer_tests.sh" -n "$PYTEST_WORKERS" -k "not pure" "$ROOT/tests" \
  || failed+=("sanitizer_tests.sh")

step "done"
if [ ${#failed[@]} -gt 0 ]; then
  echo "ci_hardening: FAILED: ${failed[*]}"
  exit 1
fi
echo "ci_hardening: all passed in ${SECONDS}s"
