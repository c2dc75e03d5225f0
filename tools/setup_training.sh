#!/bin/sh
# Install the Debian packages the training tools (tools/tinyworld, tools/wan_torch,
# tools/train) need: PyTorch, NumPy, SentencePiece and the pthread OpenBLAS, which
# makes Debian's torch ~30x faster on CPU than its generic reference BLAS.
# Only missing packages are installed. Needs root (or sudo).
# The tools run on Debian's interpreter, /usr/bin/python3.
set -eu

PKGS="python3-torch python3-numpy python3-sentencepiece libopenblas0-pthread"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "setup_training: all packages present ($PKGS)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "setup_training: need root to install:$missing" >&2
        exit 1
    fi
else
    SUDO=""
fi

echo "setup_training: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing

# Debian selects the BLAS through alternatives; make sure the OpenBLAS one is active.
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    path=$(update-alternatives --query "$alt" 2>/dev/null | awk '/^Alternative: .*openblas-pthread/ {print $2; exit}')
    if [ -n "$path" ]; then
        $SUDO update-alternatives --set "$alt" "$path" >/dev/null
    fi
done
echo "setup_training: done"
