"""Training skeleton checks that run in seconds: tokenizer, latent renormalisation, export/load.

    /usr/bin/python3 -m unittest tools.train.test_train
"""
import contextlib
import copy
import dataclasses
import json
import os
import tempfile
import unittest

try:
    import torch
    import sentencepiece  # noqa: F401
except ImportError:  # pragma: no cover
    torch = None


needs_torch = unittest.skipIf(torch is None, "python3-torch / python3-sentencepiece missing (tools/setup_training.sh)")


@contextlib.contextmanager
def killed_after_saves(n):
    """Within it, the n-th checkpoint save (ckpt.save) is followed by a KeyboardInterrupt, as
    a run killed right after writing it; None: never."""
    from tools.train import ckpt
    real_save, saves = ckpt.save, [0]

    def save(obj, path):
        real_save(obj, path)
        saves[0] += 1
        if n is not None and saves[0] >= n:
            raise KeyboardInterrupt
    ckpt.save = save
    try:
        yield
    finally:
        ckpt.save = real_save


def assert_resumes_the_same(test, tmp: str, run, die_after: int):
    """run(out) trains into the folder out and returns its tensors by name. Once whole in
    one folder, and in another killed right after its die_after-th checkpoint and run
    again: the resumed run must end with the same tensors, bit for bit. Returns them."""
    a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    os.makedirs(a)
    os.makedirs(b)
    whole = run(a)
    with killed_after_saves(die_after), test.assertRaises(KeyboardInterrupt):
        run(b)
    resumed = run(b)
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], rtol=0, atol=0)
    return whole


@needs_torch
class TestTrainSkeleton(unittest.TestCase):
    def setUp(self):
        from tools.train.config import TrainConfig
        torch.set_num_threads(1)
        torch.manual_seed(0)
        cfg = TrainConfig(seed=3)
        cfg.vae.dim = 4
        cfg.t5.dim = cfg.t5.dim_attn = 16
        cfg.t5.dim_ffn = 24
        cfg.dit.dim, cfg.dit.ffn_dim, cfg.dit.num_heads, cfg.dit.num_layers = 32, 48, 2, 1
        self.cfg = cfg
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_tokenizer(self):
        from tools.train.data import Tokenizer, train_sentencepiece
        p = os.path.join(self.tmp.name, "sp.model")
        train_sentencepiece(p, self.cfg.t5.vocab)
        tok = Tokenizer(p, 32)
        self.assertLessEqual(tok.sp.get_piece_size(), self.cfg.t5.vocab)
        ids, mask = tok(["a red circle moving right on a black background", ""])
        self.assertEqual(int(mask[1].sum()), 1)              # empty caption = </s> only
        self.assertEqual(int(ids[1, 0]), 1)
        n = int(mask[0].sum())
        self.assertEqual(int(ids[0, n - 1]), 1)
        self.assertNotIn(2, ids[0, :n].tolist())             # no <unk> in captions

    def test_t5_init_starts_the_attention_unsaturated(self):
        # T5 has no 1/sqrt(d) in attention: its own init starts the query small. Over real
        # captions the first block's logits must start spread (PyTorch's default init starts
        # them several times wider; trained from there, runs/v8's attention saturated).
        from tools.train.config import TrainConfig
        from tools.train.data import Tokenizer, train_sentencepiece
        from tools.train.stage_dit import build_t5
        p = os.path.join(self.tmp.name, "sp.model")
        train_sentencepiece(p, self.cfg.t5.vocab)
        tok = Tokenizer(p, 32)
        ids, mask = tok(["a red circle moving right on a black background", "the blue box rises"])

        def logit_std(t5_init):
            cfg = TrainConfig(t5_init=t5_init)
            torch.manual_seed(0)
            t5 = build_t5(cfg)
            blk = t5.blocks[0]
            with torch.no_grad():
                h = blk.norm1(t5.token_embedding(ids))
                q, k = blk.attn.q(h), blk.attn.k(h)
                d = blk.attn.head_dim
                logits = torch.einsum("bqnd,bknd->bnqk", q.unflatten(-1, (-1, d)), k.unflatten(-1, (-1, d)))
            real = (mask[:, None, :, None] * mask[:, None, None, :]).expand_as(logits).bool()
            return float(logits[real].std())

        self.assertLess(logit_std(True), 1.0)
        self.assertGreater(logit_std(False), 2.0 * logit_std(True))

    def test_whole_words_make_every_caption_word_one_piece(self):
        import sentencepiece as spm
        from tools.tinyworld.captions import all_caption_texts
        from tools.train.data import caption_words, train_sentencepiece
        texts = all_caption_texts(two_objects=True, n_two=2000)
        pieces = {}
        for whole in (False, True):
            p = os.path.join(self.tmp.name, f"sp{whole}.model")
            train_sentencepiece(p, self.cfg.t5.vocab, texts, whole_words=whole)
            sp = spm.SentencePieceProcessor(model_file=p)
            self.assertLessEqual(sp.get_piece_size(), self.cfg.t5.vocab)
            pieces[whole] = {w: sp.encode(w, out_type=str) for w in caption_words(texts)}
        # all but "backdrop" (one template's word for the background), which the trainer's
        # seed pieces never hold whatever the corpus: no word that names an object is split
        self.assertLessEqual({w for w, p in pieces[True].items() if len(p) != 1}, {"backdrop"})
        self.assertGreater(len(pieces[False]["the"]), 1)     # why the setting exists

    def test_renormalize_is_exact(self):
        from tools.train.data import clips_tensor, train_clip
        from tools.train.stage_vae import build_vae, renormalize_latents
        vae = build_vae(self.cfg).eval()
        x = clips_tensor([train_clip(5, 0, 5, 32)])
        with torch.no_grad():
            mu, _ = vae.encode_moments(x, chunked=False)
            before = vae.decoder(vae.conv2(mu))
            self.cfg.size, self.cfg.frames = 32, 5
            renormalize_latents(self.cfg, vae, n_clips=8)
            z = vae.encode(x, chunked=False)
            after = vae.decode(z, chunked=False)
        torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-4)

    def test_export_and_load(self):
        from tools.train.data import Tokenizer, encode_text, train_sentencepiece
        from tools.train.export import export_pack, load_pack
        from tools.train.stage_dit import build_dit, build_t5
        from tools.train.stage_vae import build_vae
        sp = os.path.join(self.tmp.name, "sp.model")
        train_sentencepiece(sp, self.cfg.t5.vocab)
        dit, vae, t5 = build_dit(self.cfg).eval(), build_vae(self.cfg).eval(), build_t5(self.cfg).eval()
        pack = os.path.join(self.tmp.name, "pack")
        info = export_pack(self.cfg, pack, dit, vae, t5, sp, {"x": 1.0}, dit_dtype="f32", t5_dtype="f32",
                           reference_counts=(2, 1, 2))
        self.assertGreater(info["pack_bytes"], 0)
        for name in ("config.json", "diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth",
                     "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/spiece.model"):
            self.assertTrue(os.path.exists(os.path.join(pack, name)), name)
        dit2, vae2, t52, sp2 = load_pack(pack)
        tok = Tokenizer(sp2, self.cfg.dit.text_len)
        x = torch.randn(1, 16, 2, 4, 4)
        with torch.no_grad():
            c1 = encode_text(t5, tok, ["a red ball slides to the right"])
            c2 = encode_text(t52, tok, ["a red ball slides to the right"])
            torch.testing.assert_close(c1, c2)
            torch.testing.assert_close(dit(x, torch.tensor([500.0]), c1), dit2(x, torch.tensor([500.0]), c2))
            torch.testing.assert_close(vae.decode(x, chunked=True), vae2.decode(x, chunked=True))
        # the per-item reference the engine is held to: TI2V frame 0 without sampling is
        # the frame 0 that sampling gives (the latent is held, the decoder is causal)
        from tools.train.evaluate import eval_ti2v
        with open(os.path.join(pack, "moonreel_pack.json")) as f:
            ref = json.load(f)["reference"]
        self.assertEqual((len(ref["vae_psnr"]), len(ref["ti2v_first_frame_psnr"])), (2, 1))
        self.cfg.eval_steps = 2
        self.assertAlmostEqual(ref["ti2v_first_frame_psnr"][0], eval_ti2v(self.cfg, vae, dit, t5, tok, 1), places=3)

    def test_regenerate_denoises_from_the_drawn_level_and_holds_ti2v_frames(self):
        import numpy as np
        from tools.train.data import Tokenizer, train_clip, train_sentencepiece
        from tools.train.stage_dit import build_dit, build_t5, regenerate
        sp = os.path.join(self.tmp.name, "sp.model")
        train_sentencepiece(sp, self.cfg.t5.vocab)
        tok = Tokenizer(sp, self.cfg.dit.text_len)
        dit, t5 = build_dit(self.cfg).eval(), build_t5(self.cfg).eval()
        specs = [train_clip(self.cfg.seed, i, 1, 16).spec for i in range(3)]
        z = torch.randn(3, 16, 3, 4, 4)

        def run(seed):
            return regenerate(self.cfg, dit, t5, tok, z, specs, np.random.default_rng(seed),
                              torch.Generator().manual_seed(seed))
        self.cfg.p_i2v = 0.0
        a = run(1)
        self.assertEqual(a.shape, z.shape)
        torch.testing.assert_close(a, run(1))                       # seeded
        self.assertGreater(float((a - z).abs().min(dim=1)[0].max()), 1e-3)   # every clip re-made
        self.cfg.p_i2v = 1.0                                        # TI2V: frame 0 is the clip's
        b = run(2)
        torch.testing.assert_close(b[:, :, 0], z[:, :, 0], rtol=0, atol=0)
        self.assertGreater(float((b[:, :, 1:] - z[:, :, 1:]).abs().max()), 1e-3)
        self.cfg.vae_dec_regen_steps = (self.cfg.eval_steps, self.cfg.eval_steps)   # sigma 0: nothing to do
        torch.testing.assert_close(run(3), z, rtol=0, atol=0)

    def test_caption_gap_measures_only_what_the_caption_changes(self):
        from tools.train.data import Tokenizer, train_sentencepiece, train_spec
        from tools.train.evaluate import caption_gap, pair_gap
        from tools.train.stage_dit import build_dit, build_t5
        sp = os.path.join(self.tmp.name, "sp.model")
        train_sentencepiece(sp, self.cfg.t5.vocab)
        tok = Tokenizer(sp, self.cfg.dit.text_len)
        dit, t5 = build_dit(self.cfg).eval(), build_t5(self.cfg).eval()
        with torch.no_grad():
            for p in dit.parameters():                  # no zero-initialised head: every path counts
                p.add_(0.05 * torch.randn_like(p))
        specs = [train_spec(self.cfg.seed, i, "varied", 0.5) for i in range(24)]
        lat = torch.randn(24, 16, 2, 4, 4)
        gap = caption_gap(self.cfg, dit, t5, tok, lat, specs, n=4)
        self.assertEqual(sorted(gap), ["colour", "empty", "motion", "shape"])
        self.assertTrue(all(abs(v) > 1e-4 for v in gap.values()), gap)     # each changed caption is another
        self.assertEqual(gap, caption_gap(self.cfg, dit, t5, tok, lat, specs, n=4))   # its own streams
        pair = pair_gap(self.cfg, dit, t5, tok, lat, specs, n=2)
        self.assertEqual(sorted(pair), ["colour", "motion", "order", "shape"])
        self.assertTrue(all(abs(v) > 1e-4 for v in pair.values()), pair)
        self.assertEqual(pair, pair_gap(self.cfg, dit, t5, tok, lat, specs, n=2))
        with torch.no_grad():
            for b in dit.blocks:                        # a DiT that reads no caption
                b.cross_attn.o.weight.zero_()
                b.cross_attn.o.bias.zero_()
        self.assertEqual(set(caption_gap(self.cfg, dit, t5, tok, lat, specs, n=4).values()), {0.0})
        self.assertEqual(set(pair_gap(self.cfg, dit, t5, tok, lat, specs, n=2).values()), {0.0})

    def test_swapped_exchanges_one_attribute_or_the_order(self):
        from tools.tinyworld.world import sample_spec2
        from tools.train.evaluate import swapped
        import numpy as np
        spec = sample_spec2(np.random.default_rng(3))
        a, b = spec.objects
        self.assertEqual(swapped(spec).objects, (b, a))
        for field in ("colour", "shape", "motion"):
            x, y = swapped(spec, field).objects
            self.assertEqual((getattr(x, field), getattr(y, field)), (getattr(b, field), getattr(a, field)))
            others = [f for f in ("colour", "shape", "motion", "scale") if f != field]
            self.assertEqual([getattr(x, f) for f in others], [getattr(a, f) for f in others])
        self.assertEqual(swapped(swapped(spec, "motion"), "motion"), spec)

    def test_remade_latents_go_through_the_normalisation(self):
        from tools.train.data import clips_tensor, train_clip
        from tools.train.stage_vae import build_vae, remade_latents
        vae = build_vae(self.cfg).eval()
        x = clips_tensor([train_clip(5, i, 5, 32) for i in range(2)])
        seen = []

        def regen(z, specs, rng, gen):
            seen.append((z, specs))
            return torch.zeros_like(z)
        with torch.no_grad():
            mu, _ = vae.encode_moments(x, chunked=False)
            out = remade_latents(vae, regen, torch.tensor([False, True]), ["s0", "s1"], None, None, mu)
            torch.testing.assert_close(seen[0][0], vae.encode(x, chunked=False)[1:])  # the DiT's latents
        self.assertEqual(seen[0][1], ["s1"])
        torch.testing.assert_close(out[0], mu[0], rtol=0, atol=0)
        torch.testing.assert_close(out[1], vae._norm_shape(vae.mean)[0].expand_as(mu[1]))  # z = 0 is the mean
        self.assertIs(remade_latents(vae, regen, torch.tensor([False, False]), [], None, None, mu), mu)

    def test_generated_latents_need_the_dit(self):
        from tools.train.stage_vae import build_vae, train_vae_phase, vae_decoder_phase
        self.cfg.out_dir = self.tmp.name
        ph = vae_decoder_phase(self.cfg)
        self.assertGreater(ph.generated, 0)
        with self.assertRaises(ValueError) as e:
            train_vae_phase(self.cfg, build_vae(self.cfg), ph)
        self.assertIn("vae_dec", str(e.exception))


@needs_torch
class TestTextParse(unittest.TestCase):
    """The text encoder's parse head (tools/train/text_parse.py)."""

    def test_side_heads_weigh_save_and_restore_only_the_heads_built(self):
        from tools.train.steps import SideHeads
        torch.manual_seed(0)
        heads = SideHeads(1e-2)
        heads.add("a", torch.nn.Linear(3, 2), 0.5, "short")
        heads.add("b", torch.nn.Linear(3, 2), 0.0)                   # weight 0: not built
        self.assertTrue("a" in heads and "b" not in heads)
        parts = {"a": heads["a"](torch.ones(1, 3)).pow(2).sum(), "other": torch.tensor(7.0)}
        self.assertEqual(float(heads.weighted(parts)), 0.5 * float(parts["a"]))   # "other" is not a head's
        self.assertEqual(heads.describe({"a": torch.tensor(1.0)}), " short=1.000")
        heads.zero_grad()
        heads.weighted(parts).backward()
        heads.step()
        state = heads.state()
        self.assertEqual(set(state), {"a"})
        again = SideHeads(1e-2)
        again.add("a", torch.nn.Linear(3, 2), 0.5)
        again.load(state)
        for p, q in zip(heads["a"].parameters(), again["a"].parameters()):
            self.assertTrue(torch.equal(p, q))
        self.assertEqual(again.opts["a"].state_dict()["state"][0]["step"], 1)
        fresh = SideHeads(1e-2)
        fresh.add("c", torch.nn.Linear(3, 2), 1.0)
        fresh.load(state)                                            # a head the checkpoint lacks stays fresh
        self.assertEqual(fresh.opts["c"].state_dict()["state"], {})

    def test_targets_name_both_objects_in_caption_order(self):
        import numpy as np
        from tools.tinyworld.world import COLOURS, MOTIONS, SHAPES, sample_spec, sample_spec2
        from tools.train.text_parse import IGNORE, targets
        rng = np.random.default_rng(4)
        two, one = sample_spec2(rng), sample_spec(rng)
        t = targets([two, one, two, two], ["x", "y", "", "z"], [False, False, False, True])
        names = [list(COLOURS), list(SHAPES), list(MOTIONS)]
        for s, o in enumerate(two.objects):
            self.assertEqual(t[0, s].tolist(), [names[0].index(o.colour), names[1].index(o.shape),
                                                names[2].index(o.motion)])
            self.assertEqual(t[3, s].tolist(), [IGNORE, IGNORE, names[2].index(o.motion)])   # by reference
        self.assertEqual(t[1, 1].tolist(), [len(n) for n in names])                       # "none"
        self.assertEqual(set(t[2].flatten().tolist()), {IGNORE})                          # empty caption

    def test_loss_reads_real_tokens_of_captions_that_say_something(self):
        from tools.train.text_parse import IGNORE, ParseHead
        torch.manual_seed(0)
        head = ParseHead(8)
        states = torch.randn(2, 5, 8, requires_grad=True)
        mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
        tgt = torch.tensor([[[1, 0, 2], [3, 1, 7]], [[IGNORE] * 3] * 2])
        loss = head.loss(states, mask, tgt)
        loss.backward()
        self.assertGreater(float(loss), 0.0)
        self.assertGreater(float(states.grad[0, :3].abs().min()), 0.0)
        self.assertEqual(float(states.grad[0, 3:].abs().max()), 0.0)     # padding
        self.assertEqual(float(states.grad[1].abs().max()), 0.0)         # an empty caption
        moved = states.detach().clone()
        moved[0, 3:] += 5.0
        self.assertEqual(float(head.loss(moved, mask, tgt)), float(loss))
        self.assertEqual(float(head.loss(states, mask, torch.full_like(tgt, IGNORE))), 0.0)

    def test_each_token_names_its_own_object(self):
        import numpy as np
        import sentencepiece as spm
        from tools.tinyworld.captions import parse_caption, ref_caption, sample_caption, sample_caption2
        from tools.tinyworld.world import COLOURS, MOTIONS, SHAPES, sample_spec, sample_spec2
        from tools.train.data import train_sentencepiece
        from tools.train.text_parse import IGNORE, OWN_FIELDS, own_targets, owner_table, token_objects
        from tools.tinyworld.captions import all_caption_texts
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "sp.model")
            train_sentencepiece(path, 256, all_caption_texts(two_objects=True, n_two=2000))
            sp = spm.SentencePieceProcessor(model_file=path)
        rng = np.random.default_rng(7)
        for k in range(300):
            spec = sample_spec2(rng) if k % 2 else sample_spec(rng)
            by_ref = k % 3 == 0
            text = (ref_caption(rng, spec) if by_ref else
                    sample_caption2(rng, spec) if k % 2 else sample_caption(rng, spec))
            ids = sp.encode(" ".join(text.split()))
            own = token_objects(sp, text, len(spec.objects), 64)
            self.assertEqual(own[len(ids):], [-1] * (64 - len(ids)), text)           # </s>, padding
            for j, o in enumerate(spec.objects):
                said = parse_caption(sp.decode([i for i, w in zip(ids, own) if w == j]))
                self.assertEqual(said["motion"], o.motion, text)
                self.assertEqual(said["colour"], None if by_ref else o.colour, text)
                self.assertEqual(said["shape"], None if by_ref else o.shape, text)
            rest = parse_caption(sp.decode([i for i, w in zip(ids, own) if w < 0]))
            self.assertEqual((rest["colour"], rest["shape"], rest["motion"]), (None, None, None), text)
            t = own_targets([spec], owner_table(sp, [spec], [text], 64), [by_ref])[0]
            names = [n for _, n in OWN_FIELDS]
            for j, w in enumerate(own):
                if w < 0:
                    self.assertEqual(set(t[j].tolist()), {IGNORE})
                    continue
                o = spec.objects[w]
                want = [IGNORE if by_ref else names[0].index(o.colour), IGNORE if by_ref else names[1].index(o.shape),
                        names[2].index(o.motion), w]
                self.assertEqual(t[j].tolist(), want, text)
        self.assertEqual(set(own_targets([spec], owner_table(sp, [spec], [""], 64)).flatten().tolist()), {IGNORE})

    def test_own_loss_reads_only_the_tokens_it_asks(self):
        from tools.train.text_parse import IGNORE, OwnHead
        torch.manual_seed(0)
        head = OwnHead(8)
        states = torch.randn(2, 4, 8, requires_grad=True)
        tgt = torch.full((2, 4, 4), IGNORE)
        tgt[0, 1] = torch.tensor([2, 1, 3, 0])
        tgt[1, 2] = torch.tensor([IGNORE, IGNORE, 5, 1])
        loss = head.loss(states, tgt)
        loss.backward()
        self.assertGreater(float(loss), 0.0)
        asked = torch.zeros(2, 4, dtype=torch.bool)
        asked[0, 1] = asked[1, 2] = True
        self.assertGreater(float(states.grad[asked].abs().min()), 0.0)
        self.assertEqual(float(states.grad[~asked].abs().max()), 0.0)
        self.assertEqual(float(head.loss(states, torch.full_like(tgt, IGNORE))), 0.0)

    def test_dit_stage_with_the_head_resumes_the_same(self):
        import dataclasses
        from tools.train.config import TrainConfig
        from tools.train.data import Tokenizer, train_sentencepiece, train_spec
        from tools.train.stage_dit import build_dit, build_t5, train_dit
        cfg = TrainConfig(seed=3, world="varied", p_two=0.5, dit_steps=4, dit_batch=2, dit_bf16=False,
                          text_parse=0.1, text_parse_own=0.1, grounding=0.1, object_head=0.1, ckpt_every_s=0.0)
        cfg.t5 = dataclasses.replace(cfg.t5, dim=16, dim_attn=16, dim_ffn=24)
        cfg.dit = dataclasses.replace(cfg.dit, dim=32, ffn_dim=48, num_heads=2, num_layers=1)
        with tempfile.TemporaryDirectory() as tmp:
            sp = os.path.join(tmp, "sp.model")
            train_sentencepiece(sp, cfg.t5.vocab)
            tok = Tokenizer(sp, cfg.dit.text_len)
            specs = [train_spec(cfg.seed, i, "varied", 0.5) for i in range(6)]
            lat = torch.randn(6, 16, 2, 4, 4)
            feet = torch.rand(6, 2, 2, 4, 4)

            def run(out):
                torch.manual_seed(1)
                dit, t5 = build_dit(cfg), build_t5(cfg)
                train_dit(dataclasses.replace(cfg, out_dir=out), dit, t5, tok, lat, specs, log=lambda *_: None,
                          feet=feet)
                st = torch.load(os.path.join(out, "dit_ckpt.pt"))
                return {**{f"t5.{k}": v for k, v in t5.state_dict().items()},
                        **{f"head.{k}": v for k, v in st["parse"]["head"].items()},
                        **{f"own.{k}": v for k, v in st["parse_own"]["head"].items()},
                        **{f"objects.{k}": v for k, v in st["object_head"]["head"].items()}}

            with_head = assert_resumes_the_same(self, tmp, run, die_after=2)
            os.rename(os.path.join(tmp, "a"), os.path.join(tmp, "with_head"))
            cfg.text_parse = cfg.text_parse_own = cfg.grounding = cfg.object_head = 0.0
            torch.manual_seed(1)
            dit, t5 = build_dit(cfg), build_t5(cfg)
            os.makedirs(os.path.join(tmp, "without"))
            train_dit(dataclasses.replace(cfg, out_dir=os.path.join(tmp, "without")), dit, t5, tok, lat, specs,
                      log=lambda *_: None)
            moved = max(float((t5.state_dict()[k] - with_head[f"t5.{k}"]).abs().max()) for k in t5.state_dict())
            self.assertGreater(moved, 0.0)                                # the head's loss reaches the encoder


@needs_torch
class TestGrounding(unittest.TestCase):
    """The grounding loss (tools/train/grounding.py)."""

    def test_footprints_are_where_the_objects_are_drawn(self):
        import numpy as np
        from tools.train.data import train_clip
        from tools.train.grounding import footprints
        for i in range(6):
            clip = train_clip(0, i, 17, 64, "varied", 0.5)
            f = footprints(clip, 5, 8)
            self.assertEqual(f.shape, (2, 5, 8, 8))
            if len(clip.spec.objects) == 1:
                self.assertEqual(float(f[1].max()), 0.0)
            for k, o in enumerate(clip.spec.objects):
                drawn = (np.abs(clip.frames.astype(int) - np.array(o.rgb)).sum(-1) < 30).astype(np.float32)
                cells = drawn.reshape(17, 8, 8, 8, 8).mean(axis=(2, 4))
                want = np.stack([cells[0]] + [cells[4 * j - 3: 4 * j + 1].mean(0) for j in range(1, 5)])
                # the colour test misses the anti-aliased rim: within a quarter of a cell
                self.assertLess(float(np.abs(f[k] - want).max()), 0.25, (i, k))
                self.assertGreater(float(f[k].sum()), 0.0)
        with self.assertRaises(ValueError):
            footprints(clip, 4, 8)

    def test_recording_leaves_the_forward_alone_and_keeps_each_blocks_attention(self):
        from tools.train.config import TrainConfig
        from tools.train.grounding import recording
        from tools.train.stage_dit import build_dit
        cfg = TrainConfig()
        cfg.dit.dim, cfg.dit.ffn_dim, cfg.dit.num_heads, cfg.dit.num_layers = 32, 48, 2, 3
        cfg.dit.patch_size = (1, 1, 1)
        torch.manual_seed(0)
        dit = build_dit(cfg).eval()
        x, ctx = torch.randn(2, 16, 2, 3, 5), torch.randn(2, 7, cfg.t5.dim)
        plain = dit(x, torch.tensor([500.0, 200.0]), ctx)
        with recording(dit) as maps:
            kept = dit(x, torch.tensor([500.0, 200.0]), ctx)
        self.assertTrue(torch.equal(plain, kept))
        self.assertEqual([tuple(m.shape) for m in maps], [(2, 30, dit.text_len)] * 3)
        torch.testing.assert_close(maps[0].sum(-1), torch.ones(2, 30))
        self.assertTrue(all(b.cross_attn.kept is None for b in dit.blocks))

    def test_object_head_reads_the_block_halfway_up_inside_footprints_of_named_objects(self):
        from tools.tinyworld.world import COLOURS, MOTIONS, SHAPES, sample_spec2
        from tools.train.config import TrainConfig
        from tools.train.grounding import ObjectHead, hidden_after
        from tools.train.stage_dit import build_dit
        import numpy as np
        cfg = TrainConfig()
        cfg.dit.dim, cfg.dit.ffn_dim, cfg.dit.num_heads, cfg.dit.num_layers = 32, 48, 2, 4
        torch.manual_seed(0)
        dit = build_dit(cfg).eval()
        self.assertEqual(ObjectHead.block(4), 1)
        x, ctx = torch.randn(2, 16, 2, 4, 4), torch.randn(2, 7, cfg.t5.dim)
        with hidden_after(dit, 1) as hidden:
            dit(x, torch.tensor([500.0, 200.0]), ctx)
        self.assertEqual([tuple(h.shape) for h in hidden], [(2, 8, 32)])
        self.assertEqual(dit.blocks[1]._forward_hooks, {})                # removed after
        spec = sample_spec2(np.random.default_rng(3))
        head = ObjectHead(32)
        states = torch.randn(2, 8, 32, requires_grad=True)
        feet = torch.zeros(2, 2, 8)
        feet[0, 0, :3] = 1.0
        feet[0, 1, 5] = 0.5
        feet[1, 0, :] = 1.0
        loss = head.loss(states, feet, [spec, spec], torch.tensor([True, False]))
        loss.backward()
        self.assertGreater(float(loss), 0.0)
        self.assertGreater(float(states.grad[0, [0, 1, 2, 5]].abs().min()), 0.0)
        self.assertEqual(float(states.grad[0, [3, 4, 6, 7]].abs().max()), 0.0)   # outside every footprint
        self.assertEqual(float(states.grad[1].abs().max()), 0.0)                   # an empty caption
        # a head that names the right classes pays less than one that names others
        with torch.no_grad():
            head.proj.weight.zero_()
            head.proj.bias.zero_()
            o = spec.objects[0]
            off = 0
            for field, names in (("colour", list(COLOURS)), ("shape", list(SHAPES)), ("motion", list(MOTIONS))):
                head.proj.bias[off + names.index(getattr(o, field))] = 5.0
                off += len(names)
        only0 = torch.zeros_like(feet)
        only0[0, 0, :3] = 1.0
        right = float(head.loss(states.detach(), only0, [spec, spec], torch.tensor([True, True])))
        swapped = dataclasses.replace(spec, objects=spec.objects[::-1])
        wrong = float(head.loss(states.detach(), only0, [swapped, swapped], torch.tensor([True, True])))
        self.assertLess(right, wrong)

    def test_loss_rewards_attention_on_the_objects_own_words(self):
        from tools.train.grounding import loss
        feet = torch.zeros(1, 2, 4)
        feet[0, 0, :2] = 1.0                    # tokens 0-1 are object 0, 2-3 object 1
        feet[0, 1, 2:] = 1.0
        owners = torch.zeros(1, 2, 6)
        owners[0, 0, :2] = 1.0                  # words 0-1 name object 0, words 2-3 object 1
        owners[0, 1, 2:4] = 1.0

        def maps(bound):
            p = torch.full((1, 4, 8), 0.01)
            for q in range(4):
                w = (q >= 2) == bound           # bound: each token on its own object's words
                p[0, q, 2:4] += 0.45 if w else 0.0
                p[0, q, 0:2] += 0.0 if w else 0.45
            return [p / p.sum(-1, keepdim=True)]

        good, bad = float(loss(maps(True), feet, owners)), float(loss(maps(False), feet, owners))
        self.assertLess(good, 0.2)
        self.assertGreater(bad, 3.0)
        logits = torch.zeros(1, 4, 8, requires_grad=True)
        loss([torch.softmax(logits, -1)], feet, owners).backward()
        self.assertGreater(float(logits.grad.abs().max()), 0.0)
        self.assertEqual(float(loss(maps(True), feet, torch.zeros_like(owners))), 0.0)   # empty captions
        self.assertEqual(float(loss([], feet, owners)), 0.0)


@needs_torch
class TestVAEPhases(unittest.TestCase):
    def test_phases_in_order_and_skipped_at_zero_steps(self):
        import numpy as np
        from tools.train.config import TrainConfig
        from tools.train.stage_vae import vae_batch, vae_phases
        cfg = TrainConfig(seed=3, frames=9, size=32)
        self.assertEqual([p.name for p in vae_phases(cfg)], ["vae_img", "vae_long"])   # no window phase
        cfg.vae_steps = 10
        ph = vae_phases(cfg)
        self.assertEqual([p.name for p in ph], ["vae_img", "vae", "vae_long"])
        x, specs = vae_batch(cfg, ph[0], np.random.default_rng(0), 0)
        self.assertEqual(tuple(x.shape), (cfg.vae_img_batch, 3, 1, 32, 32))
        self.assertEqual(len(specs), cfg.vae_img_batch)
        cfg.vae_img_steps = 0
        self.assertEqual([p.name for p in vae_phases(cfg)], ["vae", "vae_long"])

    def test_mixed_single_frames_are_frames_of_fresh_clips(self):
        import numpy as np
        from tools.train.config import TrainConfig
        from tools.train.data import clips_tensor, train_clip
        from tools.train.stage_vae import image_batch, vae_phases
        cfg = TrainConfig(seed=3, frames=9, size=32)
        long = vae_phases(cfg)[-1]
        self.assertGreater(long.mix_frames, 0)
        x = image_batch(cfg, long, np.random.default_rng(1), 7)
        self.assertEqual(tuple(x.shape), (long.mix_frames, 3, 1, 32, 32))
        t = np.random.default_rng(1).integers(0, cfg.frames, long.mix_frames)
        base = long.clip_base + 5_000_000 + 7 * long.mix_frames
        for i in range(long.mix_frames):
            clip = clips_tensor([train_clip(cfg.seed, base + i, cfg.frames, cfg.size)])
            torch.testing.assert_close(x[i, :, 0], clip[0, :, t[i]])

    def test_inflated_image_vae_codes_a_clip_frame_by_frame(self):
        from tools.train.config import TrainConfig
        from tools.train.data import clips_tensor, train_clip
        from tools.train.stage_vae import build_vae, inflate_image_vae, vae_phases
        cfg = TrainConfig(seed=3, frames=9, size=32)
        cfg.vae.dim = 4
        self.assertEqual([p.inflate for p in vae_phases(cfg)], [False, True])
        torch.manual_seed(0)
        vae = build_vae(cfg).eval()
        for p in vae.parameters():      # an image phase leaves every tap trained: make them all non-zero
            torch.nn.init.normal_(p, std=0.05)
        x = clips_tensor([train_clip(cfg.seed, 0, cfg.frames, cfg.size)])
        with torch.no_grad():
            before = vae.encode_moments(x, chunked=False)[0]
            frames = [vae.encode_moments(x[:, :, 4 * k:4 * k + 1], chunked=False)[0] for k in range(3)]
            self.assertGreater(float((before[:, :, 1] - frames[1][:, :, 0]).abs().max()), 1e-3)
            inflate_image_vae(vae)
            z = vae.encode_moments(x, chunked=False)[0]
            for k in range(3):      # latent frame k is the image code of frame 4k
                torch.testing.assert_close(z[:, :, k], frames[k][:, :, 0])
            y = vae.decoder(vae.conv2(z))
            for k in range(1, 3):   # and decodes to the image's decoding, four times
                img = vae.decoder(vae.conv2(z[:, :, k:k + 1]))[:, :, 0]
                for t in range(4 * k - 3, 4 * k + 1):
                    torch.testing.assert_close(y[:, :, t], img, rtol=1e-4, atol=1e-5)
        cfg.vae_img_steps = 0
        self.assertEqual([p.inflate for p in vae_phases(cfg)], [False])


@needs_torch
class TestRunSettings(unittest.TestCase):
    def test_vae_gate_stops_below_and_passes_at(self):
        from tools.train.config import TrainConfig
        from tools.train.train import check_vae_gate
        cfg = TrainConfig(out_dir="runs/x")
        with self.assertRaises(SystemExit) as e:
            check_vae_gate(cfg, {"vae_checker_roundtrip": cfg.vae_gate_roundtrip - 0.025})
        self.assertIn("--vae-long-steps", str(e.exception))
        check_vae_gate(cfg, {"vae_checker_roundtrip": cfg.vae_gate_roundtrip})

    def test_vae_from_a_pack_takes_its_weights_and_refuses_other_folders(self):
        from tools.train import train
        from tools.train.config import TrainConfig
        from tools.train.stage_vae import build_vae
        pack = os.path.join(os.path.dirname(__file__), "..", "..", "models", "default")
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaises(SystemExit) as e:
                train.main(["--vae-from", tmp, "--out", os.path.join(tmp, "run")])
            self.assertIn(f"--vae-from {tmp}: no moonreel_pack.json", str(e.exception))
            self.assertFalse(os.path.exists(os.path.join(tmp, "run")))      # refused before the run
            cfg = TrainConfig()
            cfg.vae.dim = 8
            with self.assertRaises(SystemExit) as e:
                train.check_vae_pack(pack, cfg)
            self.assertIn("its VAE is", str(e.exception))
        cfg = TrainConfig(vae_from=pack)
        train.check_vae_pack(pack, cfg)
        vae = build_vae(cfg)
        m = train.pack_vae(cfg, vae, lambda *_: None)
        want = torch.load(os.path.join(pack, "Wan2.1_VAE.pth"), map_location="cpu")
        for k, v in vae.state_dict().items():
            torch.testing.assert_close(v, want[k], rtol=0, atol=0)
        self.assertEqual(len(m["vae_from_sha256"]), 64)
        self.assertEqual(m["vae_seconds"], 0.0)
        # the model card names the pack instead of VAE phases that did not run
        from tools.train import card
        with open(os.path.join(pack, "moonreel_pack.json")) as f:
            info = json.load(f)
        self.assertIn("VAE, whole clips", card.render(info))
        info["config"]["vae_from"] = pack
        info["metrics"].update(m)
        text = card.render(info)
        self.assertIn(f"VAE: none trained; the pack `{pack}`'s", text)
        self.assertIn(m["vae_from_sha256"][:16], text)
        self.assertNotIn("VAE, whole clips", text)

    def test_runs_from_before_the_reading_order_are_refused(self):
        from tools.train import train
        from tools.train.config import TrainConfig
        with tempfile.TemporaryDirectory() as tmp:
            old = json.loads(TrainConfig(out_dir=tmp).to_json())
            del old["reading_order"]            # a config.json written before the setting
            with open(os.path.join(tmp, "config.json"), "w") as f:
                json.dump(old, f)
            with self.assertRaises(SystemExit) as e:
                train.main(["--out", tmp])
            self.assertIn("before tinyworld's reading order", str(e.exception))

    def test_older_run_reads_missing_settings_as_it_ran(self):
        # a run from before the image phase and the mixed frames resumes as it ran, not
        # with today's defaults
        from tools.train.config import LEGACY, TrainConfig, with_missing_settings
        old = json.loads(TrainConfig().to_json())
        for k in LEGACY:
            del old[k]
        old["vae_long_lr"] = 1.5e-4
        back = with_missing_settings(old)
        self.assertEqual({k: back[k] for k in LEGACY}, LEGACY)
        self.assertEqual(back["vae_long_lr"], 1.5e-4)
        self.assertEqual(set(back), set(json.loads(TrainConfig().to_json())))


@needs_torch
class TestSchedule(unittest.TestCase):
    def test_extended_stage_keeps_its_schedule(self):
        from tools.train.config import TrainConfig, cosine_horizon
        ext = ((1703, 2900), (3000, 6000))
        self.assertEqual(cosine_horizon(0, 8000, ext), 2900)
        self.assertEqual(cosine_horizon(1702, 8000, ext), 2900)
        self.assertEqual(cosine_horizon(1703, 8000, ext), 6000)
        self.assertEqual(cosine_horizon(3000, 8000, ext), 8000)
        self.assertEqual(cosine_horizon(5, 100, ()), 100)

    def test_palette_world_is_the_shipped_runs(self):
        import numpy as np
        from tools.tinyworld import clip_for_index
        from tools.train.data import train_clip, train_spec
        for i in range(4):
            np.testing.assert_array_equal(train_clip(3, i, 5, 32).frames, clip_for_index(3, i, 5, 32).frames)
            self.assertEqual(train_spec(3, i), clip_for_index(3, i, 5, 32).spec)

    def test_varied_world_draws_two_objects_and_captions_name_both(self):
        import numpy as np
        from tools.tinyworld.captions import parse_objects
        from tools.train.data import random_captions, train_clip, train_spec
        n = 40
        clips = [train_clip(3, i, 5, 64, "varied", 0.5) for i in range(n)]
        two = sum(len(c.spec.objects) == 2 for c in clips)
        self.assertTrue(8 <= two <= 32, two)        # binomial(40, 0.5) outside: 1e-4
        names = lambda s: [(o.shape, o.colour, o.motion) for o in s.objects]  # noqa: E731
        for i, c in enumerate(clips):
            s = train_spec(3, i, "varied", 0.5)     # the names, without rendering
            self.assertEqual(names(s), names(c.spec))
            self.assertEqual(s.background, c.spec.background)
            self.assertIsNotNone(c.spec.bg_rgb)     # shades drawn
        caps = random_captions(np.random.default_rng(0), [c.spec for c in clips], 0.0)
        for c, cap in zip(clips, caps):
            found = sorted(o["colour"] for o in parse_objects(cap) if o["colour"])
            self.assertEqual(found, sorted(o.colour for o in c.spec.objects), cap)
        self.assertTrue(all(len(train_spec(3, i, "varied", 0.0).objects) == 1 for i in range(20)))
        with self.assertRaises(ValueError):
            train_clip(3, 0, 5, 64, "painted")

    def test_config_json_round_trip(self):
        from tools.train.config import TrainConfig
        cfg = TrainConfig(seed=4)
        cfg.vae_extended = ((10, 20), (30, 40))
        back = TrainConfig.from_json(cfg.to_json())
        self.assertEqual(back.to_json(), cfg.to_json())
        self.assertEqual(back.vae_extended, cfg.vae_extended)

    def test_dit_overrides_name_the_bad_item(self):
        import dataclasses
        from tools.train.config import TrainConfig, dit_overrides
        got = dit_overrides(["patch_size=1,1,1", "dim=128", "num_heads=2"])
        self.assertEqual(got, {"patch_size": (1, 1, 1), "dim": 128, "num_heads": 2})
        cfg = TrainConfig()
        cfg.dit = dataclasses.replace(cfg.dit, **got)
        self.assertEqual(TrainConfig.from_json(cfg.to_json()).dit, cfg.dit)
        for bad, word in [("dim", "FIELD=VALUE"), ("text_len=8", "FIELD=VALUE"), ("depth=3", "FIELD=VALUE"),
                          ("dim=wide", "an integer"), ("patch_size=1,2", "three positive"),
                          ("patch_size=2,2,2", "the first 1"), ("dim=100", "not a multiple")]:
            with self.assertRaises(SystemExit) as e:
                dit_overrides([bad])
            self.assertIn(word, str(e.exception), bad)



@needs_torch
class TestRefsStage(unittest.TestCase):
    """The reference stage's pieces (tools/train/stage_refs.py)."""

    def setUp(self):
        torch.set_num_threads(1)
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_folders_from_before_the_reading_order_are_refused(self):
        from tools.train import stage_refs
        from tools.train.config import TrainConfig
        run = os.path.join(self.tmp.name, "run")
        os.makedirs(run)
        open(os.path.join(run, "latents.pt"), "w").close()
        cfg = json.loads(TrainConfig(world="varied", p_two=0.5).to_json())
        with open(os.path.join(run, "config.json"), "w") as f:
            json.dump(cfg, f)
        self.assertTrue(stage_refs.base_run(run).reading_order)
        del cfg["reading_order"]
        with open(os.path.join(run, "config.json"), "w") as f:
            json.dump(cfg, f)
        with self.assertRaises(SystemExit) as e:
            stage_refs.base_run(run)
        self.assertIn("before tinyworld's reading order", str(e.exception))
        out = os.path.join(self.tmp.name, "refs")
        os.makedirs(out)
        old = dataclasses.asdict(stage_refs.RefsConfig())
        del old["reading_order"]
        with open(os.path.join(out, "refs_config.json"), "w") as f:
            json.dump(old, f)
        with self.assertRaises(SystemExit) as e:
            stage_refs.main(["--out", out, "--pack", "models/default"])
        self.assertIn("before tinyworld's reading order", str(e.exception))

    def test_stage_with_parse_heads_reads_captions_by_reference_and_resumes_the_same(self):
        import dataclasses
        from unittest import mock
        from tools.tinyworld.captions import all_caption_texts
        from tools.train import stage_refs, text_parse
        from tools.train.config import TrainConfig
        from tools.train.data import Tokenizer, train_sentencepiece, train_spec
        from tools.train.stage_dit import build_dit, build_t5
        cfg = TrainConfig(seed=3)
        cfg.t5 = dataclasses.replace(cfg.t5, dim=16, dim_attn=16, dim_ffn=24)
        cfg.dit = dataclasses.replace(cfg.dit, dim=32, ffn_dim=48, num_heads=2, num_layers=1, text_len=64)
        rc = stage_refs.RefsConfig(seed=4, steps=4, batch=2, bf16=False, ckpt_every_s=0.0, p_refs=1.0,
                                   p_two_refs=1.0, p_ref_caption=1.0, p_uncond=0.0, text_parse=0.1,
                                   text_parse_own=0.1)
        specs = [train_spec(cfg.seed, i, "varied", 1.0) for i in range(6)]
        self.assertTrue(all(len(s.objects) == 2 for s in specs[:2]))
        cache = {"lat": [torch.randn(6, 16, 2, 4, 4)], "refs": [torch.randn(6, 2, 16, 4, 4)], "specs": specs}
        sp = os.path.join(self.tmp.name, "sp.model")
        train_sentencepiece(sp, cfg.t5.vocab, all_caption_texts(two_objects=True, n_two=2000), whole_words=True)
        tok = Tokenizer(sp, 64)
        asked = []
        real_losses = text_parse.Heads.losses

        def spy(heads, ctx, mask, specs_, texts, owners, by_ref=None):
            asked.append(list(by_ref))
            return real_losses(heads, ctx, mask, specs_, texts, owners, by_ref)

        def run(out):
            torch.manual_seed(1)
            dit, t5 = build_dit(cfg), build_t5(cfg)
            with mock.patch.object(text_parse.Heads, "losses", spy):
                stage_refs.train_refs(rc, dit, t5, tok, cache, out, log=lambda *_: None)
            st = torch.load(os.path.join(out, "refs_ckpt.pt"))
            return {**{f"t5.{k}": v for k, v in t5.state_dict().items()},
                    **{f"{h}.{k}": v for h in ("parse", "parse_own") for k, v in st[h]["head"].items()}}

        assert_resumes_the_same(self, self.tmp.name, run, die_after=2)
        self.assertTrue(asked and all(all(b) for b in asked))     # every caption by reference, so flagged

    def test_token_timesteps_reference_frames_are_clean(self):
        from tools.train.stage_refs import token_t
        tt = token_t(torch.tensor([700.0, 300.0]), 5, 2, 4, torch.tensor([False, True]))
        self.assertEqual(tt.shape, (2, 7 * 4))
        self.assertTrue(bool((tt[0, :20] == 700).all()) and bool((tt[0, 20:] == 0).all()))
        self.assertTrue(bool((tt[1, :4] == 0).all()) and bool((tt[1, 4:20] == 300).all()))

    def test_retrained_tokenizer_keeps_the_rows_of_shared_pieces(self):
        import sentencepiece as spm
        from tools.train.data import train_sentencepiece
        from tools.train.stage_dit import build_t5
        from tools.train.config import TrainConfig
        from tools.train.stage_refs import retrain_tokenizer
        cfg = TrainConfig()
        cfg.t5.dim = cfg.t5.dim_attn = 16
        cfg.t5.dim_ffn = 24
        old = os.path.join(self.tmp.name, "old.model")
        new = os.path.join(self.tmp.name, "new.model")
        train_sentencepiece(old, cfg.t5.vocab)
        t5 = build_t5(cfg)
        before = t5.token_embedding.weight.detach().clone()
        figs = retrain_tokenizer(old, new, t5, cfg.t5.vocab)
        a, b = spm.SentencePieceProcessor(model_file=old), spm.SentencePieceProcessor(model_file=new)
        self.assertGreater(figs["kept"], 100)
        after = t5.token_embedding.weight.detach()
        for piece in ("\u2581red", "\u2581circle", "\u2581background"):
            torch.testing.assert_close(after[b.piece_to_id(piece)], before[a.piece_to_id(piece)])
        # "object" was letters and unknowns before; now it is spelled without <unk>
        self.assertNotIn(b.unk_id(), b.encode("the first object moving up"))

    def test_cache_items_are_deterministic_with_references_of_each_object(self):
        from tools.train.stage_refs import RefsConfig, cache_item
        rc = RefsConfig()
        a = cache_item(rc, 17, 17, 64)
        b = cache_item(rc, 17, 17, 64)
        self.assertEqual(a[0], b[0])
        self.assertEqual(len(a[2]), len(a[0].objects))
        for x, y in zip(a[2], b[2]):
            self.assertTrue((x == y).all())
        # a reference shows its object in the clip's own shade on the white canvas
        o = a[0].objects[0]
        img = a[2][0]
        if o.colour != "white":
            self.assertEqual(tuple(img[0, 0]), (255, 255, 255))
            self.assertTrue(((img == o.rgb).all(axis=-1)).sum() > 50)

    def test_cache_from_a_base_run_draws_references_of_its_clips(self):
        from tools.train import ckpt
        from tools.train.config import TrainConfig
        from tools.train.data import run_clip
        from tools.train.stage_refs import RefsConfig, build_cache, run_refs_item
        from tools.train.stage_vae import build_vae
        run_dir = os.path.join(self.tmp.name, "base")
        os.makedirs(run_dir)
        run = TrainConfig(seed=3, world="varied", p_two=0.5)
        run.vae.dim = 4
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            f.write(run.to_json())
        n = 9
        ckpt.save({"latents": torch.randn(n, 16, 5, 8, 8), "seconds": 0.0}, os.path.join(run_dir, "latents.pt"))
        vae = build_vae(run).eval()
        rc = RefsConfig(seed=5, base_run=run_dir)
        path = os.path.join(self.tmp.name, "refs_cache.pt")
        cache = build_cache(rc, vae, run.frames, run.size, path, log=lambda _: None)
        specs = [run_clip(run, i).spec for i in range(n)]
        self.assertEqual(cache["specs"], specs)
        self.assertEqual(tuple(cache["refs"][0].shape), (n, 2, 16, 8, 8))
        self.assertTrue(any(len(s.objects) == 2 for s in specs) and any(len(s.objects) == 1 for s in specs))
        for i, s in enumerate(specs):
            self.assertEqual(bool(cache["refs"][0][i, 1].abs().sum() > 0), len(s.objects) == 2, i)
            # each reference shows its object in the clip's own shade
            _, _, imgs = run_refs_item(rc, run, i)
            for o, img in zip(s.objects, imgs):
                self.assertGreater(int((img == o.rgb).all(axis=-1).sum()), 20, (i, o))
        self.assertEqual(cache["lat"][0].shape[0], n)
        again = build_cache(rc, vae, run.frames, run.size, path, log=lambda _: None)      # done: read back, not redone
        self.assertTrue(torch.equal(again["refs"][0], cache["refs"][0]))
        run.world = "palette"
        with open(os.path.join(run_dir, "config.json"), "w") as f:
            f.write(run.to_json())
        with self.assertRaises(SystemExit) as e:
            build_cache(rc, vae, run.frames, run.size, os.path.join(self.tmp.name, "other.pt"))
        self.assertIn("varied-world run", str(e.exception))


@needs_torch
class TestEffectStage(unittest.TestCase):
    """The effect LoRA stage's pieces (tools/train/stage_effect.py), on a tiny model."""

    def setUp(self):
        from tools.train.config import TrainConfig
        from tools.train.stage_dit import build_dit, build_t5
        torch.set_num_threads(1)
        torch.manual_seed(0)
        cfg = TrainConfig(seed=3)
        cfg.t5.dim = cfg.t5.dim_attn = 16
        cfg.t5.dim_ffn = 24
        cfg.dit.dim, cfg.dit.ffn_dim, cfg.dit.num_heads, cfg.dit.num_layers = 32, 48, 2, 2
        self.dit, self.t5 = build_dit(cfg).eval(), build_t5(cfg).eval()
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def test_adapter_starts_at_the_base_and_exports_what_it_computes(self):
        from tools.train.stage_effect import EffectConfig, attach_lora, export_lora
        from tools.wan_torch import st
        x, t, ctx = torch.randn(1, 16, 2, 4, 4), torch.tensor([500.0]), torch.randn(1, 32, 16)
        with torch.no_grad():
            before = self.dit(x, t, ctx)
            ec = EffectConfig(rank=4, alpha=2.0)
            mods = attach_lora(self.dit, ec.rank, ec.alpha, 0)
            torch.testing.assert_close(self.dit(x, t, ctx), before)       # B = 0: the base model
            self.assertEqual(len(mods), 2 * 10)
            for m in mods.values():
                m.B.normal_(0, 0.1)
            after = self.dit(x, t, ctx)
        self.assertGreater(float((after - before).abs().max()), 1e-3)
        path = os.path.join(self.tmp.name, "fx.safetensors")
        export_lora(mods, ec, path, {"moonreel.effect": "spin"})
        w = st.load(path)
        a = w["diffusion_model.blocks.1.ffn.0.lora_A.weight"]
        self.assertEqual((a.shape, a.dtype.name), ((4, 32), "float16"))
        self.assertEqual(w["diffusion_model.blocks.1.ffn.0.lora_B.weight"].shape, (48, 4))
        self.assertEqual(float(w["diffusion_model.blocks.0.cross_attn.k.alpha"]), 2.0)
        self.assertEqual(st.read_header(path)["__metadata__"]["moonreel.effect"], "spin")
        # merged as the engine merges it: W + (alpha / rank) B A gives the adapter's output
        m = mods["blocks.0.self_attn.q"]
        merged = m.base.weight + (2.0 / 4) * torch.from_numpy(
            w["diffusion_model.blocks.0.self_attn.q.lora_B.weight"].astype("float32")
            @ w["diffusion_model.blocks.0.self_attn.q.lora_A.weight"].astype("float32"))
        h = torch.randn(3, 32)
        with torch.no_grad():
            torch.testing.assert_close(m(h), h @ merged.t() + m.base.bias, atol=2e-3, rtol=1e-2)

    def test_resumed_training_gives_the_same_adapter(self):
        from tools.train import stage_effect
        from tools.train.data import Tokenizer
        from tools.tinyworld.world import sample_effect_spec
        import numpy as np
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        tok = Tokenizer(os.path.join(root, "models", "default", "google", "umt5-xxl", "spiece.model"), 32)
        rng = np.random.default_rng(0)
        cache = {"lat": [torch.randn(6, 16, 2, 4, 4)], "specs": [sample_effect_spec(rng, "bounce") for _ in range(6)]}
        ec = stage_effect.EffectConfig(effect="bounce", rank=4, alpha=4.0, steps=4, batch=2, bf16=False,
                                       ckpt_every_s=0.0)
        base = self.dit.state_dict()

        def run(out):
            self.dit.load_state_dict(base)
            dit = copy.deepcopy(self.dit)
            mods = stage_effect.attach_lora(dit, ec.rank, ec.alpha, ec.seed)
            stage_effect.train(ec, dit, self.t5, tok, mods, cache, out, log=lambda *_: None)
            return stage_effect.lora_state(mods)

        whole = assert_resumes_the_same(self, self.tmp.name, run, die_after=2)
        self.assertGreater(float(whole["blocks.0.ffn.2.B"].abs().max()), 0.0)


@needs_torch
class TestEffectDecoderStage(unittest.TestCase):
    """The effect decoder stage (tools/train/stage_effect_dec.py) on the shipped pack and LoRAs:
    a killed run resumes to the same decoder, and only the decoder moves."""

    def test_resumed_training_gives_the_same_decoder(self):
        import dataclasses
        import json
        import numpy as np
        from tools.train import stage_effect_dec as sd
        from tools.train.config import TrainConfig, with_missing_settings
        from tools.train.export import load_pack
        from tools.train.data import Tokenizer
        from tools.train.stage_effect import EffectConfig, attach_lora
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        pack = os.path.join(root, "models", "default")
        torch.set_num_threads(1)
        with open(os.path.join(pack, "moonreel_pack.json")) as f:
            cfg = TrainConfig.from_json(json.dumps(with_missing_settings(json.load(f)["config"])))
        dit, vae0, t5, spiece = load_pack(pack)
        tok = Tokenizer(spiece, dit.text_len)
        ec = EffectConfig()
        mods = attach_lora(dit, ec.rank, ec.alpha, 0)
        loras = sd.load_loras(mods, os.path.join(root, "recipes", "templates", "loras"), ec.rank, ec.alpha)
        # two steps of one effect clip each on a light gray, re-made by the DiT with that effect's LoRA from late steps
        fc = sd.FxDecConfig(steps=2, batch=1, warmup=1, p_effect=1.0, p_light=1.0, generated=1.0, regen_steps=(17, 19),
                            ckpt_every_s=0.0)
        base = {k: v.clone() for k, v in vae0.state_dict().items()}
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)

        def run(out):
            vae0.load_state_dict(base)
            sd.train(fc, cfg, vae0, dit, t5, tok, mods, loras, ec, out, log=lambda *_: None)
            return {k: v.clone() for k, v in vae0.state_dict().items()}

        whole = assert_resumes_the_same(self, tmp.name, run, die_after=1)
        moved = [k for k in whole if not torch.equal(whole[k], base[k])]
        self.assertTrue(moved)
        self.assertTrue(all(k.startswith(("decoder.", "conv2.")) for k in moved), moved)

        # --encoder: the encoder moves too, anchored to the pack's own latents on base-world
        # clips (p_effect 0: every clip is a base clip, and half of them the palette's).
        _, old_vae, _, _ = load_pack(pack)
        x, _, _, palette = sd.batch_clips(sd.FxDecConfig(batch=8, p_effect=0.0), cfg, np.random.default_rng(5), 0)
        self.assertTrue(palette.any() and not palette.all())
        mu_of = lambda v, xs: v.encode_moments(xs, chunked=False)[0]  # noqa: E731
        self.assertEqual(float(sd.anchor_loss(old_vae, old_vae, x[:1], mu_of(old_vae, x[:1]))), 0.0)
        fe = dataclasses.replace(fc, encoder=True, p_effect=0.0, generated=0.0)
        with self.assertRaises(ValueError):
            sd.train(fe, cfg, vae0, dit, t5, tok, mods, loras, ec, tmp.name, log=lambda *_: None)

        def run_enc(out):
            vae0.load_state_dict(base)
            sd.train(fe, cfg, vae0, dit, t5, tok, mods, loras, ec, out, log=lambda *_: None, old_vae=old_vae)
            return {k: v.clone() for k, v in vae0.state_dict().items()}

        tmp2 = tempfile.TemporaryDirectory()
        self.addCleanup(tmp2.cleanup)
        old_state = {k: v.clone() for k, v in old_vae.state_dict().items()}
        whole = assert_resumes_the_same(self, tmp2.name, run_enc, die_after=1)
        moved = [k for k in whole if not torch.equal(whole[k], base[k])]
        self.assertTrue(any(k.startswith("encoder.") for k in moved), moved)
        vae0.load_state_dict(whole)
        self.assertGreater(float(sd.anchor_loss(vae0, old_vae, x, mu_of(vae0, x))), 0.0)
        for k, v in old_vae.state_dict().items():
            self.assertTrue(torch.equal(v, old_state[k]), k)

        # The anchor is in the loss: palette clips only, no weight against a heavy one.
        def encoder_after(anchor):
            vae0.load_state_dict(base)
            f = dataclasses.replace(fe, p_varied=0.0, anchor=anchor)
            with tempfile.TemporaryDirectory() as d:
                sd.train(f, cfg, vae0, dit, t5, tok, mods, loras, ec, d, log=lambda *_: None, old_vae=old_vae)
            return {k: v.clone() for k, v in vae0.state_dict().items() if k.startswith("encoder.")}
        free, held = encoder_after(0.0), encoder_after(1e3)
        self.assertTrue(any(not torch.equal(free[k], held[k]) for k in free))

        # remake: a re-made row carries no gradient back to the encoder, the others keep theirs.
        mu = torch.randn(2, 16, 5, 8, 8, requires_grad=True)
        real = sd.remade
        sd.remade = lambda *a: torch.zeros(1, 16, 5, 8, 8)
        try:
            out = sd.remake(fe, cfg, dit, t5, tok, mods, loras, ec, vae0, [None, None], [None, None],
                            np.array([True, False]), np.random.default_rng(0), torch.Generator(), mu * 1.0)
        finally:
            sd.remade = real
        out.sum().backward()
        self.assertEqual(float(mu.grad[0].abs().sum()), 0.0)
        self.assertTrue(torch.equal(mu.grad[1], torch.ones_like(mu.grad[1])))



@needs_torch
class TestPipeline(unittest.TestCase):
    """tools/train/pipeline.py: the stages in order, each skipped once its output exists,
    the chain stopped by a failing stage (a fake runner; no training)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = os.path.join(self.tmp.name, "run")

    def tearDown(self):
        self.tmp.cleanup()

    def fake(self, fail_at=None, make=True):
        calls = []

        def run(args):
            calls.append(list(args))
            if fail_at is not None and len(calls) == fail_at:
                return 3
            if make:    # the stage's output: its --export (or the base run's pack)
                target = args[args.index("--export") + 1] if "--export" in args else os.path.join(self.out, "pack")
                if target.endswith(".safetensors"):
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    open(target, "w").close()
                else:
                    os.makedirs(target, exist_ok=True)
                    open(os.path.join(target, "moonreel_pack.json"), "w").close()
            return 0
        return run, calls

    def test_stages_in_order_then_skipped(self):
        import io
        from tools.train import pipeline
        run, calls = self.fake()
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(pipeline.main(["--out", self.out, "--threads", "1"], run=run), 0)
        self.assertEqual([c[0] for c in calls], ["tools.train.train", "tools.train.stage_refs"]
                         + ["tools.train.stage_effect"] * 3 + ["tools.train.stage_effect_dec"])
        self.assertEqual(calls[0][calls[0].index("--world") + 1], "varied")
        refs = os.path.join(self.out, "pack_refs")
        for c in calls[2:]:     # the effects and the decoder stand on the reference stage's pack
            self.assertEqual(c[c.index("--pack") + 1], refs)
        again, calls2 = self.fake()
        with contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(pipeline.main(["--out", self.out, "--threads", "1"], run=again), 0)
        self.assertEqual(calls2, [])

    def test_base_run_settings_pass_through(self):
        import io
        from tools.train import pipeline
        run, calls = self.fake()
        with contextlib.redirect_stdout(io.StringIO()):
            pipeline.main(["--out", self.out, "--clips", "12000", "--dit-steps", "16000",
                           "--dit", "patch_size=1,1,1", "--dit", "dim=128", "--vae-from", "some/pack", "--f32",
                           "--refs-steps", "3600", "--text-parse", "0.1", "--text-parse-own", "0.2",
                           "--grounding", "0.3"],
                          run=run)
        base = calls[0]
        self.assertEqual(base[base.index("--text-parse") + 1], "0.1")
        self.assertEqual(base[base.index("--text-parse-own") + 1], "0.2")
        self.assertEqual(base[base.index("--grounding") + 1], "0.3")
        self.assertFalse(any("--grounding" in c for c in calls[1:]))    # the base run's only
        self.assertEqual(calls[1][calls[1].index("--text-parse") + 1], "0.1")          # the reference stage's too
        self.assertEqual(calls[1][calls[1].index("--text-parse-own") + 1], "0.2")
        self.assertFalse(any("--text-parse" in c for c in calls[2:]))   # not the effect stages'
        self.assertEqual(base[base.index("--clips") + 1], "12000")
        self.assertEqual(base[base.index("--dit-steps") + 1], "16000")
        self.assertEqual([base[i + 1] for i, x in enumerate(base) if x == "--dit"], ["patch_size=1,1,1", "dim=128"])
        self.assertNotIn("--dit", calls[1])
        self.assertNotIn("--clips", calls[1])        # the base run's settings only
        self.assertEqual(base[base.index("--vae-from") + 1], "some/pack")
        self.assertNotIn("--vae-from", calls[1])
        self.assertEqual(calls[1][calls[1].index("--steps") + 1], "3600")     # the reference stage's only
        self.assertNotIn("--steps", calls[0])
        for c in calls[:5]:                          # the base, the references, the LoRAs
            self.assertIn("--f32", c)
        self.assertEqual(calls[1][calls[1].index("--run") + 1], self.out)   # the reference stage takes its cache
        run, calls = self.fake()
        with contextlib.redirect_stdout(io.StringIO()):
            pipeline.main(["--out", os.path.join(self.tmp.name, "other")], run=run)
        self.assertNotIn("--clips", calls[0])
        self.assertNotIn("--dit-steps", calls[0])
        self.assertFalse(any("--f32" in c or "--vae-from" in c or "--steps" in c or "--text-parse" in c
                             for c in calls))
        from tools.train import train
        with self.assertRaises(SystemExit) as e:
            train.main(["--clips", "0", "--out", os.path.join(self.tmp.name, "bad")])
        self.assertIn("--clips 0", str(e.exception))
        for flag in ("--text-parse", "--text-parse-own", "--grounding", "--object-head"):
            with self.assertRaises(SystemExit) as e:
                train.main([flag, "-0.5", "--out", os.path.join(self.tmp.name, "bad")])
            self.assertIn(f"{flag} -0.5: a weight", str(e.exception))

    def test_a_pack_is_swapped_in_whole(self):
        from tools.train.export import swap_in
        final, tmp = os.path.join(self.out, "final"), os.path.join(self.out, "final.tmp1")
        for d, text in ((final, "old"), (tmp, "new")):
            os.makedirs(d)
            with open(os.path.join(d, "moonreel_pack.json"), "w") as f:
                f.write(text)
        swap_in(tmp, final)
        with open(os.path.join(final, "moonreel_pack.json")) as f:
            self.assertEqual(f.read(), "new")
        self.assertEqual(sorted(os.listdir(self.out)), ["final"])    # no tmp, no .old left

    def test_a_failing_stage_stops_the_chain(self):
        import io
        from tools.train import pipeline
        run, calls = self.fake(fail_at=2)
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            self.assertEqual(pipeline.main(["--out", self.out], run=run), 1)
        self.assertEqual(len(calls), 2)
        self.assertIn("the refs stage failed (exit 3)", err.getvalue())
        run, calls = self.fake(make=False)   # exit 0 without its output
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            self.assertEqual(pipeline.main(["--out", self.out], run=run), 1)
        self.assertEqual(len(calls), 1)       # the base pack exists from the first run
        self.assertIn("ended without", err.getvalue())


if __name__ == "__main__":
    unittest.main()
