#!/usr/bin/env bash
# Runs the test suite against an AddressSanitizer + UndefinedBehaviorSanitizer
# build of the native extension, then a short workload under LeakSanitizer.
#
# Usage: tools/sanitizer_tests.sh [PYTEST_ARGS...]
#   PYTEST_ARGS  default: the whole suite ($ROOT/tests)
# Environment: PYTHON (default: the active virtual environment's python, else
# python3; it needs numpy, protobuf, pytest and hypothesis, i.e. the [test]
# extra; pybind11 is installed into it if missing), SAN_OUT (work directory,
# default build/sanitizers).
#
# How: CMakeLists.txt's DM_ENV_RPC_FAST_SANITIZE build (clang, ASan + UBSan,
# the shared ASan runtime) of the extension, in $SAN_OUT/build, is copied into
# a copy of the package under $SAN_OUT/site; pytest runs
# from outside the source tree with that copy first on PYTHONPATH and the ASan
# runtime in LD_PRELOAD (CPython itself is not instrumented).  Leak detection
# is off for the test run (CPython does not free everything at exit); the leak
# step runs the tests' leak workload (tests/support/leak_workload.py, as
# `python -m support.leak_workload` in tests/, where the sanitizer build is still
# the package imported) with detect_leaks=1 and fails if any reported leak has a
# frame in the extension or the codec core.
# Any ASan/UBSan report aborts the process, so the run fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${SAN_OUT:-$ROOT/build/sanitizers}"
PY="${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}"
PY="${PY:-python3}"
# shellcheck source=tools/ensure_clang.sh
. "$ROOT/tools/ensure_clang.sh"

ensure_clang
ensure_cmake
if ! "$PY" -c "import pybind11" 2>/dev/null; then
  "$PY" -m pip install -q pybind11
fi

echo "sanitizer_tests.sh: building the extension with ASan + UBSan"
log="$OUT/build.log"
mkdir -p "$OUT"
if ! { "$CMAKE" -S "$ROOT" -B "$OUT/build" -DCMAKE_CXX_COMPILER=clang++ \
         -DDM_ENV_RPC_FAST_SANITIZE=ON -DPython_EXECUTABLE="$(command -v "$PY")" \
         -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" &&
       "$CMAKE" --build "$OUT/build" -j 2 --target _native; } > "$log" 2>&1; then
  tail -40 "$log"
  echo "sanitizer_tests.sh: the build failed (log: $log)"
  exit 1
fi
rm -rf "$OUT/site"
mkdir -p "$OUT/site"
cp -r "$ROOT/dm_env_rpc_fast" "$OUT/site/"
find "$OUT/site" -name '_native*.so' -delete
find "$OUT/site" -name '__pycache__' -prune -exec rm -rf {} +
cp "$OUT"/build/_native*.so "$OUT/site/dm_env_rpc_fast/"

ASAN_RT="$(clang++ -print-file-name=libclang_rt.asan-x86_64.so)"
export LD_PRELOAD="$ASAN_RT"
export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
common_asan="abort_on_error=1:detect_odr_violation=0:allocator_may_return_null=1"
export PYTHONMALLOC=malloc  # every Python allocation goes through ASan's malloc
unset DM_ENV_RPC_FAST_PURE

cd "$OUT"  # not the source tree, so that the sanitizer build is the one imported
ASAN_OPTIONS="$common_asan:detect_leaks=0" "$PY" -c "
import dm_env_rpc_fast._native as n, dm_env_rpc_fast.codec as c
assert n.__file__.startswith('$OUT/site'), n.__file__
assert c.BACKEND == 'native', c.BACKEND
print('sanitizer build in use:', n.__file__)"

echo "sanitizer_tests.sh: test suite under ASan + UBSan"
args=("$@")
[ ${#args[@]} -eq 0 ] && args=("$ROOT/tests")
ASAN_OPTIONS="$common_asan:detect_leaks=0" \
  "$PY" -m pytest -q -p no:cacheprovider "${args[@]}"

echo "sanitizer_tests.sh: leak check (LeakSanitizer) over support.leak_workload"
rm -f "$OUT"/lsan.*
(cd "$ROOT/tests" &&
  ASAN_OPTIONS="$common_asan:detect_leaks=1" \
  LSAN_OPTIONS="exitcode=0:log_path=$OUT/lsan:report_objects=0:fast_unwind_on_malloc=0:malloc_context_size=40" \
  "$PY" -m support.leak_workload)
reports=("$OUT"/lsan.*)
if [ -e "${reports[0]}" ]; then
  if grep -qE '_native|dmrf|csrc/' "${reports[@]}"; then
    echo "FAIL: LeakSanitizer reports leaks from the extension:"
    grep -B2 -A25 -E 'Direct leak|Indirect leak' "${reports[@]}" | grep -B12 -A12 -E '_native|dmrf|csrc/' | head -80
    exit 1
  fi
  echo "ok: $(cat "${reports[@]}" | grep -c 'leak of') leak records, all from CPython/numpy/protobuf internals, none from the extension"
else
  echo "ok: LeakSanitizer found no leaks"
fi
