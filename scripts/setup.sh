#!/bin/sh
# Installs every Debian package moonreel needs to build, test and run.
# Idempotent: packages already present are left alone. Run as root (or with sudo).
set -eu

PKGS="build-essential cmake pkg-config
libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
glslang-tools spirv-tools
lua5.4 liblua5.4-dev lua-cjson lua-busted libreadline-dev
libwebp-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev ffmpeg
libcjson-dev python3-numpy luarocks
clang libclang-rt-dev llvm
libhiredis-dev redis-server python3-jsonschema
libsdl2-dev xvfb x11-apps"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "moonreel setup: installing$missing"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
