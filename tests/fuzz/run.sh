#!/bin/sh
# Runs every fuzz target (or the ones named) for SECONDS each, one after the
# other, and prints what each did.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
#   nice -n 19 tests/fuzz/run.sh build-fuzz 600          # the campaign of docs/security.md
#
# BUILD_DIR is a clang build with -DMOONREEL_FUZZ=ON; it is configured and
# built here when needed ($CC, default clang). Seeds come from make_corpus.py
# (BUILD_DIR/corpus/seeds, made fresh every run); what libFuzzer finds
# interesting is kept in BUILD_DIR/corpus/work/<target> so a later run goes
# on from there. A crash, a leak, a timeout (FUZZ_TIMEOUT seconds, default
# 10) or an allocation past FUZZ_MALLOC_MB (default 512) leaves its input in
# BUILD_DIR/artifacts/<target>/ and makes the run fail: minimize it
# (fuzz_<target> -minimize_crash=1 -runs=10000 FILE) and add it to
# tests/fuzz/regressions/<target>/, where the ordinary suite replays it.
set -eu
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$1
secs=$2
shift 2
targets=${*:-safetensors pth pickle spiece prompt image video config lora pack template batch}
jobs=${JOBS:-$(nproc)}

if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S "$src" -B "$build" -DCMAKE_C_COMPILER="${CC:-clang}" -DMOONREEL_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
fi
cmake --build "$build" --target fuzz_targets -j"$jobs" > "$build/fuzz-build.log" 2>&1 || {
  tail -n 30 "$build/fuzz-build.log" >&2
  exit 1
}
build=$(cd "$build" && pwd)

rm -rf "$build/corpus/seeds"
python3 "$here/make_corpus.py" "$build/corpus/seeds" > /dev/null

# LeakSanitizer is on (ASan's default); the suppressions name Mesa's and the
# Vulkan loader's own allocations only (fuzz_lora makes a device context).
# ASan's quarantine of freed memory is cut from 256 to 64 MB: with lavapipe's
# tensor buffers going through malloc, fuzz_lora's resident memory passed
# libFuzzer's 2 GB limit in a few hundred inputs (1.9 GB over 645 inputs, 87
# MB without ASan, 384 MB with a 16 MB quarantine).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:quarantine_size_mb=64}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$src/tests/sanitize/lsan.supp:print_suppressions=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

max_len() {
  case $1 in
    spiece) echo 262144 ;;
    prompt|config) echo 4096 ;;
    lora|pack) echo 16384 ;;
    batch) echo 70000 ;; # a manifest line's limit is 64 KB
    *) echo 65536 ;;
  esac
}

# Lavapipe, which Mesa keeps allocations in for the life of the process, is linked into
# every fuzz target so that LeakSanitizer sees them reachable (CMakeLists.txt).

status=0
printf '%-12s %8s %12s %10s %8s  %s\n' target seconds executions exec/s corpus result
for t in $targets; do
  bin="$build/tests/fuzz/fuzz_$t"
  work="$build/corpus/work/$t"
  arts="$build/artifacts/$t"
  log="$build/logs/$t.log"
  mkdir -p "$work" "$arts" "$build/logs"
  set -- "$work" "$build/corpus/seeds/$t"
  [ -d "$here/regressions/$t" ] && set -- "$@" "$here/regressions/$t"
  start=$(date +%s)
  rc=0
  "$bin" -max_total_time="$secs" -timeout="${FUZZ_TIMEOUT:-10}" -malloc_limit_mb="${FUZZ_MALLOC_MB:-512}" \
         -rss_limit_mb=2048 -max_len="$(max_len "$t")" -dict="$here/dict/$t.dict" -print_final_stats=1 \
         -artifact_prefix="$arts/" "$@" > "$log" 2>&1 || rc=$?
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  persec=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  units=$(ls "$work" | wc -l)
  if [ "$rc" -eq 0 ]; then
    result=ok
  else
    result="FAILED (exit $rc; $log, inputs in $arts)"
    status=1
  fi
  printf '%-12s %8s %12s %10s %8s  %s\n' "$t" "$took" "${execs:-?}" "${persec:-?}" "$units" "$result"
  if [ "$rc" -ne 0 ]; then
    grep -E 'ERROR|SUMMARY|invariant|runtime error|Timeout|out-of-memory' "$log" | head -n 5 >&2 || true
  fi
done
exit $status
