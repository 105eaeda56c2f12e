#!/usr/bin/env bash
# Builds the libFuzzer targets over the C++ codec core (fuzz/*.cc) with
# AddressSanitizer + UndefinedBehaviorSanitizer (CMakeLists.txt's
# DM_ENV_RPC_FAST_FUZZ build, in $FUZZ_OUT/build), replays the kept regression
# inputs (fuzz/regressions/<target>/), then fuzzes each target for a bounded
# time from a seed corpus of valid messages (fuzz/make_seeds.py).
#
# Usage: tools/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#   SECONDS_PER_TARGET  default $FUZZ_SECONDS or 60
#   TARGET              default: all four (fuzz_decode_tensor fuzz_step_request
#                       fuzz_step_response fuzz_roundtrip)
# Environment: FUZZ_JOBS (targets run at once, default 2), FUZZ_OUT (work
# directory, default build/fuzz), PYTHON (for the seed generator: needs numpy
# and protobuf; default the active virtual environment's python, else python3).
#
# Exits non-zero on any finding (crash, sanitizer report, leak, timeout, OOM).
# A crashing input is left in $FUZZ_OUT/artifacts/; copy it into
# fuzz/regressions/<target>/ (it is then replayed here and by
# tests/test_fuzz_regressions.py on both Python backends) and fix the bug.
# Prints the number of executions of each target.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-${FUZZ_SECONDS:-60}}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(fuzz_decode_tensor fuzz_step_request fuzz_step_response fuzz_roundtrip)
fi
OUT="${FUZZ_OUT:-$ROOT/build/fuzz}"
JOBS="${FUZZ_JOBS:-2}"
PY="${PYTHON:-${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}}"
PY="${PY:-python3}"

# shellcheck source=tools/ensure_clang.sh
. "$ROOT/tools/ensure_clang.sh"

build() {
  local log="$OUT/build.log"
  if ! { "$CMAKE" -S "$ROOT" -B "$OUT/build" -DCMAKE_CXX_COMPILER=clang++ \
           -DDM_ENV_RPC_FAST_FUZZ=ON &&
         "$CMAKE" --build "$OUT/build" -j "$JOBS" --target "${TARGETS[@]}"; } > "$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz.sh: the build failed (log: $log)"
    return 1
  fi
}

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_target() {
  local t="$1"
  local log="$OUT/logs/$t.log"
  mkdir -p "$OUT/corpus/$t" "$OUT/artifacts"
  local common=(-timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=1024
                -artifact_prefix="$OUT/artifacts/$t-")
  # Kept regression inputs first: each must run clean.
  local kept=()
  for f in "$ROOT/fuzz/regressions/$t"/*; do [ -f "$f" ] && kept+=("$f"); done
  if [ ${#kept[@]} -gt 0 ]; then
    if ! "$OUT/build/$t" "${common[@]}" "${kept[@]}" > "$log.replay" 2>&1; then
      echo "FAIL $t: a kept regression input fails again (log: $log.replay)"
      tail -40 "$log.replay"
      return 1
    fi
  fi
  if ! "$OUT/build/$t" "${common[@]}" -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
       "$OUT/corpus/$t" "$OUT/seeds/$t" > "$log" 2>&1; then
    echo "FAIL $t: finding after $(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" |
          awk '{print $2}') executions (log: $log)"
    grep -E 'ERROR|runtime error|invariant failed|SUMMARY|Test unit written' "$log" | head -20
    return 1
  fi
  local execs
  execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}')"
  echo "ok   $t: ${execs} executions in ${SECONDS_PER_TARGET}s, no findings" \
       "(corpus $(ls "$OUT/corpus/$t" | wc -l) inputs, ${#kept[@]} kept regressions replayed)"
}

mkdir -p "$OUT"
ensure_clang
ensure_cmake
echo "fuzz.sh: building ${TARGETS[*]} (ASan + UBSan + libFuzzer)"
build
rm -rf "$OUT/seeds"
"$PY" "$ROOT/fuzz/make_seeds.py" "$OUT/seeds" >/dev/null
mkdir -p "$OUT/logs"

status=0
pids=()
names=()
for t in "${TARGETS[@]}"; do
  run_target "$t" > "$OUT/logs/$t.summary" 2>&1 &
  pids+=($!)
  names+=("$t")
  if [ ${#pids[@]} -ge "$JOBS" ]; then
    wait "${pids[0]}" || status=1
    cat "$OUT/logs/${names[0]}.summary"
    pids=("${pids[@]:1}")
    names=("${names[@]:1}")
  fi
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "$OUT/logs/${names[$i]}.summary"
done
exit $status
