#!/usr/bin/env python3
"""SIGTERM and SIGINT at random points of a generation on the default model.

usage: test_signals.py path/to/moonreel [runs]

A first, whole run of recipes/t2v.lua measures how long a generation takes.
Then each run gets SIGTERM (every fourth SIGINT) after a random delay within
that time, so the signal lands while the model loads, while sampling,
decoding or writing, or after the end. Whatever it hit:
- the process exits 143 for SIGTERM, 130 for SIGINT, or 0 if it had
  finished; it is never killed by the signal itself;
- a stopped run says so in one line (no traceback);
- no temporary file is left (".a.mp4.tmp-PID", "a.mp4.json.tmp-N");
- a file under a final name is whole: the video has all its frames at the
  asked size (ffprobe decodes every one), the sidecar is JSON and appears
  only beside its video.
The random seed is printed; MOONREEL_SIGNAL_SEED repeats a sequence.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

EXE = os.path.abspath(sys.argv[1])
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 6
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECIPE = os.path.join(SRC, "recipes", "t2v.lua")
FRAMES, SIZE = 17, 64  # the default model's defaults (models/default/moonreel_pack.json)
failures = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name, flush=True)
    if not cond:
        failures.append(name)
        if detail:
            print("     " + detail.replace("\n", "\n     "), flush=True)


def generate(out_dir, delay=None, sig=signal.SIGTERM):
    """Runs t2v into out_dir/a.mp4; sends sig after delay seconds (None: never).
    Returns (exit code, stderr, seconds)."""
    args = [EXE, RECIPE, "--prompt", "a red circle moving right on a black background", "--seed", "7",
            "--out", os.path.join(out_dir, "a.mp4")]
    t0 = time.monotonic()
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if delay is not None:
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            p.send_signal(sig)
    out, err = p.communicate(timeout=300)
    return p.returncode, (out + err).decode(errors="replace"), time.monotonic() - t0


def video_whole(path):
    """Frames ffprobe decodes and their size, or an error text."""
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                        "stream=width,height,nb_read_frames", "-of", "json", path], capture_output=True, text=True)
    if p.returncode != 0 or p.stderr.strip():
        return "ffprobe: " + p.stderr.strip()
    s = json.loads(p.stdout)["streams"][0]
    return (int(s["nb_read_frames"]), s["width"], s["height"])


def check_dir(label, out_dir):
    names = sorted(os.listdir(out_dir))
    temps = [n for n in names if n.startswith(".") or ".tmp" in n]
    check(label + ": no temporary file is left", not temps, str(names))
    video = os.path.join(out_dir, "a.mp4")
    if "a.mp4" in names:
        got = video_whole(video)
        check(label + ": the video under its name is whole", got == (FRAMES, SIZE, SIZE), str(got))
    if "a.mp4.json" in names:
        check(label + ": a sidecar appears only beside its video", "a.mp4" in names, str(names))
        try:
            with open(video + ".json") as f:
                side = json.load(f)
            check(label + ": the sidecar is whole JSON", side.get("recipe") == "t2v", str(side)[:200])
        except ValueError as e:
            check(label + ": the sidecar is whole JSON", False, str(e))
    extra = [n for n in names if n not in ("a.mp4", "a.mp4.json") and n not in temps]
    check(label + ": nothing else is written", not extra, str(names))
    return names


root = tempfile.mkdtemp(prefix="moonreel-signals-")
try:
    ref = os.path.join(root, "ref")
    os.makedirs(ref)
    rc, log, whole = generate(ref)
    check("a whole run exits 0", rc == 0, log)
    check_dir("whole run", ref)
    check("a whole run writes the video and its sidecar", sorted(os.listdir(ref)) == ["a.mp4", "a.mp4.json"],
          str(os.listdir(ref)))

    seed = int(os.environ.get("MOONREEL_SIGNAL_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    print("signal seed %d (MOONREEL_SIGNAL_SEED), a whole run takes %.2f s" % (seed, whole), flush=True)
    stopped = 0
    for i in range(RUNS):
        sig = signal.SIGINT if i % 4 == 3 else signal.SIGTERM
        delay = rng.uniform(0.05, whole * 1.05)
        d = os.path.join(root, "run%d" % i)
        os.makedirs(d)
        rc, log, took = generate(d, delay, sig)
        label = "%s at %.2f s of %.2f" % (signal.Signals(sig).name, delay, whole)
        want = 128 + sig
        check(label + ": exits %d (or 0 if it had finished)" % want, rc in (want, 0), "exit %d\n%s" % (rc, log))
        if rc == want:
            stopped += 1
            last = [l for l in log.strip().splitlines() if l.strip()][-1]
            check(label + ": says it was interrupted, in one line", "interrupted" in last and
                  "stack traceback" not in log, log)
        names = check_dir(label, d)
        if rc == 0:
            check(label + ": a finished run wrote its video and sidecar", names == ["a.mp4", "a.mp4.json"], str(names))
    # the delays are spread over a whole run's time, so most runs are stopped
    check("some runs were stopped by the signal (%d of %d)" % (stopped, RUNS), stopped >= 1)
finally:
    shutil.rmtree(root, ignore_errors=True)

if failures:
    print("%d check(s) failed" % len(failures))
    sys.exit(1)
print("all signal checks passed")
