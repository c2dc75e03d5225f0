#!/bin/sh
# The installation, as a user outside the source tree gets it: installs the
# build into a temporary prefix, runs every example of docs/embedding.md in
# order from a folder outside the tree (a C program built with pkg-config
# and one with find_package, both run; stock lua5.4 requiring the module and
# generating; a host opening the module in its own lua_State; the installed
# CLI generating with the installed recipe and model), then checks what the
# examples do not show: the files and sonames, the module from stock lua5.4
# with LUA_CPATH and LUA_PATH into the prefix only, its recipes from the
# prefix, the sidecar's model, and the installed annotations against the
# installed module.
#
# usage: test_install.sh SOURCE_DIR BUILD_DIR
set -eu
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/moonreel-install.XXXXXX")
[ -n "${KEEP_INSTALL_TEST:-}" ] || trap 'rm -rf "$tmp"' EXIT   # KEEP_INSTALL_TEST=1 keeps it to look at
fail() { echo "FAIL: $*" >&2; exit 1; }

PREFIX=$tmp/prefix
work=$tmp/work
mkdir -p "$work"
. "$src/tests/install/examples.sh"
extract_examples "$src/docs/embedding.md" "$work"
[ -s "$work/run.sh" ] || fail "docs/embedding.md has no examples tagged run"

# ---------------------------------------------------------- the doc's examples
# `build` in the examples is the build folder; nothing else of the tree is
# reachable from here.
ln -s "$build" "$work/build"
cd "$work"
echo "== docs/embedding.md examples (PREFIX=$PREFIX, in $work)"
(export PREFIX && set -eux && . ./run.sh) || fail "an example of docs/embedding.md failed"

# ---------------------------------------------------------- the example hosts
echo "== examples/ against the installed files"
cmp "$work/headless.c" "$src/examples/headless.c" || fail "docs/embedding.md's headless.c is not examples/headless.c"
[ -s "$work/blue.mp4" ] || fail "the headless example wrote no blue.mp4"
model_dir=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"]["dir"])' "$work/blue.mp4.json")
[ "$model_dir" = "$PREFIX/share/moonreel/models/default" ] ||
  fail "the headless example used the model $model_dir, not the installed $PREFIX/share/moonreel/models/default"
cmake -S "$src/examples" -B "$work/build-hosts" -DCMAKE_PREFIX_PATH="$PREFIX" > /dev/null || fail "examples/ does not configure against the prefix"
cmake --build "$work/build-hosts" > /dev/null || fail "examples/ does not build against the prefix"
(cd "$work" && build-hosts/lua_host lua_host.webp) || fail "examples/lua_host from the prefix"
[ -s "$work/lua_host.webp" ] || fail "lua_host wrote nothing"

# ---------------------------------------------------------- what gets installed
echo "== installed files"
for f in lib/libmoonreel.so lib/libmoonreel.so.0.1 lib/libmoonreel_lua.so lib/libmoonreel_lua.so.0.1 \
         lib/libmoonreel_gen.so lib/libmoonreel_gen.so.0.1 include/moonreel_gen.h \
         include/moonreel.h include/moonreel_lua.h lib/pkgconfig/moonreel.pc lib/pkgconfig/moonreel-lua.pc \
         lib/cmake/moonreel/moonreel-config.cmake lib/cmake/moonreel/moonreel-config-version.cmake \
         lib/cmake/moonreel/moonreel-targets.cmake lib/lua/5.4/moonreel.so bin/moonreel \
         share/moonreel/recipes/t2v.lua share/moonreel/recipes/ti2v.lua share/moonreel/recipes/flf2v.lua \
         share/moonreel/recipes/r2v.lua share/moonreel/recipes/effects.lua share/moonreel/recipes/templates/move.json \
         share/moonreel/recipes/templates/squish.json share/moonreel/recipes/templates/loras/squish.safetensors \
         share/moonreel/recipes/templates/spin.json share/moonreel/recipes/templates/loras/spin.safetensors \
         share/moonreel/recipes/templates/bounce.json share/moonreel/recipes/templates/loras/bounce.safetensors \
         share/moonreel/docs/template.schema.json share/moonreel/models/default/moonreel_pack.json \
         share/moonreel/models/default/diffusion_pytorch_model.safetensors \
         share/moonreel/types/moonreel.lua share/moonreel/types/moonreel/pack.lua share/moonreel/types/moonreel/recipe.lua \
         share/moonreel/types/moonreel/repl.lua share/moonreel/docs/lua-api.md; do
  [ -e "$PREFIX/$f" ] || fail "not installed: $f"
done
[ ! -e "$PREFIX/share/moonreel/recipes/hello.lua" ] || fail "hello.lua (it needs the tree's test data) was installed"
for lib in moonreel moonreel_lua moonreel_gen; do
  soname=$(readelf -d "$PREFIX/lib/lib$lib.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [ "$soname" = "lib$lib.so.0.1" ] || fail "lib$lib.so has soname '$soname', not lib$lib.so.0.1"
done
if readelf -d "$PREFIX/lib/lua/5.4/moonreel.so" | grep -q 'NEEDED.*liblua'; then
  fail "the Lua module links liblua (the interpreter provides Lua)"
fi
# the example programs use the installed library, not the build's
for exe in example build-example/example host build-example/host headless build-hosts/headless build-hosts/lua_host \
           build-hosts/player; do
  LD_LIBRARY_PATH="$PREFIX/lib" ldd "$work/$exe" | grep -q "libmoonreel.so.0.1 => $PREFIX/lib/" || fail "$exe does not load $PREFIX/lib/libmoonreel.so.0.1"
done

# ---------------------------------------------------------- stock lua5.4, the prefix only
echo "== stock lua5.4 with LUA_CPATH and LUA_PATH into the prefix only"
prefix_real=$(cd "$PREFIX" && pwd -P)
LUA_CPATH="$PREFIX/lib/lua/5.4/?.so" LUA_PATH="$PREFIX/share/lua/5.4/?.lua" PREFIX_REAL=$prefix_real \
  lua5.4 -e '
  local mr = require "moonreel"
  assert(package.loaded.cjson == nil, "lua-cjson was loaded")
  local R = require "moonreel.recipe"
  local P = require "moonreel.pack"
  assert(type(R.t2v) == "function" and type(P.load) == "function")
  local first = mr.recipes_path:match("^[^;]+")
  local want = os.getenv("PREFIX_REAL") .. "/share/moonreel/recipes"
  assert(first == want, "mr.recipes_path starts with " .. tostring(first) .. ", not " .. want)
  for _, m in ipairs{"t2v", "ti2v", "flf2v", "r2v"} do assert(R.load_mode(m).name == m) end
  assert(mr.repl.help(mr.zeros), "no help for mr.zeros (share/moonreel/docs/lua-api.md)")
  local y = mr.matmul(mr.tensor{{1, 2, 3}, {4, 5, 6}}, mr.tensor({{0.5, 0, 0}, {0, 1, 0}}, "bf16")):totable()
  assert(y[1][1] == 0.5 and y[1][2] == 2 and y[2][1] == 2 and y[2][2] == 5, "matmul")
  print("module " .. mr.version .. " on " .. mr.device().name .. "; recipes from " .. first)
' || fail "stock lua5.4 with the prefix only"

# ---------------------------------------------------------- the CLI's run, from the installed files
echo "== the installed CLI's generation"
[ -s "$work/square.mp4" ] || fail "the CLI example wrote no square.mp4"
model_dir=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["model"]["dir"])' "$work/square.mp4.json")
[ "$model_dir" = "$PREFIX/share/moonreel/models/default" ] ||
  fail "the sidecar names the model $model_dir, not the installed $PREFIX/share/moonreel/models/default"
[ -s "$work/circle.mp4" ] || fail "the stock lua5.4 example wrote no circle.mp4"

# ---------------------------------------------------------- editor support
echo "== annotations"
PREFIX=$PREFIX python3 - "$work/luarc.json" "$src/.luarc.json" "$src" <<'PY' || fail "a .luarc.json names no annotations"
import json, os, sys
prefix, doc_luarc, tree_luarc, src = os.environ["PREFIX"], sys.argv[1], sys.argv[2], sys.argv[3]
cases = ((doc_luarc, lambda lib: prefix + lib[len("/usr/local"):] if lib.startswith("/usr/local/") else lib),
         (tree_luarc, lambda lib: os.path.join(src, lib)))
for path, where in cases:
    cfg = json.load(open(path))
    assert cfg["runtime.version"] == "Lua 5.4", path
    assert cfg["workspace.library"], path
    for lib in cfg["workspace.library"]:
        for f in ("moonreel.lua", "moonreel/pack.lua", "moonreel/recipe.lua"):
            assert os.path.isfile(os.path.join(where(lib), f)), (path, lib, f)
print("both .luarc.json files name folders holding the annotations")
PY
LUA_CPATH="$PREFIX/lib/lua/5.4/?.so" lua5.4 "$src/tests/types/check_stubs.lua" \
  "$PREFIX/share/moonreel/types" "$PREFIX/share/moonreel/models/default" || fail "the installed annotations"

echo "install: all checks passed"
