"""Generated checkpoints for the test suite.

Two kinds:
- ``make_tiny(family, dest)``: a tiny random-weight model of a real architecture, built with the
  transformers class and written by ``save_pretrained`` as >= 2 safetensors shards plus index,
  config and (optionally) a real trained tokenizer (``make_tokenizer``).
- ``make_header_only(spec)``: a full-size checkpoint (DeepSeek-V3 671B, Llama-3-8B, ...) whose
  shards are ``VirtualFile``s: only the safetensors header bytes exist, the size is the real one.
  ``materialize`` writes such a dict to disk as sparse files.

Configs are data under ``tests/configs/``; the layouts follow the published repositories.
"""
from __future__ import annotations

import functools
import json
import math
import random
import shutil
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

try:
    from hubserver import VirtualFile  # the local Hub server serves these by range
except ImportError:  # pragma: no cover - hubserver.py not written yet; same shape
    @dataclass(frozen=True)
    class VirtualFile:  # type: ignore[no-redef]
        """A file of ``size`` bytes of which only ``prefix`` exists (the rest reads as zeros)."""
        prefix: bytes
        size: int

CONFIG_DIR = Path(__file__).parent / "configs"
FileMap = dict[str, bytes | VirtualFile]

# ---- tiny real-architecture models -------------------------------------------------------------


def _load_families() -> dict[str, dict]:
    raw = json.loads((CONFIG_DIR / "tiny_families.json").read_text())
    out = {}
    for name, fam in raw["families"].items():
        cfg = {k: v for k, v in raw["common"].items() if k not in fam.get("drop_common", ())}
        cfg.update(fam["config"])
        out[name] = {"model_type": fam.get("model_type", name), "tokenizer": fam["tokenizer"],
                     "features": fam["features"], "config": cfg}
    return out


# family -> {"model_type", "tokenizer" ("bpe"|"spm"), "features" [...], "config" {...}}
TINY_FAMILIES: dict[str, dict] = _load_families()
TINY_VOCAB = 384   # every tiny family uses this vocabulary size (the tokenizers match it)


def _parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    s = size.strip().upper()
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mult)
    return int(s)


def make_tiny(family: str, dest: Path, *, shard_size: str | int | None = None,
              dtype=None, seed: int = 0, tokenizer: bool | str = False) -> Path:
    """Write a tiny seeded random model of ``family`` to ``dest`` (>= 2 shards + index + config).

    ``shard_size`` defaults to a third of the model's bytes (so 3-4 shards whatever the dtype);
    ``dtype`` is a torch dtype (float32 by default); ``tokenizer``: True for the family's kind,
    or "bpe"/"spm", writes tokenizer.json + tokenizer_config.json matching the vocabulary.
    """
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    fam = TINY_FAMILIES[family]
    dtype = dtype or torch.float32
    cfg = AutoConfig.for_model(fam["model_type"], **fam["config"])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    limit = _parse_size(shard_size) if shard_size is not None else total // 3 + 1
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dest, max_shard_size=limit)
    if not (dest / "model.safetensors.index.json").exists():
        raise ValueError(f"{family}: shard size {limit} gave a single file; use a smaller one")
    if tokenizer:
        kind = fam["tokenizer"] if tokenizer is True else tokenizer
        make_tokenizer(dest, kind=kind, vocab_size=cfg.vocab_size)
    return dest


# ---- tiny real tokenizers ----------------------------------------------------------------------

_SYLLABLES = ("ka ri mo ten sul pa lo vin de qua thr ex an on is ge bu fi zo wy "
              "ster ment ing tion al er re un co pro").split()
_WORDS = ("the model reads a header and writes the shards of every tensor in order while "
          "weights are streamed from disk to the network").split()

SPECIAL_TOKENS = {
    # ids 0, 1, 2 = pad/unk, bos, eos in both kinds (the tiny configs use 0/1/2)
    "bpe": ["<|pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"],
    "spm": ["<unk>", "<s>", "</s>"],
}
_CHAT_TEMPLATES = {
    "bpe": ("{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
            "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"),
    "spm": ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }}"
            " [/INST]{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"),
}


def corpus_text(n_lines: int = 400, seed: int = 1234) -> str:
    """Deterministic pseudo-English training text with enough distinct words for a few hundred merges."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(6, 14)):
            if rng.random() < 0.5:
                words.append(rng.choice(_WORDS))
            else:
                words.append("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))))
        line = " ".join(words)
        lines.append(line[0].upper() + line[1:] + rng.choice([".", ",", "?", "!", ": 42.", " (v3)."]))
    return "\n".join(lines) + "\n"


def make_tokenizer(dest: Path, kind: str = "bpe", vocab_size: int = TINY_VOCAB) -> Path:
    """Train a real tokenizer of exactly ``vocab_size`` tokens and save it in ``dest``.

    "bpe": byte-level BPE (GPT-2 / Llama-3 style). "spm": Llama-2 style BPE with a "▁" metaspace,
    byte fallback and <0xNN> byte tokens (what transformers writes for a sentencepiece model).
    Writes tokenizer.json and tokenizer_config.json (bos/eos/pad, chat_template).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = SPECIAL_TOKENS[kind]
    text = corpus_text().splitlines()
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
    elif kind == "spm":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size - 256, special_tokens=specials,
                                      limit_alphabet=64, show_progress=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    tok.train_from_iterator(text, trainer=trainer)
    if kind == "spm":
        # <0x00>..<0xFF> are ordinary vocabulary entries right after the specials (ids 3..258), as
        # in Llama's; as added tokens they would be "special" and dropped by decode.
        data = json.loads(tok.to_str())
        trained = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
        pieces = [p for p, _ in trained if p not in specials]
        order = specials + [f"<0x{i:02X}>" for i in range(256)] + pieces
        data["model"]["vocab"] = {p: i for i, p in enumerate(order)}
        tok = Tokenizer.from_str(json.dumps(data))
    bos, eos, pad = specials[1], specials[2], specials[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, 1)])
    if tok.get_vocab_size() != vocab_size:
        raise ValueError(f"{kind} tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tok.save(str(dest / "tokenizer.json"))
    tcfg = {
        "tokenizer_class": "PreTrainedTokenizerFast" if kind == "bpe" else "LlamaTokenizerFast",
        "bos_token": bos, "eos_token": eos, "pad_token": pad,
        "add_bos_token": True, "add_eos_token": False, "model_max_length": 256,
        "clean_up_tokenization_spaces": False, "chat_template": _CHAT_TEMPLATES[kind],
    }
    if kind == "spm":
        tcfg["unk_token"] = "<unk>"
        tcfg["legacy"] = False
    (dest / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2) + "\n")
    return dest


# ---- header-only full-size checkpoints ---------------------------------------------------------

_BYTES = {"BF16": 2, "F16": 2, "F32": 4, "F8_E4M3": 1, "U8": 1, "I64": 8}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * _BYTES[self.dtype]


def _fp8_linear(name: str, out_f: int, in_f: int, block: int = 128) -> list[TensorSpec]:
    """A block-quantized FP8 linear: E4M3 weight plus F32 inverse scales per 128x128 block."""
    return [TensorSpec(f"{name}.weight", "F8_E4M3", (out_f, in_f)),
            TensorSpec(f"{name}.weight_scale_inv", "F32", (math.ceil(out_f / block), math.ceil(in_f / block)))]


def _deepseek_tensors(cfg: dict, inv_freq: int = 0) -> list[TensorSpec]:
    """DeepSeek-V3-architecture FP8 checkpoint (also Kimi K2): per-expert tensors, MTP layers last.

    Order is the shard order of the published repos: embeddings, layers, norm, lm_head, MTP layers.
    ``inv_freq``: length of a BF16 ``self_attn.rotary_emb.inv_freq`` buffer saved per layer (Kimi K2).
    """
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    heads, V = cfg["num_attention_heads"], cfg["vocab_size"]
    nope, rope, vdim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    q_lora, kv_lora = cfg.get("q_lora_rank"), cfg["kv_lora_rank"]
    E, moe_i, inter = cfg["n_routed_experts"], cfg["moe_intermediate_size"], cfg["intermediate_size"]
    shared_i = moe_i * cfg.get("n_shared_experts", 0)

    def norm(name: str, n: int) -> TensorSpec:
        return TensorSpec(f"{name}.weight", "BF16", (n,))

    def mlp(p: str, n_inter: int) -> list[TensorSpec]:
        return (_fp8_linear(f"{p}.gate_proj", n_inter, H) + _fp8_linear(f"{p}.up_proj", n_inter, H)
                + _fp8_linear(f"{p}.down_proj", H, n_inter))

    def layer(i: int) -> list[TensorSpec]:
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        out = [norm(f"{p}.input_layernorm", H)]
        if q_lora:
            out += _fp8_linear(f"{a}.q_a_proj", q_lora, H) + [norm(f"{a}.q_a_layernorm", q_lora)]
            out += _fp8_linear(f"{a}.q_b_proj", heads * (nope + rope), q_lora)
        else:
            out += _fp8_linear(f"{a}.q_proj", heads * (nope + rope), H)
        out += _fp8_linear(f"{a}.kv_a_proj_with_mqa", kv_lora + rope, H)
        out += [norm(f"{a}.kv_a_layernorm", kv_lora)]
        out += _fp8_linear(f"{a}.kv_b_proj", heads * (nope + vdim), kv_lora)
        out += _fp8_linear(f"{a}.o_proj", H, heads * vdim)
        if inv_freq:
            out.append(TensorSpec(f"{a}.rotary_emb.inv_freq", "BF16", (inv_freq,)))
        out.append(norm(f"{p}.post_attention_layernorm", H))
        if i < cfg.get("first_k_dense_replace", 0):
            out += mlp(f"{p}.mlp", inter)
        else:
            out.append(TensorSpec(f"{p}.mlp.gate.weight", "BF16", (E, H)))
            if cfg.get("topk_method") == "noaux_tc":
                out.append(TensorSpec(f"{p}.mlp.gate.e_score_correction_bias", "F32", (E,)))
            for e in range(E):
                out += mlp(f"{p}.mlp.experts.{e}", moe_i)
            if shared_i:
                out += mlp(f"{p}.mlp.shared_experts", shared_i)
        if i >= L:  # multi-token-prediction module: its own copies of embedding and head
            out += [TensorSpec(f"{p}.embed_tokens.weight", "BF16", (V, H)), norm(f"{p}.enorm", H),
                    norm(f"{p}.hnorm", H), TensorSpec(f"{p}.eh_proj.weight", "BF16", (H, 2 * H)),
                    norm(f"{p}.shared_head.norm", H),
                    TensorSpec(f"{p}.shared_head.head.weight", "BF16", (V, H))]
        return out

    out = [TensorSpec("model.embed_tokens.weight", "BF16", (V, H))]
    for i in range(L):
        out += layer(i)
    out += [norm("model.norm", H), TensorSpec("lm_head.weight", "BF16", (V, H))]
    for i in range(L, L + cfg.get("num_nextn_predict_layers", 0)):
        out += layer(i)
    return out


def _gpt_oss_tensors(cfg: dict) -> list[TensorSpec]:
    """gpt-oss as published: BF16 attention (with biases and sinks), MXFP4 stacked experts.

    MXFP4: ``*_blocks`` U8 [E, out, in/32, 16] (two 4-bit values per byte, 32 per block) and
    ``*_scales`` U8 [E, out, in/32] (one E8M0 exponent per block). Layers sorted by name, as in
    the published index; embeddings and head at the end.
    """
    H, L, V = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd, nh, nkv = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    E, inter = cfg["num_local_experts"], cfg["intermediate_size"]
    out = []
    for i in sorted(range(L), key=str):
        p = f"model.layers.{i}"
        a = f"{p}.self_attn"
        x = f"{p}.mlp.experts"
        out += [TensorSpec(f"{p}.input_layernorm.weight", "BF16", (H,)),
                TensorSpec(f"{a}.o_proj.bias", "BF16", (H,)),
                TensorSpec(f"{a}.o_proj.weight", "BF16", (H, nh * hd)),
                TensorSpec(f"{a}.q_proj.bias", "BF16", (nh * hd,)),
                TensorSpec(f"{a}.k_proj.bias", "BF16", (nkv * hd,)),
                TensorSpec(f"{a}.v_proj.bias", "BF16", (nkv * hd,)),
                TensorSpec(f"{a}.q_proj.weight", "BF16", (nh * hd, H)),
                TensorSpec(f"{a}.k_proj.weight", "BF16", (nkv * hd, H)),
                TensorSpec(f"{a}.v_proj.weight", "BF16", (nkv * hd, H)),
                TensorSpec(f"{a}.sinks", "BF16", (nh,)),
                TensorSpec(f"{p}.mlp.router.bias", "BF16", (E,)),
                TensorSpec(f"{p}.mlp.router.weight", "BF16", (E, H)),
                TensorSpec(f"{x}.gate_up_proj_bias", "BF16", (E, 2 * inter)),
                TensorSpec(f"{x}.gate_up_proj_blocks", "U8", (E, 2 * inter, H // 32, 16)),
                TensorSpec(f"{x}.gate_up_proj_scales", "U8", (E, 2 * inter, H // 32)),
                TensorSpec(f"{x}.down_proj_bias", "BF16", (E, H)),
                TensorSpec(f"{x}.down_proj_blocks", "U8", (E, H, inter // 32, 16)),
                TensorSpec(f"{x}.down_proj_scales", "U8", (E, H, inter // 32)),
                TensorSpec(f"{p}.post_attention_layernorm.weight", "BF16", (H,))]
    out += [TensorSpec("model.embed_tokens.weight", "BF16", (V, H)),
            TensorSpec("model.norm.weight", "BF16", (H,)),
            TensorSpec("lm_head.weight", "BF16", (V, H))]
    return out


def _meta_tensors(cfg: dict, dtype: str) -> list[TensorSpec]:
    """Names and shapes from the transformers class built on the meta device (no memory)."""
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    config = transformers.AutoConfig.for_model(**cfg)
    cls = getattr(transformers, cfg["architectures"][0])
    with torch.device("meta"):
        model = cls(config)
    return [TensorSpec(k, dtype, tuple(v.shape)) for k, v in model.state_dict().items()]


@dataclass(frozen=True)
class HeaderOnlySpec:
    config: str                                  # file under tests/configs/real/
    tensors: Callable[[dict], list[TensorSpec]]
    shards: int
    shard_name: Callable[[int, int], str]        # (1-based index, count) -> file name
    note: str = ""


def _hf_name(i: int, n: int) -> str:
    return f"model-{i:05d}-of-{n:05d}.safetensors"


HEADER_ONLY_SPECS: dict[str, HeaderOnlySpec] = {
    "deepseek_v3_671b": HeaderOnlySpec(
        "deepseek_v3_671b.json", _deepseek_tensors, 163,
        lambda i, n: f"model-{i:05d}-of-{n:06d}.safetensors",
        "deepseek-ai/DeepSeek-V3: FP8 block-quantized, 61 layers + MTP layer 61, 91,991 tensors"),
    "kimi_k2_like": HeaderOnlySpec(
        "kimi_k2.json", lambda c: _deepseek_tensors(c, inv_freq=56), 61,
        lambda i, n: f"model-{i}-of-{n}.safetensors",
        "moonshotai/Kimi-K2-Instruct: DeepSeek-V3 arch, 384 experts, model_type kimi_k2, "
        "unpadded shard names, 139,644 tensors"),
    "llama3_8b": HeaderOnlySpec(
        "llama3_8b.json", lambda c: _meta_tensors(c, "BF16"), 4, _hf_name,
        "meta-llama/Meta-Llama-3-8B: BF16, 291 tensors"),
    "gpt_oss_20b": HeaderOnlySpec(
        "gpt_oss_20b.json", _gpt_oss_tensors, 3,
        lambda i, n: f"model-{i - 1:05d}-of-{n - 1:05d}.safetensors",
        "openai/gpt-oss-20b: MXFP4 experts, zero-based shard names model-00000-of-00002"),
    "llama4_scout_like": HeaderOnlySpec(
        "llama4_scout.json", lambda c: _meta_tensors(c, "BF16"), 50, _hf_name,
        "Llama-4-Scout-17B-16E layout: multimodal repo, language_model.* prefix, stacked experts"),
}


def _shard(tensors: list[TensorSpec], n: int) -> list[list[TensorSpec]]:
    """Split ``tensors`` (kept in order) into exactly ``n`` shards, greedily under the smallest cap."""
    sizes = [t.nbytes for t in tensors]

    def count(cap: int) -> int:
        k, cur = 1, 0
        for s in sizes:
            if cur and cur + s > cap:
                k, cur = k + 1, 0
            cur += s
        return k

    lo, hi = max(max(sizes), sum(sizes) // n), sum(sizes)
    while lo < hi:  # smallest cap giving <= n shards
        mid = (lo + hi) // 2
        if count(mid) <= n:
            hi = mid
        else:
            lo = mid + 1
    shards: list[list[TensorSpec]] = [[]]
    cur = 0
    for t, s in zip(tensors, sizes, strict=True):
        if cur and cur + s > lo:
            shards.append([])
            cur = 0
        shards[-1].append(t)
        cur += s
    if len(shards) != n:
        raise ValueError(f"cannot split {len(tensors)} tensors into {n} shards")
    return shards


def safetensors_prefix(tensors: Iterable[TensorSpec], metadata: dict | None = None) -> tuple[bytes, int]:
    """(8-byte length + JSON header, padded to 8 bytes) and the data size, laid out like the
    safetensors writer: larger dtypes first, then by name; offsets contiguous from 0."""
    order = sorted(tensors, key=lambda t: (-_BYTES[t.dtype], t.name))
    header: dict = {"__metadata__": metadata if metadata is not None else {"format": "pt"}}
    off = 0
    for t in order:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + t.nbytes]}
        off += t.nbytes
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js, off


def header_only_tensors(spec: str) -> list[TensorSpec]:
    """The tensors of a header-only spec, in shard order."""
    s = HEADER_ONLY_SPECS[spec]
    return s.tensors(json.loads((CONFIG_DIR / "real" / s.config).read_text()))


@functools.cache
def _header_only(spec: str) -> tuple[tuple[str, bytes | VirtualFile], ...]:
    s = HEADER_ONLY_SPECS[spec]
    config_bytes = (CONFIG_DIR / "real" / s.config).read_bytes()
    return tuple(header_only_files(config_bytes, s.tensors(json.loads(config_bytes)), s.shards,
                                   s.shard_name).items())


def header_only_files(config_bytes: bytes, tensors: list[TensorSpec], shards: int,
                      shard_name: Callable[[int, int], str] = _hf_name) -> FileMap:
    """config.json, ``tensors`` cut into ``shards`` header-only files, and their index."""
    files: FileMap = {"config.json": config_bytes}
    weight_map: dict[str, str] = {}
    for i, group in enumerate(_shard(tensors, shards), start=1):
        name = shard_name(i, shards)
        prefix, data = safetensors_prefix(group)
        files[name] = VirtualFile(prefix=prefix, size=len(prefix) + data)
        weight_map.update((t.name, name) for t in group)
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)},
             "weight_map": dict(sorted(weight_map.items()))}
    files["model.safetensors.index.json"] = (json.dumps(index, indent=2) + "\n").encode()
    return files


def meta_replica(config_file: str, dest: Path, shards: int = 4) -> Path:
    """A full-size header-only checkpoint of tests/configs/real/``config_file``, its tensors named
    and shaped by the transformers class of the config's architecture (built on the meta device)
    and stored as ``save_pretrained`` stores them: a tied output head is not stored."""
    config_bytes = (CONFIG_DIR / "real" / config_file).read_bytes()
    cfg = json.loads(config_bytes)
    tensors = _meta_tensors(cfg, "F32" if cfg.get("torch_dtype") == "float32" else "BF16")
    if cfg.get("tie_word_embeddings"):
        tensors = [t for t in tensors if t.name != "lm_head.weight"]
    return materialize(header_only_files(config_bytes, tensors, shards), dest)


def make_header_only(spec: str) -> FileMap:
    """{relative path: bytes | VirtualFile} of a full-size checkpoint whose shards hold only headers.

    Specs: see HEADER_ONLY_SPECS. Cached; the returned dict is a fresh copy.
    """
    if spec not in HEADER_ONLY_SPECS:
        raise KeyError(f"unknown header-only spec {spec!r}; known: {sorted(HEADER_ONLY_SPECS)}")
    return dict(_header_only(spec))


def materialize(files: FileMap, dest: Path, sparse: bool = True) -> Path:
    """Write a file map to ``dest``. VirtualFiles become their prefix followed by zeros; with
    ``sparse`` the zeros are a hole made by truncate, so a 700 GB checkpoint costs its headers."""
    dest = Path(dest)
    for rel, content in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, bytearray)):
            path.write_bytes(content)
            continue
        with open(path, "wb") as f:
            f.write(content.prefix)
            if sparse:
                f.truncate(content.size)
            else:
                left = content.size - len(content.prefix)
                chunk = bytes(1 << 20)
                while left > 0:
                    f.write(chunk[: min(left, len(chunk))])
                    left -= len(chunk)
    return dest


def copy_model(src: Path, dest: Path) -> Path:
    """Copy a generated model directory (to modify it without touching the session cache)."""
    shutil.copytree(src, dest)
    return Path(dest)


# ---- Mistral's native layout -------------------------------------------------------------------

_NATIVE_NAMES = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
                 "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
                 "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
                 "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
                 "post_attention_layernorm": "ffn_norm"}


def make_mistral_native(src: Path, dest: Path) -> Path:
    """A tiny HF Mistral/Llama rewritten in Mistral's own format: consolidated.safetensors with
    Meta's names and q/k rows in interleaved rotary order, plus params.json."""
    import json as _json

    from safetensors import safe_open
    from safetensors.numpy import save_file

    cfg = _json.loads((src / "config.json").read_text())
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def interleave(w, n):
        return w.reshape(n, 2, w.shape[0] // n // 2, -1).swapaxes(1, 2).reshape(w.shape)

    native = {}
    for shard in sorted(src.glob("*.safetensors")):
        with safe_open(str(shard), "np") as f:
            for k in f.keys():
                w = f.get_tensor(k)
                n = k.replace("model.embed_tokens", "tok_embeddings").replace("model.norm", "norm")
                n = n.replace("lm_head", "output").replace("model.layers", "layers")
                for hf, nat in _NATIVE_NAMES.items():
                    n = n.replace(hf, nat)
                if n.endswith("attention.wq.weight"):
                    w = interleave(w, heads)
                elif n.endswith("attention.wk.weight"):
                    w = interleave(w, kv)
                native[n] = w
    dest.mkdir(parents=True)
    save_file(native, str(dest / "consolidated.safetensors"))
    rope = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta")
    (dest / "params.json").write_text(_json.dumps({
        "dim": cfg["hidden_size"], "n_layers": cfg["num_hidden_layers"],
        "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // heads,
        "hidden_dim": cfg["intermediate_size"], "n_heads": heads, "n_kv_heads": kv,
        "norm_eps": cfg["rms_norm_eps"], "vocab_size": cfg["vocab_size"], "rope_theta": rope}))
    return dest
