#!/bin/sh
# The shared objects built on the engine export exactly the public interface:
# every function moonreel.h and moonreel_lua.h declare, and nothing else (the
# engine is compiled with hidden visibility; the headers push default).
# usage: exports.sh LIBRARY HEADER...
set -eu
lib=$1
shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sort -u > "$tmp/exported"
# declared functions: a name followed by "(", outside comments (which may span lines)
perl -0pe 's{/\*.*?\*/}{}gs' "$@" | grep -oE '\b(mr|moonreel_lua|luaopen)_[a-z0-9_]+\(' | tr -d '(' | sort -u > "$tmp/declared"
extra=$(comm -23 "$tmp/exported" "$tmp/declared")
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
status=0
if [ -n "$extra" ]; then
  echo "exported but not declared in a public header:"; echo "$extra" | sed 's/^/  /'; status=1
fi
if [ -n "$missing" ]; then
  echo "declared in a public header but not exported (or not defined):"; echo "$missing" | sed 's/^/  /'; status=1
fi
[ $status -eq 0 ] && echo "$(wc -l < "$tmp/exported") symbols exported, all declared in the public headers"
exit $status
