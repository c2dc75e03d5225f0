#!/bin/sh
# Install the Debian packages the training tools (tools/tinyworld, tools/wan_torch,
# tools/train) need: PyTorch, NumPy, SentencePiece and the OpenMP build of OpenBLAS,
# and select that BLAS. Debian's torch calls the system BLAS: its generic reference BLAS
# is ~30x slower on CPU. The OpenMP build shares torch's own OpenMP threads; the pthread
# build runs threads of its own that fight torch's, so tools/train holds it to one
# (OPENBLAS_NUM_THREADS). Measured on a 2-core AVX2 EPYC, two torch threads, a patch-1
# DiT training step (docs/default-model.md): 1.09-1.11 s on the pthread build at one
# thread, 0.79-1.00 s on the OpenMP build.
# Only missing packages are installed. Needs root (or sudo) for what it changes.
# The tools run on Debian's interpreter, /usr/bin/python3.
set -eu

PKGS="python3-torch python3-numpy python3-sentencepiece libopenblas0-openmp"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    elif [ -n "$missing" ]; then
        echo "setup_training: need root to install:$missing" >&2
        exit 1
    fi
fi

if [ -n "$missing" ]; then
    echo "setup_training: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    # shellcheck disable=SC2086
    $SUDO apt-get install -y -q --no-install-recommends $missing
fi

# Debian selects the BLAS through alternatives, and ranks the pthread build above the
# OpenMP one: select the OpenMP one where it is not already.
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu libopenblas.so.0-x86_64-linux-gnu; do
    query=$(update-alternatives --query "$alt" 2>/dev/null || true)
    path=$(printf '%s\n' "$query" | awk '/^Alternative: .*openblas-openmp/ {print $2; exit}')
    now=$(printf '%s\n' "$query" | awk '/^Value: / {print $2; exit}')
    if [ -n "$path" ] && [ "$path" != "$now" ]; then
        if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
            echo "setup_training: need root to select $path for $alt" >&2
            exit 1
        fi
        $SUDO update-alternatives --set "$alt" "$path" >/dev/null
        echo "setup_training: $alt -> $path"
    fi
done
echo "setup_training: done ($PKGS)"
