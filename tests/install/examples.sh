# Sourced by the install tests: extract_examples DOC DIR writes the fenced
# examples of DOC into DIR, by the word after the language:
#   ```c file=NAME      the block is the file DIR/NAME
#   ```sh run           appended, in order, to DIR/run.sh (test_install.sh runs it)
#   ```sh luarocks      appended to DIR/luarocks.sh (test_luarocks.sh runs it)
#   ```json luarc       DIR/luarc.json (test_install.sh checks what it names)
# A fenced block without one of these fails: every example must run.
extract_examples() {
  awk -v dir="$2" -v doc="$1" '
    function fail(msg) { print doc ":" NR ": " msg > "/dev/stderr"; bad = 1; exit 1 }
    !inblock && /^```/ {
      inblock = 1; tag = $2; out = ""
      if (tag ~ /^file=/) { out = dir "/" substr(tag, 6); printf "" > out }
      else if (tag == "run") out = dir "/run.sh"
      else if (tag == "luarocks") out = dir "/luarocks.sh"
      else if (tag == "luarc") { out = dir "/luarc.json"; printf "" > out }
      else fail("an example no test runs (tag it file=NAME, run, luarocks or luarc): " $0)
      n++
      next
    }
    inblock && /^```[ \t]*$/ { inblock = 0; if (out ~ /\.sh$/) print "" >> out; close(out); next }
    inblock { print >> out }
    END { if (!bad && inblock) fail("a fenced block is not closed"); if (!bad) print n " examples from " doc > "/dev/stderr" }
  ' "$1"
}
