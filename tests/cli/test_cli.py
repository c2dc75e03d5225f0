#!/usr/bin/env python3
"""CLI and REPL tests for the moonreel executable.

usage: test_cli.py path/to/moonreel [conformance data dir]

Runs `-e`, `--version`, `-h`, a script with arguments, the REPL through a pipe
(`-i`), and the REPL under a pseudo-terminal: readline line editing, history
recall, and Ctrl-C interrupting a long loop while the REPL keeps answering.
The generation recipes, on packs assembled from the conformance models
(tests/e2e/fixture.lua): Ctrl-C during sampling exits 130 and leaves no file,
and the REPL runs a recipe with mr.recipe.t2v{...}.
"""
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time

EXE = os.path.abspath(sys.argv[1])
DATA = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOME = tempfile.mkdtemp(prefix="moonreel-cli-")
ENV = dict(os.environ, HOME=HOME)
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name)
    if not cond:
        failures.append(name)
        if detail:
            print("     " + detail.replace("\n", "\n     "))


def run(args, stdin=None, timeout=120):
    p = subprocess.run([EXE] + args, input=stdin, capture_output=True, text=True, env=ENV, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


# ---------------------------------------------------------------- plain runs
rc, out, err = run(["--version"])
check("--version", rc == 0 and out.startswith("moonreel 0.1.0"), out + err)

rc, out, err = run(["-h"])
check("-h", rc == 0 and "usage:" in out and "-e stat" in out, out + err)

rc, out, err = run(["-x"])
check("bad option fails", rc != 0 and "usage:" in err, out + err)

rc, out, err = run(["-e", "local mr = require 'moonreel'; print(mr.version, (mr.tensor{1,2} * 2):totable()[2])"])
check("-e with the module", rc == 0 and out.strip() == "0.1.0\t4.0", out + err)

rc, out, err = run(["-e", "error('boom')"])
check("-e error exits 1 with traceback", rc == 1 and "boom" in err and "stack traceback" in err, out + err)

with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
    f.write("print(select('#', ...), ...)\nprint(arg[0] == ..., arg[1], arg[2], arg[-1] ~= nil)\n"
            "local mr = require 'moonreel'\nprint(package.loaded.moonreel == mr)\n")
    script = f.name
rc, out, err = run([script, "a", "b c"])
lines = out.splitlines()
check("script args and arg table",
      rc == 0 and lines == ["2\ta\tb c", "false\ta\tb c\ttrue", "true"], out + err)

with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
    f.write("print(arg[-3] ~= nil, arg[-2], arg[-1], arg[1], x)\n")
    script2 = f.name
rc, out, err = run(["-e", "x = 1", script2, "z"])
check("-e before a script: negative arg indices", rc == 0 and out.strip() == "true\t-e\tx = 1\tz\t1", out + err)

rc, out, err = run(["-"], stdin="print('from stdin', 6*7)\n")
check("- runs stdin", rc == 0 and out.strip() == "from stdin\t42", out + err)

# ---------------------------------------------------------------- signals at the edges of a run
# (tests/cli/test_signals.py sends them at random points of a generation.)
# The script catches the SIGTERM it sent itself and then finishes: the signal
# reached the run, so it exits 143, and says so in its last line.
rc, out, err = run(["-e", "local ok, e = pcall(function() os.execute('kill -TERM $PPID') for i = 1, 1e6 do end end) "
                          "print(ok, e)"])
check("SIGTERM caught by the script: exits 143", rc == 143, "exit %d\n%s%s" % (rc, out, err))
check("SIGTERM caught by the script: the last line says it was interrupted",
      "interrupted" in (err.strip().splitlines() or [""])[-1] and "interrupted!" in out, out + err)
# The signal comes while the state closes (a finalizer sends it): the script
# had finished, so the status is its own.
rc, out, err = run(["-e", "keep = setmetatable({}, {__gc = function() os.execute('kill -TERM $PPID') end}) print('done')"])
check("SIGTERM while closing: the run's own status", rc == 0 and out.strip() == "done" and not err, "exit %d\n%s%s" % (rc, out, err))

# ---------------------------------------------------------------- REPL via a pipe
repl_in = "\n".join([
    "1 + 1",
    "t = mr.tensor{{1, 2}, {3, 4}}",
    "t",
    "for i = 1, 2 do",
    "  print('loop', i)",
    "end",
    "error('boom')",
    "'still ' .. 'here'",
    "=3 * 3",
    "t:reshape(3)",
    "t:shape()[1] + 40",
]) + "\n"
rc, out, err = run(["-i"], stdin=repl_in)
check("pipe: expression prints", "> 2\n" in out, out)
check("pipe: a tensor prints with its shape (mr.repl.pretty)", "Tensor f32 [2, 2]" in out, out)
check("pipe: continuation lines", "loop\t1\nloop\t2" in out and ">> " in out, out)
check("pipe: error does not exit", "boom" in err and "still here" in out and "> 9" in out, out + err)
check("pipe: misuse message", "shape 3 has 3 elements, tensor has 4" in err, err)
check("pipe: answers after errors", "42" in out and rc == 0, out + err)


# ---------------------------------------------------------------- REPL under a pty
def pty_session():
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(EXE, [EXE], ENV)
    buf = b""   # read from the terminal, not yet matched
    seen = b""  # matched so far, for take()

    # Consumes output up to the end of token, leaving what follows for the
    # next call: a prompt that arrives in the same read as a result must still
    # be there for read_until("> ").
    def read_until(token, timeout=60):
        nonlocal buf, seen
        tok = token.encode()
        end = time.time() + timeout
        while tok not in buf:
            left = end - time.time()
            if left <= 0:
                seen, buf = seen + buf, b""
                return False
            r, _, _ = select.select([fd], [], [], left)
            if r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    seen, buf = seen + buf, b""
                    return False
                buf += data
        i = buf.index(tok) + len(tok)
        seen, buf = seen + buf[:i], buf[i:]
        return True

    def send(s):
        os.write(fd, s.encode())

    def take():
        nonlocal seen
        b, seen = seen, b""
        return b.decode(errors="replace")

    return pid, fd, read_until, send, take


# ---------------------------------------------------------------- recipes: Ctrl-C
PACK = OUTDIR = None
if DATA:
    PACK_ROOT = os.path.join(HOME, "packs")
    rc, out, err = run([os.path.join(SRC, "tests/e2e/fixture.lua"), DATA, PACK_ROOT], timeout=300)
    check("recipe fixture packs built", rc == 0, out + err)
    PACK = os.path.join(PACK_ROOT, "t2v")
    OUTDIR = os.path.join(HOME, "out")
    os.makedirs(OUTDIR)
    p = subprocess.Popen([EXE, os.path.join(SRC, "recipes/t2v.lua"), "--model", PACK, "--prompt", "a red ball",
                          "--steps", "500", "--seed", "1", "--out", os.path.join(OUTDIR, "stop.mp4")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    err_b = b""
    end = time.time() + 120
    while b"denoise" not in err_b and time.time() < end:
        r, _, _ = select.select([p.stderr], [], [], 1)
        if r:
            chunk = os.read(p.stderr.fileno(), 4096)
            if not chunk:
                break
            err_b += chunk
    time.sleep(1.0)  # well inside the 500 steps
    p.send_signal(signal.SIGINT)
    rest_out, rest_err = p.communicate(timeout=120)
    err_s = (err_b + rest_err).decode(errors="replace")
    check("recipe: Ctrl-C exits 130", p.returncode == 130, f"rc {p.returncode}\n{err_s}")
    check("recipe: Ctrl-C says nothing was written", "interrupted; no output written" in err_s, err_s)
    check("recipe: Ctrl-C leaves no file", os.listdir(OUTDIR) == [], str(os.listdir(OUTDIR)))

pid, fd, read_until, send, take = pty_session()
ok = read_until("> ")
check("pty: banner and prompt", ok and "moonreel 0.1.0" in take())

# line editing: type "1+2", move left twice, insert "0" -> "10+2"
send("1+2\x1b[D\x1b[D0\r")
ok = read_until("12\r\n")
check("pty: readline cursor editing", ok, take())
read_until("> ")
take()

# history: up arrow recalls the last line
send("\x1b[A\r")
ok = read_until("12\r\n")
check("pty: history recall", ok, take())
read_until("> ")
take()

# values print readably: a table nested, a tensor with its shape and values
send("mr.tensor{{1, 2}, {3, 4}}\r")
ok = read_until("Tensor f32 [2, 2]")
ok = ok and read_until("{1, 2, 3, 4}")
check("pty: a tensor prints with shape and values", ok, take())
read_until("> ")
take()

# Tab completes a field of the module
send("mr.zer\t({3})\r")
ok = read_until("Tensor f32 [3]")
check("pty: Tab completes mr.zer to mr.zeros", ok, take())
read_until("> ")
take()

# help(x) prints the function's line of docs/lua-api.md
send("help(mr.zeros)\r")
ok = read_until("zero-filled")
check("pty: help(mr.zeros)", ok, take())
read_until("> ")
take()

# history is on disk after each line, not only at exit
hist = os.path.join(HOME, ".moonreel_history")
check("pty: history saved after each line", os.path.exists(hist) and "help(mr.zeros)" in open(hist).read())

# Ctrl-C at the prompt drops the line being typed and prompts again
send("this is not lua")
time.sleep(0.3)
send("\x03")
ok = read_until("> ")
send("40 + 2\r")
ok = ok and read_until("42\r\n")
check("pty: Ctrl-C at the prompt clears the line", ok, take())
read_until("> ")
take()

# Ctrl-C during a long engine loop
send("x = mr.zeros({256, 256}) print('loop' .. 'ing') for i = 1, 1e9 do x = mr.add(x, 1) end\r")
read_until("looping\r\n")  # the line runs, with the SIGINT handler armed
time.sleep(0.5)
os.kill(pid, signal.SIGINT)
ok = read_until("interrupted", timeout=60)
check("pty: Ctrl-C prints interrupted", ok, take())
read_until("> ")
take()
send("print('alive', mr.tensor{5}:item() + 1)\r")
ok = read_until("alive\t6.0", timeout=60)
check("pty: REPL answers after Ctrl-C", ok, take())
# a recipe from the REPL
if PACK:
    read_until("> ")
    take()
    target = os.path.join(OUTDIR, "repl.mp4")
    send(f"r = mr.recipe.t2v{{model = '{PACK}', prompt = 'a red ball', seed = 4, out = '{target}', quiet = true}}"
         " print('made', r.out, r.seed)\r")
    ok = read_until("made\t" + target + "\t4", timeout=240)
    check("pty: a recipe runs from the REPL", ok and os.path.exists(target) and os.path.exists(target + ".json"),
          take())
# EOF ends the session; send it only once readline waits at the prompt, since
# a ^D typed while the terminal is still in cooked mode can be lost
read_until("> ")
send("\x04")
status = None
for _ in range(200):
    wpid, status = os.waitpid(pid, os.WNOHANG)
    if wpid:
        break
    time.sleep(0.05)
else:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
check("pty: Ctrl-D leaves the REPL", status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
os.close(fd)
check("pty: history file written", os.path.exists(os.path.join(HOME, ".moonreel_history")))

print(f"{len(failures)} failure(s)")
sys.exit(1 if failures else 0)
