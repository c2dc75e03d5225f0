#!/bin/sh
# Runs every test: installs what is missing, builds, then ctest (C op tests,
# loader tests, Lua specs, CLI tests, conformance, the tools' Python tests). The Vulkan validation layer
# is on in strict mode for all of them: any validation message fails the test.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
sh tools/setup_training.sh     # PyTorch for the tools' tests (tests/CMakeLists.txt: tools)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure -j"$(nproc)" "$@"
