#!/bin/sh
# `luarocks make` as docs/embedding.md shows it: on a copy of the source tree
# (luarocks builds in the tree, in build.luarocks/), with HOME in a temporary
# folder so --local installs there. Then the source copy is removed and the
# rock must still work from stock lua5.4: the module loads with the rock's
# path only, takes no liblua and no lua-cjson, finds the recipe modes in the
# rock's own folder, and computes.
#
# usage: test_luarocks.sh SOURCE_DIR
set -eu
src=$(cd "$1" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moonreel-luarocks.XXXXXX")
[ -n "${KEEP_INSTALL_TEST:-}" ] || trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

. "$src/tests/install/examples.sh"
mkdir -p "$tmp/examples" "$tmp/home" "$tmp/src"
extract_examples "$src/docs/embedding.md" "$tmp/examples"
[ -s "$tmp/examples/luarocks.sh" ] || fail "docs/embedding.md has no example tagged luarocks"

# what the rock builds from (not the tests, tools or docs)
for f in CMakeLists.txt moonreel-scm-1.rockspec cmake engine bindings scripts shaders recipes models; do
  cp -R "$src/$f" "$tmp/src/"
done

echo "== docs/embedding.md's luarocks example, in a copy of the tree"
cd "$tmp/src"
export HOME="$tmp/home"
(set -eux && . "$tmp/examples/luarocks.sh") > "$tmp/luarocks.log" 2>&1 || {
  tail -40 "$tmp/luarocks.log"
  fail "the luarocks example failed"
}
grep -v '^-- \|^\[' "$tmp/luarocks.log" | tail -8

echo "== the rock without the source tree"
cd "$tmp"
rm -rf "$tmp/src"
tree="$HOME/.luarocks"
mod="$tree/lib/lua/5.4/moonreel.so"
[ -f "$mod" ] || fail "no $mod"
if readelf -d "$mod" | grep -q 'NEEDED.*liblua'; then fail "the rock's module links liblua"; fi
rockdir=$(cd "$tree/lib/luarocks/rocks-5.4/moonreel/scm-1" && pwd -P)
LUA_CPATH="$tree/lib/lua/5.4/?.so" LUA_PATH="$tree/share/lua/5.4/?.lua" ROCKDIR=$rockdir lua5.4 -e '
  local mr = require "moonreel"
  local R = require "moonreel.recipe"
  assert(package.loaded.cjson == nil, "lua-cjson was loaded")
  local mode = R.load_mode("t2v")
  local want = os.getenv("ROCKDIR") .. "/share/moonreel/recipes"
  assert(mr.recipes_path:find(want, 1, true), "mr.recipes_path " .. mr.recipes_path .. " lacks " .. want)
  for _, m in ipairs{"t2v", "ti2v", "flf2v", "r2v"} do assert(R.load_mode(m).name == m) end
  local y = mr.matmul(mr.tensor{{1, 2, 3}, {4, 5, 6}}, mr.tensor({{0.5, 0, 0}, {0, 1, 0}}, "bf16")):totable()
  assert(y[1][1] == 0.5 and y[1][2] == 2 and y[2][1] == 2 and y[2][2] == 5, "matmul")
  print("rock module " .. mr.version .. ": recipes from " .. want)
' || fail "the rock from stock lua5.4"
[ -f "$rockdir/share/moonreel/types/moonreel.lua" ] || fail "the rock has no annotations"
[ -f "$rockdir/share/moonreel/models/default/moonreel_pack.json" ] || fail "the rock has no default model"
echo "install_luarocks: all checks passed"
