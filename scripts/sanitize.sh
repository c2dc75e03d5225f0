#!/bin/sh
# The test suite under AddressSanitizer, UndefinedBehaviorSanitizer and
# LeakSanitizer (docs/security.md): builds build-asan/ with
# -DMOONREEL_SANITIZE=address,undefined (the engine, the Lua module, the CLI
# and the tests all instrumented) and runs ctest there. Any report fails the
# test it happens in: ASan and LSan exit non-zero, UBSan halts on its first
# finding.
#
#   sh scripts/sanitize.sh [ctest arguments]      # e.g. -R test_io
#
# Left out: `tools` (Python and PyTorch, no code of ours in C), `fuzz_smoke`
# (its own clang build is ASan and UBSan already), `default_model` (the
# same CLI path as `signals` and `e2e`, at twice their time; run it with
# -R default_model when wanted), `install` (it builds uninstrumented host
# programs against the installed library, which ASan's runtime refuses to
# start under) and `doc_examples` (it runs the docs' shell and C examples,
# compilers included, which ASan's preloaded runtime reports as leaking; the
# code they reach is what the other tests run). Suppressions (tests/sanitize/lsan.supp) name only Mesa.
set -eu
cd "$(dirname "$0")/.."
src=$(pwd)
build=${SANITIZE_BUILD:-build-asan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMOONREEL_SANITIZE=address,undefined > /dev/null
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export LSAN_OPTIONS="suppressions=$src/tests/sanitize/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cd "$build"
ctest --output-on-failure -j"$(nproc)" -E '^(tools_.*|fuzz_smoke|default_model|install|doc_examples)$' "$@"
