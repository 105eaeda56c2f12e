# Sourced by tools/fuzz.sh and tools/sanitizer_tests.sh: makes sure clang++
# with libFuzzer and the ASan/UBSan runtimes is installed (Debian's clang and
# libclang-rt-N-dev, via apt-get; CI runs as root and starts with neither),
# and CMake (ensure_cmake, which sets $CMAKE; from PyPI into $PY if missing).
ensure_clang() {
  local dir
  dir="$(mktemp -d)"
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
    > "$dir/probe.cc"
  if command -v clang++ >/dev/null 2>&1 &&
     clang++ -fsanitize=fuzzer,address,undefined "$dir/probe.cc" -o "$dir/probe" >/dev/null 2>&1; then
    rm -rf "$dir"
    return
  fi
  echo "installing clang with libFuzzer and the sanitizer runtimes (apt-get)"
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  local rt
  rt="$(apt-cache search --names-only '^libclang-rt-[0-9]+-dev$' | awk '{print $1}' | sort -V | tail -1)"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clang ${rt:+"$rt"} >/dev/null
  clang++ -fsanitize=fuzzer,address,undefined "$dir/probe.cc" -o "$dir/probe"
  rm -rf "$dir"
}

# The hardening builds are targets of CMakeLists.txt (DM_ENV_RPC_FAST_FUZZ,
# DM_ENV_RPC_FAST_SANITIZE): $CMAKE is a cmake of at least the version it needs.
ensure_cmake() {
  CMAKE="$(command -v cmake || true)"
  if [ -n "$CMAKE" ] &&
     "$CMAKE" --version | awk 'NR == 1 {split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 18))}'; then
    return
  fi
  echo "installing cmake (pip, into $PY)"
  "$PY" -m pip install -q "cmake>=3.18"
  CMAKE="$("$PY" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))')"
}
