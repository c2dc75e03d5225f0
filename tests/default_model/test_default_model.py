"""The default model end to end (issue 5), through the moonreel CLI on lavapipe:

1. the README's quick start, `moonreel recipes/t2v.lua` with no --model and no
   --prompt, writes an MP4 whose content the semantic checker (tools/tinyworld/
   checker.py) finds to follow the pack's sample prompt, and prints the time;
2. `tools.score --gate` on a handful of held-out clips and prompt/seed pairs:
   VAE PSNR, the checker on T2V, TI2V first frame and motion, at the issue's
   figures. The full 40-pair score is `python3 -m tools.score` (a benchmark).

    python3 tests/default_model/test_default_model.py build/moonreel
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from tools.tinyworld.checker import check  # noqa: E402

MOONREEL = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(ROOT, "build", "moonreel"))
PACK = os.path.join(ROOT, "models", "default")


def decode_mp4(path, width, height):
    """Frames of an MP4 as uint8 [T, H, W, 3], decoded by the ffmpeg CLI."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         stdout=subprocess.PIPE, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


class TestDefaultModel(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(PACK, "moonreel_pack.json")) as f:
            cls.defaults = json.load(f)["defaults"]

    def test_quick_start_follows_its_prompt(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "quick.mp4")
            env = dict(os.environ)
            env.pop("MOONREEL_MODEL", None)          # the default pack, as on a fresh clone
            r = subprocess.run([MOONREEL, os.path.join(ROOT, "recipes", "t2v.lua"), "--seed", "1", "--out", out],
                               cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=600)
            self.assertEqual(r.returncode, 0, r.stderr)
            m = re.search(r"wrote (\S+) \(([\d.]+) s", r.stdout)
            self.assertIsNotNone(m, r.stdout)
            self.assertEqual(m.group(1), out)
            print(f"quick start: {r.stdout.strip().splitlines()[0]}")
            frames = decode_mp4(out, self.defaults["width"], self.defaults["height"])
            self.assertEqual(len(frames), self.defaults["frames"])
            res = check(frames, self.defaults["prompt"])
            self.assertTrue(res.ok, f"{self.defaults['prompt']!r}: found {res.found}")
            with open(out + ".json") as f:
                self.assertEqual(json.load(f)["params"]["prompt"], self.defaults["prompt"])

    def test_gates_on_a_handful(self):
        r = subprocess.run([sys.executable, "-m", "tools.score", "--pack", PACK, "--moonreel", MOONREEL,
                            "--n", "5", "--ti2v", "2", "--vae", "2", "--gate"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        print(r.stdout)
        self.assertEqual(r.returncode, 0, r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
