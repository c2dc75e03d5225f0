"""Data for training: tinyworld clips by index (train and held-out streams), captions,
and the caption tokenizer (SentencePiece unigram, umT5 conventions)."""
from __future__ import annotations

import io
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..tinyworld import ClipSpec, all_caption_texts, sample_caption, sample_clip, sample_spec
from ..tinyworld.captions import sample_caption2
from ..tinyworld.world import sample_spec2, varied_clip

# The worlds a run can train on. "palette": the first three models' world (one object, the
# palette's exact colours and shades). "varied": the reference stage's world (shades and
# sizes drawn around the palette, tinyworld.world.vary_spec) with a fraction p_two of
# two-object clips, so that the VAE's encoder and the DiT learn what users bring.
WORLDS = ("palette", "varied")


def _draw_spec(rng: np.random.Generator, world: str, p_two: float) -> ClipSpec:
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r} (one of {', '.join(WORLDS)})")
    if world == "varied" and rng.random() < p_two:
        return sample_spec2(rng)
    return sample_spec(rng)


def train_clip(seed: int, index: int, frames: int, size: int, world: str = "palette", p_two: float = 0.0):
    """The index-th training clip of a world (random access, deterministic). The palette
    world's clips are tinyworld.clip_for_index's."""
    rng = np.random.default_rng([seed, index])
    spec = _draw_spec(rng, world, p_two)
    if world == "palette":
        return sample_clip(rng, spec, frames, size)
    return varied_clip(rng, spec, frames, size)


def train_spec(seed: int, index: int, world: str = "palette", p_two: float = 0.0) -> ClipSpec:
    """What train_clip(seed, index, ...) shows, by name (its caption's colours, shapes,
    motions and background), without rendering it."""
    return _draw_spec(np.random.default_rng([seed, index]), world, p_two)


def run_clip(cfg, index: int, frames: Optional[int] = None):
    """train_clip in a run's world, at its size (and its frame count unless given)."""
    return train_clip(cfg.seed, index, frames or cfg.frames, cfg.size, cfg.world, cfg.p_two)


def clips_tensor(clips) -> torch.Tensor:
    """[B, 3, T, H, W] float32 in [-1, 1]."""
    return torch.from_numpy(np.stack([c.as_float() for c in clips]))


# --------------------------------------------------------------------------- tokenizer

def caption_words(texts: Sequence[str]) -> List[str]:
    """Every word of the captions, sorted (commas are not part of a word)."""
    return sorted({w for t in texts for w in t.replace(",", " ").split()})


def train_sentencepiece(path: str, vocab_size: int, texts: Optional[Sequence[str]] = None,
                        whole_words: bool = False) -> None:
    """Train the caption SentencePiece model (unigram, nmt_nfkc, pad 0 / eos 1 / unk 2, no bos,
    as umT5's spiece.model) on every caption phrasing (or on texts); deterministic.

    On the captions alone the unigram trainer stops at 176 pieces of 256 and keeps "the",
    "and", "first", "second", "object" and "navy" as single letters and short pieces ("and" is
    "▁a" + "nd": the article's piece), so a text encoder learnt from nothing has to spell them
    out. whole_words (TrainConfig.whole_words) adds each word as a sentence of its own, 200
    times: then every word of every caption form is one piece (measured: 173 pieces), but for
    "backdrop", which the trainer's seed pieces never hold."""
    import sentencepiece as spm
    texts = sorted(set(texts if texts is not None else all_caption_texts()))
    if whole_words:
        texts = texts + caption_words(texts) * 200
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        normalization_rule_name="nmt_nfkc", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


class Tokenizer:
    """ids = pieces + </s>, padded with 0 to max_len; mask 1 on real tokens (Wan's T5 wrapper)."""

    def __init__(self, path: str, max_len: int):
        import sentencepiece as spm
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.max_len = max_len
        self.eos = self.sp.eos_id()

    def __call__(self, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros(len(texts), self.max_len, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, t in enumerate(texts):
            p = self.sp.encode(" ".join(t.split()))[: self.max_len - 1] + [self.eos]
            ids[i, :len(p)] = torch.tensor(p)
            mask[i, :len(p)] = 1
        return ids, mask


def encode_text_masked(t5, tok: Tokenizer, texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Text states as the DiT sees them: encoder output cut to the real length, the rest zero
    (equal to Wan's cut-then-zero-pad); and the mask of the real tokens."""
    ids, mask = tok(texts)
    out = t5(ids, mask)
    return out * mask[..., None].to(out.dtype), mask


def encode_text(t5, tok: Tokenizer, texts: Sequence[str]) -> torch.Tensor:
    return encode_text_masked(t5, tok, texts)[0]


def caption(rng: np.random.Generator, spec: ClipSpec) -> str:
    """A random caption of a one- or two-object spec, naming its objects by colour and shape."""
    return sample_caption2(rng, spec) if len(spec.objects) == 2 else sample_caption(rng, spec)


def random_captions(rng: np.random.Generator, specs: List[ClipSpec], p_uncond: float) -> List[str]:
    return ["" if rng.random() < p_uncond else caption(rng, s) for s in specs]
