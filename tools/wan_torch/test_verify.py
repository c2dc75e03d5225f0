"""unittest wrapper around verify.py plus small checks of the modules.

    /usr/bin/python3 -m unittest tools.wan_torch.test_verify
Skips when torch or the conformance data are absent (run tools/setup_training.sh).
"""
import os
import tempfile
import unittest

import numpy as np

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None


@unittest.skipIf(torch is None, "python3-torch not installed (tools/setup_training.sh)")
class TestConformance(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from tools.wan_torch import verify
        torch.set_num_threads(1)
        cls.verify = verify
        try:
            cls.dir = verify.find_dir()
        except FileNotFoundError:
            raise unittest.SkipTest("conformance data not found")

    def _check(self, name):
        for key, err, *tol in self.verify.run_one(self.dir, name):
            with self.subTest(vector=key):
                self.assertLess(err, tol[0] if tol else self.verify.TOL, f"{name} {key}")

    def test_t5(self):
        self._check("t5_encoder_tiny")

    def test_vae(self):
        self._check("wan21_vae_tiny")

    def test_dit_t2v(self):
        self._check("wan21_dit_t2v_tiny")

    def test_dit_ti2v(self):
        self._check("wan22_dit_ti2v_tiny")


@unittest.skipIf(torch is None, "python3-torch not installed")
class TestModules(unittest.TestCase):
    def test_safetensors_roundtrip(self):
        from tools.wan_torch import st
        t = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1, 2], np.int64),
             "c": np.ones((1, 4), np.float16)}
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.safetensors")
            st.save(p, t, {"format": "pt"})
            back = st.load(p)
            self.assertEqual(st.read_header(p)["__metadata__"], {"format": "pt"})
        for k in t:
            np.testing.assert_array_equal(back[k], t[k])
            self.assertEqual(back[k].dtype, t[k].dtype)

    def test_dit_batch_and_per_token(self):
        from tools.wan_torch.dit import WanModel, ti2v_timesteps
        torch.manual_seed(0)
        m = WanModel("ti2v", text_len=8, in_dim=4, dim=32, ffn_dim=48, freq_dim=16, text_dim=12,
                     out_dim=4, num_heads=2, num_layers=1).eval()
        x = torch.randn(2, 4, 2, 4, 4)
        ctx = torch.randn(2, 5, 12)
        t = torch.tensor([300.0, 700.0])
        with torch.no_grad():
            both = m(x, t, ctx)
            one = m(x[1:], t[1:], ctx[1:])
            # a per-token vector with equal entries is the same as a scalar timestep
            tok = m(x, ti2v_timesteps(t, (2, 2, 2), first_frame_clean=False), ctx)
        self.assertEqual(tuple(both.shape), (2, 4, 2, 4, 4))
        torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(both, tok, rtol=1e-5, atol=1e-5)
        tt = ti2v_timesteps(t, (2, 2, 2))
        self.assertEqual(tt[0, :4].tolist(), [0, 0, 0, 0])
        self.assertEqual(tt[1, 4:].tolist(), [700.0] * 4)

    def test_vae_shapes_and_grad(self):
        from tools.wan_torch.vae import WanVAE
        torch.manual_seed(0)
        m = WanVAE(dim=4, z_dim=4)
        x = torch.rand(1, 3, 5, 16, 16) * 2 - 1
        z = m.encode(x, chunked=False)
        self.assertEqual(tuple(z.shape), (1, 4, 2, 2, 2))
        y = m.decode(z, chunked=False)
        self.assertEqual(tuple(y.shape), (1, 3, 5, 16, 16))
        y.pow(2).mean().backward()
        self.assertIsNotNone(m.encoder.conv1.weight.grad)


if __name__ == "__main__":
    unittest.main()
