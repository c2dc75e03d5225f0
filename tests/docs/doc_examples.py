#!/usr/bin/env python3
"""Every fenced block of README.md and docs/*.md is run by a test or marked as
not an example; the blocks tagged `run` outside docs/embedding.md run here.

usage: doc_examples.py SOURCE_DIR BUILD_DIR [--guard-only] [DOC ...]

The word after a block's language says what happens to it (Markdown renderers
only read the first word, so ```lua run still highlights as Lua):

  ```LANG run             run by the page's runner: tests/install/examples.sh
                          for docs/embedding.md (with file=NAME, luarocks and
                          luarc, its own tags), this script for every other page
  ```LANG test=NAME       read and run by the ctest case NAME; the case's source
                          names the tag itself (CONSUMERS below), so a tag whose
                          reader is gone fails here
  ```LANG output          what a command prints or writes, shown, not run
  ```LANG no-run REASON   cannot run here (a 14B checkpoint, a GPU cluster, root);
                          the reason is required
  ```text                 a listing, a usage synopsis, a formula

Anything else fails: a new block must say which of these it is. The copies of
the team's shared docs (.ci/run compares them with ../shared/docs) are not
ours to tag and are skipped.

How `run` blocks run here, each page in a fresh folder laid out as the pages
assume (build/ is the build folder; recipes/, models/, tools/, scripts/, docs/
link to the tree; first.png, cat.jpg and photos/ are small test images):
lua blocks with stock lua5.4 and the built module (LUA_CPATH), sh blocks with
sh -e and build/ on PATH, c blocks compiled against the build's libmoonreel.
A console block is a REPL session: `$ moonreel`, then
lines typed after `> ` or `>> ` and what the REPL answers, which must be
exactly its output (whitespace aside; the banner's Lua version is not
compared). Each must exit 0; a line's `--> TEXT` comment (lua, or `# --> TEXT` in sh) is
output the block must print, in order, whitespace-insensitive, `...` matching
anything.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

# test=NAME: the ctest case and the files of it that read the tagged blocks.
CONSUMERS = {
    "e2e": ["tests/e2e/modes_spec.lua"],
    "batch": ["tests/batch/docs_spec.lua", "tests/batch/template_spec.lua"],   # and template_schema's
    "lua_specs": ["tests/lua/preview_spec.lua"],
}
EMBEDDING = "docs/embedding.md"        # tests/install/examples.sh reads every block of it
RUNNABLE = {"lua", "sh", "c", "console"}
FENCE = re.compile(r"^( {0,3})(```+|~~~+)(.*)$")


def blocks_of(path):
    """[(line, info, body)] of the fenced blocks of a Markdown file."""
    out, cur = [], None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            m = FENCE.match(line)
            if cur is None:
                if m:
                    cur = (n, m.group(2), m.group(3).strip(), [])
            elif m and m.group(2).startswith(cur[1]) and not m.group(3).strip():
                out.append((cur[0], cur[2], "\n".join(cur[3]) + "\n"))
                cur = None
            else:
                cur[3].append(line)
    if cur is not None:
        out.append((cur[0], cur[2], None))      # not closed
    return out


def shared_copies(src):
    """Pages that are copies of ../shared/docs (compared by .ci/run)."""
    try:
        with open(os.path.join(src, ".ci", "run"), encoding="utf-8") as f:
            return set(re.findall(r"cmp -s \.\./shared/docs/\S+ (docs/\S+\.md)", f.read()))
    except OSError:
        return set()


def docs_of(src):
    pages = ["README.md"] + sorted(os.path.relpath(p, src) for p in glob.glob(os.path.join(src, "docs", "*.md")))
    skip = shared_copies(src)
    return [p for p in pages if p not in skip], sorted(skip)


def classify(doc, info):
    """(kind, detail) of a block; kind 'bad' with the reason when it says nothing we know."""
    words = info.split()
    lang = words[0] if words else ""
    tag = words[1] if len(words) > 1 else ""
    if not lang:
        return "bad", "no language and no tag (```text for a listing)"
    if lang == "text":
        return "text", ""
    if tag == "output":
        return "output", ""
    if tag.rstrip(":") == "no-run":
        reason = " ".join(words[2:])
        if len(reason.split()) < 3:
            return "bad", "no-run needs a reason of a few words"
        return "no-run", reason
    if tag.startswith("test="):
        name = tag[5:]
        if name not in CONSUMERS:
            return "bad", f"test={name}: no such consumer (tests/docs/doc_examples.py CONSUMERS)"
        return "test", name
    if doc == EMBEDDING and (tag in ("run", "luarocks", "luarc") or tag.startswith("file=")):
        return "install", tag
    if tag == "run":
        if lang not in RUNNABLE:
            return "bad", f"`{lang} run`: this runner runs {', '.join(sorted(RUNNABLE))}"
        return "run", lang
    return "bad", "untagged: add run, test=NAME, output or no-run REASON (or make it ```text)"


# ---------------------------------------------------------------- the guard
def guard(src, pages):
    problems, table = [], []
    with open(os.path.join(src, "tests", "CMakeLists.txt"), encoding="utf-8") as f:
        cmake = f.read()
    for doc in pages:
        counts = {}
        for line, info, body in blocks_of(os.path.join(src, doc)):
            where = f"{doc}:{line}: ```{info}"
            if body is None:
                problems.append(f"{where}: the block is not closed")
                continue
            kind, detail = classify(doc, info)
            if kind == "bad":
                problems.append(f"{where}: {detail}")
            elif kind == "test":
                if not re.search(r"add_test\(NAME " + re.escape(detail) + r"\b", cmake):
                    problems.append(f"{where}: no ctest case {detail} in tests/CMakeLists.txt")
                fence = "```" + info
                readers = [p for p in CONSUMERS[detail] if fence in open(os.path.join(src, p), encoding="utf-8").read()]
                if not readers:
                    problems.append(f"{where}: none of {', '.join(CONSUMERS[detail])} reads blocks tagged '{info}'")
            key = {"test": f"test={detail}", "install": "install", "run": "doc_examples"}.get(kind, kind)
            counts[key] = counts.get(key, 0) + 1
        table.append((doc, counts))
    # docs/embedding.md: its runner's own extraction takes every block (it fails on any other tag)
    if EMBEDDING in pages:
        n = len(blocks_of(os.path.join(src, EMBEDDING)))
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run(["sh", "-c", '. "$1/tests/install/examples.sh" && extract_examples "$1/$2" "$3"',
                                "sh", src, EMBEDDING, d], capture_output=True, text=True)
            m = re.search(r"(\d+) examples from", r.stderr)
            if r.returncode != 0 or not m or int(m.group(1)) != n:
                problems.append(f"{EMBEDDING}: tests/install/examples.sh takes {m.group(1) if m else 'none'} of its "
                                f"{n} blocks: {r.stderr.strip()}")
        with open(os.path.join(src, "tests", "install", "test_install.sh"), encoding="utf-8") as f:
            if "extract_examples" not in f.read():
                problems.append(f"{EMBEDDING}: tests/install/test_install.sh no longer runs its examples")
    return problems, table


# ---------------------------------------------------------------- the runner
def expectations(lang, body):
    if lang == "console":
        return []
    mark = {"lua": "--", "sh": "#", "c": "//"}[lang] + " -->"
    return [l.split(mark, 1)[1].strip() for l in body.splitlines() if mark in l]


def matches(want, line):
    norm = lambda s: " ".join(s.split())
    pat = ".*?".join(re.escape(p) for p in norm(want).split("..."))
    return re.fullmatch(pat, norm(line)) is not None


def check_output(wants, out):
    lines = out.splitlines()
    i = 0
    for w in wants:
        while i < len(lines) and not matches(w, lines[i]):
            i += 1
        if i == len(lines):
            return f"no line of the output matches '--> {w}' (after the earlier ones)"
        i += 1
    return None


def make_work(src, build, d):
    os.symlink(build, os.path.join(d, "build"))
    for name in ("recipes", "models", "tools", "scripts", "docs", "tests"):
        os.symlink(os.path.join(src, name), os.path.join(d, name))
    os.mkdir(os.path.join(d, "photos"))
    for path, colour in (("first.png", "red"), ("cat.jpg", "white"), ("photos/a.png", "blue")):
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color={colour}:s=64x64", "-frames:v", "1",
                        os.path.join(d, path)], check=True)


PROMPT = re.compile(r"^(?:>>? )+")


def run_repl(d, body, env):
    """A console block: its input to `moonreel -i`, its answers against the output."""
    lines = body.rstrip("\n").splitlines()
    if not lines or lines[0].strip() != "$ moonreel":
        return 1, "", "a console block starts with '$ moonreel' (the REPL)"
    typed = [PROMPT.sub("", l, 1) for l in lines[1:] if PROMPT.match(l)]
    want = [l for l in lines[1:] if not PROMPT.match(l)]
    r = subprocess.run(["moonreel", "-i"], input="\n".join(typed) + "\n", cwd=d, env=env, capture_output=True,
                       text=True, timeout=300)
    got = [PROMPT.sub("", l) for l in r.stdout.splitlines()]
    while got and not got[-1].strip():
        got.pop()
    norm = lambda ls: [" ".join(l.split()) for l in ls]
    ok = (len(got) == len(want) and got[:1] and got[0].startswith("moonreel ") and want[0].startswith("moonreel ")
          and norm(got[1:]) == norm(want[1:]))
    if r.returncode == 0 and not ok:
        return 1, r.stdout, "the REPL answered otherwise:\n" + "\n".join(got)
    return r.returncode, r.stdout, r.stderr


def run_block(src, build, d, name, lang, body, env):
    if lang == "console":
        return run_repl(d, body, env)
    if lang == "lua":
        path = os.path.join(d, name + ".lua")
        cmd = ["lua5.4", path]
    elif lang == "sh":
        path = os.path.join(d, name + ".sh")
        cmd = ["sh", "-e", path]
    else:
        path = os.path.join(d, name + ".c")
        exe = os.path.join(d, name)
        cmd = ["sh", "-ec", 'cc -std=c11 "$1" -I"$2/engine/include" -L"$3" -lmoonreel -Wl,-rpath,"$3" -o "$4" && "$4"',
               "sh", path, src, build, exe]
    with open(path, "w", encoding="utf-8") as f:
        f.write(body)
    r = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout, r.stderr


def run_pages(src, build, pages):
    failures = []
    env = dict(os.environ)
    env["LUA_CPATH"] = os.path.join(build, "lua", "?.so") + ";;"
    env["PATH"] = build + os.pathsep + env.get("PATH", "")
    env.pop("MOONREEL_MODEL", None)         # the default model, as on a fresh clone
    for doc in pages:
        todo = [(line, info, body) for line, info, body in blocks_of(os.path.join(src, doc))
                if body is not None and classify(doc, info)[0] == "run"]
        if not todo:
            continue
        d = tempfile.mkdtemp(prefix="moonreel-doc-")
        try:
            make_work(src, build, d)
            for line, info, body in todo:
                lang = info.split()[0]
                t0 = time.time()
                try:
                    rc, out, err = run_block(src, build, d, f"{os.path.basename(doc)[:-3]}-{line}", lang, body, env)
                except subprocess.TimeoutExpired:
                    rc, out, err = -1, "", "timed out"
                why = f"exit {rc}" if rc != 0 else check_output(expectations(lang, body), out)
                status = "FAIL" if why else "ok  "
                print(f"{status} {doc}:{line} ```{info} ({time.time() - t0:.1f} s)", flush=True)
                if why:
                    failures.append(f"{doc}:{line}: {why}")
                    tail = (out + err).strip().splitlines()[-15:]
                    print("     " + why + "\n     " + "\n     ".join(tail), flush=True)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    return failures


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, build = os.path.abspath(args[0]), os.path.abspath(args[1])
    pages, skipped = docs_of(src)
    problems, table = guard(src, pages)
    print("block dispositions (copies of shared docs skipped: " + (", ".join(skipped) or "none") + ")")
    for doc, counts in table:
        print(f"  {doc:26} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for p in problems:
        print("FAIL " + p)
    only = args[2:]
    failures = [] if "--guard-only" in argv else run_pages(src, build, [p for p in pages if not only or p in only])
    if problems or failures:
        print(f"{len(problems)} blocks not accounted for, {len(failures)} examples failed")
        return 1
    print("every block is run by a test or marked as not an example; the examples here ran")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
