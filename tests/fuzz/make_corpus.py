#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (tests/fuzz/fuzz_*.c), made from the test
data of the tree and from small files written here.

    python3 tests/fuzz/make_corpus.py OUTDIR

writes OUTDIR/<target>/<seed> for every target. Nothing large is copied:
checkpoints over SEED_MAX are cut to their header and first bytes (the cut
ones are refused, which is a path worth fuzzing too), and the tokenizer
models are rebuilt with a few hundred pieces, plus one whole model for its
normalizer's character map. Pictures and videos are made with the ffmpeg
command (a test dependency already). Only the standard library is used: the
.pth seeds are pickled through stand-in torch classes, as torch.save lays
them out, without torch.
"""
import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import types
import zipfile
import zlib

SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DATA = os.path.join(SRC, "tests", "conformance", "data")
SEED_MAX = 64 * 1024


def put(out, target, name, data):
    d = os.path.join(out, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# ------------------------------------------------------------- safetensors

def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, bytes); laid out in order."""
    header, blob = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + blob


def seeds_safetensors(out):
    for sub in ("wan", "lora"):
        for name in sorted(os.listdir(os.path.join(DATA, sub))):
            if name.endswith(".safetensors"):
                # small files whole; large ones cut (the header, then the first data bytes)
                put(out, "safetensors", name, read(os.path.join(DATA, sub, name))[:SEED_MAX])
    dit = os.path.join(SRC, "models", "default", "diffusion_pytorch_model.safetensors")
    put(out, "safetensors", "default_dit_cut.safetensors", read(dit)[:SEED_MAX])
    put(out, "safetensors", "empty.safetensors", safetensors({}))
    put(out, "safetensors", "metadata.safetensors", safetensors({}, {"format": "pt", "k": "v"}))
    put(out, "safetensors", "dtypes.safetensors", safetensors({
        "a_f32": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
        "b_f16": ("F16", [3], b"\x00\x3c\x00\x40\x00\xc0"),
        "c_bf16": ("BF16", [1, 1, 2], b"\x80\x3f\x00\x40"),
        "d_f64": ("F64", [1], struct.pack("<d", 0.5)),
        "e_i64": ("I64", [1], struct.pack("<q", -3)),
        "f_i32": ("I32", [2], struct.pack("<2i", 7, 8)),
        "g_u8": ("U8", [4], b"\x01\x02\x03\x04"),
        "h_scalar": ("F32", [], struct.pack("<f", 9)),
        "i_zero": ("F32", [0, 5], b""),
        "j_8dims": ("U8", [1, 1, 1, 1, 1, 1, 1, 2], b"\x05\x06"),
    }))
    # names and shapes of a DiT and a VAE, so detection has something to find
    dit_like = collections.OrderedDict()
    for name, shape in (("patch_embedding.weight", [8, 16, 1, 2, 2]), ("blocks.0.ffn.0.weight", [16, 8]),
                        ("time_embedding.0.weight", [8, 4]), ("text_embedding.0.weight", [8, 4]),
                        ("head.head.weight", [64, 8]), ("blocks.0.modulation", [1, 6, 8])):
        n = 1
        for d in shape:
            n *= d
        dit_like[name] = ("BF16", shape, b"\x00\x3f" * n)
    put(out, "safetensors", "dit_names.safetensors", safetensors(dit_like))


# ------------------------------------------------------------- .pth and pickle

class _Storage:
    def __init__(self, stype, key, numel):
        self.stype, self.key, self.numel = stype, key, numel


def _torch_standins():
    """torch, torch._utils and the storage classes as pickle looks them up."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    torch._utils = utils

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("only pickled, never called")

    def _rebuild_tensor(*args):
        raise RuntimeError("only pickled, never called")

    def _rebuild_parameter(*args):
        raise RuntimeError("only pickled, never called")

    for f in (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter):
        f.__module__ = "torch._utils"
        f.__qualname__ = f.__name__
        setattr(utils, f.__name__, f)
    for cls in ("FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage", "IntStorage",
                "ByteStorage"):
        t = type(cls, (), {})
        t.__module__ = "torch"
        setattr(torch, cls, t)
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    return torch, utils


TORCH, UTILS = _torch_standins()


class _Tensor:
    def __init__(self, storage, offset, size, stride, v2=True, parameter=False):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.v2, self.parameter = v2, parameter

    def __reduce_ex__(self, proto):
        if self.v2:
            inner = (UTILS._rebuild_tensor_v2,
                     (self.storage, self.offset, tuple(self.size), tuple(self.stride), False,
                      collections.OrderedDict()))
        else:
            inner = (UTILS._rebuild_tensor, (self.storage, self.offset, tuple(self.size), tuple(self.stride)))
        if not self.parameter:
            return inner
        return (UTILS._rebuild_parameter, (_Reduced(inner), False, collections.OrderedDict()))


class _Reduced:
    def __init__(self, r):
        self.r = r

    def __reduce_ex__(self, proto):
        return self.r


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(TORCH, obj.stype), obj.key, "cpu", obj.numel)
        return None


def pickle_state(state):
    b = io.BytesIO()
    _Pickler(b, protocol=2).dump(state)
    return b.getvalue()


def pth(state, storages):
    """A torch.save-style zip: archive/data.pkl, archive/data/<key>, stored."""
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_state(state))
        z.writestr("archive/byteorder", "little")
        for key, data in storages.items():
            z.writestr("archive/data/" + key, data)
        z.writestr("archive/version", "3\n")
    return b.getvalue()


def handmade_states():
    """Small state dicts over storages "0".."3" whose sizes fit fuzz_pickle's
    1 KiB storages: plain, nested, views, parameters, the old rebuild."""
    f32 = _Storage("FloatStorage", "0", 12)
    bf16 = _Storage("BFloat16Storage", "1", 8)
    f16 = _Storage("HalfStorage", "2", 6)
    i64 = _Storage("LongStorage", "3", 4)
    od = collections.OrderedDict
    return {
        "plain": od([("w", _Tensor(f32, 0, [3, 4], [4, 1])), ("b", _Tensor(bf16, 0, [8], [1]))]),
        "nested": {"state_dict": {"model": od([("layer.weight", _Tensor(f16, 0, [2, 3], [3, 1]))])}, "epoch": 3},
        "views": od([("t", _Tensor(f32, 0, [4, 3], [1, 4])), ("slice", _Tensor(f32, 4, [2, 2], [4, 1])),
                     ("idx", _Tensor(i64, 1, [3], [1]))]),
        "parameter": od([("p", _Tensor(f32, 0, [12], [1], parameter=True)),
                         ("old", _Tensor(bf16, 2, [2, 3], [3, 1], v2=False))]),
        "scalar": od([("s", _Tensor(f32, 5, [], [])), ("empty", _Tensor(f16, 0, [0, 4], [4, 1]))]),
    }


def seeds_pth_pickle(out):
    storages = {"0": struct.pack("<12f", *range(12)), "1": b"\x80\x3f" * 8, "2": b"\x00\x3c" * 6,
                "3": struct.pack("<4q", 1, 2, 3, 4)}
    for name, state in handmade_states().items():
        put(out, "pth", name + ".pth", pth(state, storages))
        put(out, "pickle", name + ".pkl", pickle_state(state))
    t5 = os.path.join(DATA, "wan", "t5_encoder_tiny-bf16.pth")
    put(out, "pth", "t5_encoder_tiny-bf16.pth", read(t5)[:SEED_MAX] if os.path.getsize(t5) > SEED_MAX else read(t5))
    # the real pickles, out of the tree's archives (only the central directory and data.pkl are read)
    for path in (t5, os.path.join(DATA, "wan", "wan21_vae_tiny.pth"),
                 os.path.join(SRC, "models", "default", "Wan2.1_VAE.pth"),
                 os.path.join(SRC, "models", "default", "models_t5_umt5-xxl-enc-bf16.pth")):
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            data = z.read(min(pkl, key=len))
        put(out, "pickle", os.path.basename(path) + ".pkl", data[:SEED_MAX])


# ------------------------------------------------------------- spiece.model

def _varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _enc_varint(v):
    out = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        out.append(c | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _fields(b):
    """(field, wire type, raw bytes of the whole field) of a protobuf message."""
    i, out = 0, []
    while i < len(b):
        start = i
        key, i = _varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            _, i = _varint(b, i)
        elif w == 1:
            i += 8
        elif w == 2:
            n, i = _varint(b, i)
            i += n
        elif w == 5:
            i += 4
        else:
            raise ValueError("wire type %d" % w)
        out.append((f, w, b[start:i]))
    return out


def _payload(raw):
    _, i = _varint(raw, 0)
    n, i = _varint(raw, i)
    return raw[i:i + n]


def _message(field, payload):
    return _enc_varint(field << 3 | 2) + _enc_varint(len(payload)) + payload


def small_model(model, keep, charsmap):
    """The model with its first `keep` pieces (and every byte piece), with or
    without the normalizer's character map."""
    out, n = b"", 0
    for f, w, raw in _fields(model):
        if f == 1:
            piece = _fields(_payload(raw))
            is_byte = any(pf == 3 and _varint(praw, 1)[0] == 6 for pf, _, praw in piece)
            if n < keep or is_byte:
                out += raw
            n += 1
        elif f == 3 and not charsmap:
            ns = b"".join(raw2 for f2, _, raw2 in _fields(_payload(raw)) if f2 != 2)
            out += _message(3, ns)
        else:
            out += raw
    return out


def seeds_spiece(out):
    models = {"unigram": os.path.join(DATA, "tokenizer", "unigram.model"),
              "bytefallback": os.path.join(DATA, "tokenizer", "unigram_bytefallback.model"),
              "default": os.path.join(SRC, "models", "default", "google", "umt5-xxl", "spiece.model")}
    for name, path in models.items():
        m = read(path)
        small = small_model(m, 200, charsmap=False)
        put(out, "spiece", name + "_nomap.model", small)
        # fields merged in as protobuf merges them: no dummy prefix (the normalizer
        # crash of issue 15), BPE (refused), whitespace as suffix
        put(out, "spiece", name + "_nodummy.model", small + b"\x1a\x02\x18\x00")
        put(out, "spiece", name + "_bpe.model", small + b"\x12\x02\x18\x02")
        put(out, "spiece", name + "_suffix.model", small + b"\x12\x02\x18\x01\x12\x03\xb0\x01\x01")
    # one whole model: the precompiled character map (237 KB) is most of it
    put(out, "spiece", "bytefallback_whole.model", read(models["bytefallback"]))
    put(out, "spiece", "default_nodummy_map.model", read(models["default"]) + b"\x1a\x02\x18\x00")


# ------------------------------------------------------------- prompts

def seeds_prompt(out):
    with open(os.path.join(DATA, "tokenizer", "tokenizer_cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    texts = []
    for c in cases.get("cases", cases if isinstance(cases, list) else []):
        t = c.get("text") if isinstance(c, dict) else c
        if isinstance(t, str):
            texts.append(t)
    texts += [
        "a yellow square moving up on a gray background",
        "  \u201ccurly\u201d  \u2018quotes\u2019 &amp;amp; &lt;b&gt; &#39;x&#39; &#x27;y&#x27; &nbsp;end  ",
        "tabs\tand\nnewlines\r\n\u3000ideographic\u00a0space",
        "\uff21\uff22\uff23 full width, \u2460 circled, \ufb01 ligature",
        "emoji \U0001F600 and combining e\u0301",
        "",
        "A",
    ]
    for i, t in enumerate(texts):
        put(out, "prompt", "text%03d" % i, t.encode("utf-8", "surrogatepass"))
    put(out, "prompt", "invalid_utf8", b"a red \xff ball \xc3 \xe2\x82")
    put(out, "prompt", "control", b"\x01\x01 \x7f")


# ------------------------------------------------------------- pictures and videos

def ffmpeg(args, path):
    subprocess.run(["ffmpeg", "-v", "error", "-y"] + args + [path], check=True)
    return read(path)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def exif(orientation):
    """A little-endian TIFF with one IFD0 entry: the orientation tag."""
    return b"II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4


def seeds_media(out):
    with tempfile.TemporaryDirectory() as tmp:
        def p(name):
            return os.path.join(tmp, name)
        src = ["-f", "lavfi", "-i", "testsrc=size=16x12:rate=4", "-frames:v", "1"]
        png = ffmpeg(src, p("a.png"))
        put(out, "image", "rgb.png", png)
        put(out, "image", "rgba.png", ffmpeg(["-f", "lavfi", "-i", "testsrc=size=12x8", "-frames:v", "1",
                                              "-vf", "format=rgba"], p("b.png")))
        put(out, "image", "gray16.png", ffmpeg(src + ["-pix_fmt", "gray16be"], p("c.png")))
        put(out, "image", "pal8.png", ffmpeg(src + ["-pix_fmt", "pal8"], p("d.png")))
        # an eXIf chunk after IHDR: orientation 6 (rotate 90)
        put(out, "image", "exif.png", png[:33] + png_chunk(b"eXIf", exif(6)) + png[33:])
        jpg = ffmpeg(src, p("a.jpg"))
        put(out, "image", "plain.jpg", jpg)
        put(out, "image", "gray.jpg", ffmpeg(src + ["-pix_fmt", "gray"], p("g.jpg")))
        app1 = b"Exif\x00\x00" + exif(8)
        put(out, "image", "exif.jpg", jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpg[2:])
        put(out, "image", "lossy.webp", ffmpeg(src + ["-c:v", "libwebp"], p("a.webp")))
        put(out, "image", "lossless_alpha.webp", ffmpeg(["-f", "lavfi", "-i", "testsrc=size=12x8", "-frames:v", "1",
                                                         "-vf", "format=rgba", "-c:v", "libwebp", "-lossless", "1"],
                                                        p("b.webp")))

        vsrc = ["-f", "lavfi", "-i", "testsrc=size=16x16:rate=8", "-frames:v", "3"]
        anim = ffmpeg(vsrc + ["-c:v", "libwebp_anim", "-loop", "0"], p("anim.webp"))
        put(out, "image", "anim.webp", anim)
        put(out, "video", "anim.webp", anim)
        put(out, "video", "h264.mp4", ffmpeg(vsrc + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"],
                                             p("a.mp4")))
        put(out, "video", "rotated.mp4", ffmpeg(vsrc + ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
                                                        "-metadata:s:v:0", "rotate=90"], p("r.mp4")))
        put(out, "video", "vp9.webm", ffmpeg(vsrc + ["-c:v", "libvpx-vp9", "-deadline", "realtime"], p("a.webm")))
        put(out, "video", "vp8.mkv", ffmpeg(vsrc + ["-c:v", "libvpx"], p("a.mkv")))
        put(out, "video", "anim.gif", ffmpeg(vsrc, p("a.gif")))
        put(out, "video", "mjpeg.mov", ffmpeg(vsrc + ["-c:v", "mjpeg"], p("a.mov")))


# ------------------------------------------------------------- configs

def seeds_config(out):
    for name in sorted(os.listdir(os.path.join(DATA, "wan"))):
        if name.startswith("wan2") and "_dit_" in name and name.endswith(".json"):
            with open(os.path.join(DATA, "wan", name)) as f:
                doc = json.load(f)
            put(out, "config", name, json.dumps(doc.get("config", doc)).encode())
            put(out, "config", "nested_" + name, json.dumps({"config": doc.get("config", doc)}).encode())
    put(out, "config", "default_config.json", read(os.path.join(SRC, "models", "default", "config.json")))
    put(out, "config", "fields.json", json.dumps({
        "model_type": "vace", "num_heads": 2, "text_len": 77, "eps": 1e-5, "vace_layers": [0, 1]}).encode())
    put(out, "config", "empty.json", b"{}")


# ------------------------------------------------------------- LoRA headers

def header_of(path):
    b = read(path)
    (n,) = struct.unpack("<Q", b[:8])
    return b[8:8 + n]


def seeds_lora(out):
    for name in sorted(os.listdir(os.path.join(DATA, "lora"))):
        if name.endswith(".safetensors") and ".io." not in name:
            put(out, "lora", name + ".json", header_of(os.path.join(DATA, "lora", name)))
    q = "diffusion_model.blocks.0.self_attn.q."

    def hdr(entries):
        return json.dumps({k: {"dtype": d, "shape": s, "data_offsets": [0, 0]} for k, (d, s) in entries.items()}).encode()
    put(out, "lora", "loha.json", hdr({q + "hada_w1_a": ("F32", [64, 3]), q + "hada_w1_b": ("F32", [3, 64]),
                                       q + "hada_w2_a": ("F32", [64, 3]), q + "hada_w2_b": ("F32", [3, 64]),
                                       q + "alpha": ("F32", [])}))
    k = "lora_unet_blocks_0_self_attn_q."
    put(out, "lora", "lokr.json", hdr({k + "lokr_w1": ("F32", [4, 2]), k + "lokr_w2_a": ("F32", [16, 2]),
                                       k + "lokr_w2_b": ("F32", [2, 32]), k + "alpha": ("F32", [])}))
    put(out, "lora", "dora.json", hdr({q + "lora_A.weight": ("BF16", [4, 64]), q + "lora_B.weight": ("BF16", [64, 4]),
                                       q + "alpha": ("F32", []), q + "dora_scale": ("F16", [64, 1])}))
    put(out, "lora", "diff.json", hdr({q + "diff": ("F32", [64, 64]), q + "diff_b": ("F32", [64]),
                                       "diffusion_model.head.head.lora_down.weight": ("F32", [2, 64]),
                                       "diffusion_model.head.head.lora_up.weight": ("F32", [64, 2])}))
    put(out, "lora", "diffusers.json", hdr({
        "transformer.blocks.0.attn1.to_q.lora_A.weight": ("F32", [2, 64]),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": ("F32", [64, 2])}))


# ------------------------------------------------------------- pack manifests, templates, batch manifests

E2E_DEFAULTS = {"steps": 3, "shift": 3.0, "guide": 4.0, "frames": 5, "fps": 8, "width": 32, "height": 32,
                "negative": ""}


def seeds_pack(out):
    """moonreel_pack.json: the default model's, the tests/e2e packs' (fixture.lua), every field."""
    put(out, "pack", "default.json", read(os.path.join(SRC, "models", "default", "moonreel_pack.json")))
    packs = {
        "t2v": {"name": "tiny-t2v", "defaults": E2E_DEFAULTS},
        "i2v": {"name": "tiny-i2v", "defaults": E2E_DEFAULTS,
                "files": {"clip": "clip.safetensors", "clip_config": "clip.json"}},
        "phantom": {"name": "tiny-phantom", "defaults": E2E_DEFAULTS,
                    "references": {"method": "phantom", "max": 4, "guide_img": 2.0,
                                   "names": ["the first object", "the second object"]}},
        "vace": {"name": "tiny-vace", "references": {"method": "vace", "canvas": "#808080", "guide_text": 5}},
        "files": {"files": {"dit": ["a.safetensors", "diffusion_pytorch_model.safetensors"], "vae": "Wan2.1_VAE.pth",
                            "t5": "models_t5_umt5-xxl-enc-bf16.pth", "tokenizer": "google/umt5-xxl/spiece.model",
                            "config": "config.json"},
                  "defaults": {"steps": 20, "frames": 17, "width": 64, "height": 64, "fps": 8, "guide": 5.0,
                               "guide_high": 3.5, "shift": 3.0, "boundary": 0.875, "sampler": "euler",
                               "negative": "", "prompt": "a yellow square"}},
        "outside": {"files": {"dit": "../x.safetensors"}},
        "empty": {},
    }
    for name, m in packs.items():
        put(out, "pack", name + ".json", json.dumps(m).encode())
    put(out, "pack", "false.json", b"false")
    put(out, "pack", "array.json", b"[]")


def merge_patch(doc, patch):
    """template_cases.json's patches: a JSON merge patch with its '@' forms."""
    def value(v):
        if isinstance(v, str):
            if v == "@null":
                return None
            if v == "@[]":
                return []
            if v.startswith("@repeat(") and v.endswith(")"):
                x, n = v[8:-1].rsplit(",", 1)
                return x * int(n)
        if isinstance(v, dict):
            return {k: value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [value(x) for x in v]
        return v
    if isinstance(patch, str) and patch.startswith("@replace(") and patch.endswith(")"):
        return json.loads(patch[9:-1])
    if not isinstance(patch, dict):
        return value(patch)
    out = dict(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            out[k] = merge_patch(out.get(k), v)
        else:
            out[k] = value(v)
    return out


def seeds_template(out):
    """The tree's templates and every case of tests/batch/template_cases.json (most of them refused)."""
    for d in (os.path.join(SRC, "recipes", "templates"), os.path.join(SRC, "docs", "templates")):
        for name in sorted(os.listdir(d)):
            if name.endswith(".json"):
                put(out, "template", name, read(os.path.join(d, name)))
    with open(os.path.join(SRC, "tests", "batch", "template_cases.json"), encoding="utf-8") as f:
        cases = json.load(f)
    put(out, "template", "cases_base.json", json.dumps(cases["base"]).encode())
    for i, c in enumerate(cases["cases"]):
        try:
            doc = merge_patch(cases["base"], c["patch"])
        except (ValueError, KeyError, TypeError):
            continue
        put(out, "template", "case%03d.json" % i, json.dumps(doc).encode())


def seeds_batch(out):
    """Manifests over fuzz_batch.c's templates (t.json, t2v.json) and photos (a.png, b.png), and reports."""
    jobs = [
        {"template": "t.json", "images": ["a.png"], "vars": {"subject": "cat", "mood": "wild"}, "seed": "7",
         "output": "a-left.mp4"},
        {"template": "t.json", "images": ["b.png"], "variant": "fast", "seed": 18446744073709551615},
        {"template": "t.json", "images": ["a.png", "b.png"], "vars": {"subject": "a very long subject"}},
        {"template": "t2v.json", "vars": {"what": "dog"}, "seed": 3, "output": "sub/dog.webp"},
        {"template": "t2v.json"},
        {"template": "missing.json", "images": ["nope.png"]},
        {"template": "t.json", "images": ["a.png"], "vars": {"nosuch": "x"}, "variant": "slow"},
    ]
    put(out, "batch", "jobs.jsonl", "".join(json.dumps(j) + "\n" for j in jobs).encode())
    for i, j in enumerate(jobs):
        put(out, "batch", "job%d.jsonl" % i, json.dumps(j).encode())
    put(out, "batch", "docs.jsonl", b'{"template": "recipes/templates/move.json", "images": ["photos/a.png"], '
        b'"vars": {"object": "a blue square", "direction": "left"}, "seed": "7", "output": "a-left.mp4"}\n')
    put(out, "batch", "bad_lines.jsonl", b'\n{"template": "t.json", "seed": -1}\n[1]\n{"x": 1}\n{"output": "../a.mp4"}\n')
    report = [
        {"id": "fx-0123456789abcdef", "status": "done", "output": "fx-0123456789abcdef.mp4", "bytes": 1234,
         "seconds": 2.5, "source": "jobs.jsonl:1"},
        {"id": "fx-1111111111111111", "status": "failed", "error": "images[1]: cannot read"},
    ]
    text = "".join(json.dumps(r) + "\n" for r in report)
    put(out, "batch", "report.jsonl", text.encode())
    put(out, "batch", "report_cut.jsonl", (text + json.dumps(report[0]))[:-7].encode())


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: make_corpus.py OUTDIR")
    out = sys.argv[1]
    seeds_safetensors(out)
    seeds_pth_pickle(out)
    seeds_spiece(out)
    seeds_prompt(out)
    seeds_media(out)
    seeds_config(out)
    seeds_lora(out)
    seeds_pack(out)
    seeds_template(out)
    seeds_batch(out)
    for t in sorted(os.listdir(out)):
        files = os.listdir(os.path.join(out, t))
        size = sum(os.path.getsize(os.path.join(out, t, f)) for f in files)
        print("%-12s %3d seeds, %7d bytes" % (t, len(files), size))


if __name__ == "__main__":
    main()
