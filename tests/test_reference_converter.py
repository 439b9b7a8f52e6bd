"""ckptkit's HF -> GGUF output against llama.cpp's own convert_hf_to_gguf.py on the same tiny
models: the same tensors (names, shapes, types, bytes) and every model-hyperparameter key the
reference writes.

The reference is the one inside the llama-cpp-python source distribution (the version whose
llama.cpp the logits tests load). It is fetched once per machine with
``pip download --no-deps --no-binary :all: llama-cpp-python==VERSION`` into
``~/.cache/ckptkit-tests/`` (or $CKPTKIT_TEST_CACHE), only its converter files extracted; set
$CKPTKIT_LLAMA_CPP_SRC to a llama.cpp checkout to use that instead.

Differences the reference makes on purpose (or that are its defects), asserted as such:
- It names a BPE pre-tokenizer by hashing the token ids of a fixed text, so it rejects every
  tokenizer trained here ("BPE pre-tokenizer was not recognized"). The run wraps it so that its
  hash lookup answers with the name ckptkit derived from the tokenizer's definition; everything
  else is the reference's own code.
- For a Llama-2-style tokenizer.json without tokenizer.model it writes the placeholder score
  -1000 for every token (gguf-py LlamaHfVocab.get_token_score), which loses the merge order
  llama.cpp's SPM tokenizer merges by; ckptkit derives scores from the merge ranks. It also types
  <unk> CONTROL where SentencePiece (and ckptkit) say UNKNOWN.
- general.type / general.size_label (descriptive) and tokenizer.ggml.add_sep_token = false
  (llama.cpp's default) are not written by ckptkit; general.name is derived differently.
- GPT-2: the reference writes feed_forward_length = 4 * n_embd whatever n_inner says; llama.cpp
  sizes ffn_up by that key, so its file of a model with n_inner != 4 * n_embd does not load.
  ckptkit writes n_inner (the width of the tensors it writes). Asserted: values, and that
  llama.cpp loads ckptkit's file and refuses the reference's.
- Gemma 3 with a SentencePiece-style tokenizer.json and no tokenizer.model: the reference falls
  back to its byte-level BPE (GPT-2) vocabulary code, which cannot tokenize "▁"-marked pieces;
  ckptkit writes the SPM vocabulary (byte-fallback tokens, merge-rank scores). Same token strings;
  llama.cpp tokenizes a text as the HF tokenizer does with ckptkit's file, not with the reference's.
- Values a transcendental function computes (Qwen3-Next's ssm_a = -exp(A_log); TRANSCENDENTAL)
  may differ from the reference's in the last bit, depending on the CPU and math library: they are
  compared within one unit in the last place, every other tensor byte for byte.
- Qwen3-Next: the reference counts MTP layers from mtp.* tensors and stops on an assertion when
  there are none (the tiny model has none), so it runs with --no-mtp, which only drops those.

gpt-oss is compared twice: float experts (the transformers layout) and MXFP4 experts as published
(blocks + scales), which both converters repack losslessly into GGML MXFP4 (ckptkit with
outtype auto; the reference always keeps MXFP4).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import gguf
import numpy as np
import pytest

import llama_child
import llama_sdist
from ckptkit.conversion import convert_to_gguf
from test_convert_families_c import gpt_oss_mxfp4  # noqa: F401  (fixture: gpt-oss as published)

VERSION = llama_sdist.VERSION
CACHE = llama_sdist.CACHE
SUBDIR = f"llama_cpp_python-{VERSION}/vendor/llama.cpp"
NEEDED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")

# keys the reference writes that ckptkit does not, and why that is fine (see the docstring)
ALLOWED_MISSING = {"general.type", "general.size_label", "tokenizer.ggml.add_sep_token"}
# per family: the reference's byte-level BPE merges of Gemma's SPM vocabulary (see the docstring)
ALLOWED_MISSING_IN = {"gemma3_text": {"tokenizer.ggml.merges"}}

# tiny_model families, plus "gpt_oss_mxfp4" (the gpt-oss tiny model with MXFP4 experts)
FAMILIES = ["llama", "mixtral", "qwen2", "qwen3", "qwen3_moe", "smollm3", "olmo2", "gemma3_text", "gpt2",
            "llama4_text", "gpt_oss", "gpt_oss_mxfp4", "qwen3_next"]
# families ckptkit converts GGUF -> HF (targets in mappings/hf_configs.toml); not gpt2, whose reference
# GGUF states a feed_forward_length its tensors do not have (see test_gpt2_reference_feed_forward_length_does_not_load)
BACK_TO_HF = ["llama", "mixtral", "qwen2", "qwen3", "qwen3_moe", "smollm3", "olmo2", "gemma3_text",
              "llama4_text", "gpt_oss", "qwen3_next"]
# extra reference arguments (see the docstring)
REFERENCE_ARGS = {"qwen3_next": ["--no-mtp"]}
# ckptkit's outtype: the reference writes MXFP4 experts as MXFP4 whatever --outtype says
OUTTYPE = {"gpt_oss_mxfp4": "auto"}
# (family, key) -> hyperparameter on which the reference is wrong (see the docstring; asserted)
DIFFERENT_VALUES = {("gpt2", "gpt2.feed_forward_length")}
# per family: tensor roles (name without "blk.N.") whose values a transcendental function
# computes. Both converters round exp/log/pow to float32, but the last bit depends on the CPU and
# the math library (torch's float32 exp rounds differently with AVX-512), so these may differ by
# one unit in the last place; every other tensor is compared byte for byte.
TRANSCENDENTAL = {"qwen3_next": {"ssm_a": "-exp(A_log)"}}

# Runs the reference converter with its hash-based pre-tokenizer lookup answered by name.
WRAPPER = """
import os, runpy, sys
root = sys.argv[1]
sys.path[:0] = [os.path.join(root, "gguf-py"), root]
import conversion.base as base
pre = os.environ.get("CKPTKIT_PRE")
if pre:
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
sys.argv = [os.path.join(root, "convert_hf_to_gguf.py")] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _usable(root: Path) -> bool:
    return (root / "convert_hf_to_gguf.py").is_file() and (root / "gguf-py" / "gguf").is_dir()


def _fetch() -> Path:
    """The reference converter's folder, downloaded and extracted into the cache once."""
    root = CACHE / SUBDIR
    if _usable(root):
        return root
    tar = llama_sdist.archive()
    staging = Path(tempfile.mkdtemp(prefix="extract-", dir=CACHE))
    try:
        with tarfile.open(tar) as tf:
            members = [m for m in tf.getmembers()
                       if m.name.startswith(SUBDIR + "/") and m.name[len(SUBDIR) + 1:].startswith(NEEDED)]
            tf.extractall(staging, members=members, filter="data")
        top = CACHE / SUBDIR.split("/")[0]
        if not _usable(root):
            try:
                os.rename(staging / SUBDIR.split("/")[0], top)   # atomic: concurrent runs race safely
            except OSError:
                pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not _usable(root):
        pytest.skip(f"the llama-cpp-python {VERSION} sdist holds no convert_hf_to_gguf.py")
    return root


@pytest.fixture(scope="session")
def reference_root() -> Path:
    env = os.environ.get("CKPTKIT_LLAMA_CPP_SRC")
    if env:
        root = Path(env)
        if not _usable(root):
            pytest.fail(f"CKPTKIT_LLAMA_CPP_SRC={env} holds no convert_hf_to_gguf.py and gguf-py")
        return root
    return _fetch()


def _qwen2_copy(src: Path, dest: Path) -> Path:
    """transformers 5 gives model_type qwen2 its Qwen2Tokenizer, which adds <|endoftext|> when the
    vocabulary lacks it, one past the configured vocab_size, and the reference then stops on an
    assertion. Real Qwen2 vocabularies have that token: name the pad token so in a copy."""
    shutil.copytree(src, dest)
    tj = json.loads((dest / "tokenizer.json").read_text())
    for a in tj["added_tokens"]:
        if a["content"] == "<|pad|>":
            a["content"] = "<|endoftext|>"
    tj["model"]["vocab"]["<|endoftext|>"] = tj["model"]["vocab"].pop("<|pad|>")
    (dest / "tokenizer.json").write_text(json.dumps(tj))
    tc = json.loads((dest / "tokenizer_config.json").read_text())
    tc["pad_token"] = "<|endoftext|>"
    (dest / "tokenizer_config.json").write_text(json.dumps(tc))
    return dest


def run_reference(root: Path, model: Path, out: Path, pre: str | None, args: list[str] = ()) -> None:
    env = dict(os.environ, PYTHONPATH=str(root / "gguf-py"))
    if pre:
        env["CKPTKIT_PRE"] = pre
    r = subprocess.run([sys.executable, "-c", WRAPPER, str(root), "--outtype", "f32", "--outfile", str(out),
                        *args, str(model)], capture_output=True, text=True, timeout=900, env=env, cwd=out.parent)
    assert r.returncode == 0 and out.exists(), "reference converter failed:\n" + r.stderr[-3000:]


def _fields(reader: gguf.GGUFReader) -> dict:
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@pytest.fixture(scope="module")
def both(tiny_model, reference_root, tmp_path_factory, gpt_oss_mxfp4):  # noqa: F811  (fixture)
    """family -> (reference GGUF reader, ckptkit GGUF reader, reference GGUF path, HF model), each
    converted once; ckptkit's GGUF is "ckptkit.gguf" next to the reference's."""
    cache = {}

    def get(family):
        if family not in cache:
            d = tmp_path_factory.mktemp(f"ref-{family}")
            model = gpt_oss_mxfp4[0] if family == "gpt_oss_mxfp4" else tiny_model(family)
            if family == "qwen2":
                model = _qwen2_copy(model, d / "model")
            mine = d / "ckptkit.gguf"
            convert_to_gguf(str(model), mine, outtype=OUTTYPE.get(family, "f32"))
            ck = gguf.GGUFReader(mine)
            pre = ck.fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in ck.fields else None
            ref = d / "reference.gguf"
            run_reference(reference_root, model, ref, pre, REFERENCE_ARGS.get(family, []))
            cache[family] = (gguf.GGUFReader(ref), ck, ref, model)
        return cache[family]
    return get


def _role(name: str) -> str:
    return re.sub(r"^blk\.\d+\.", "", name)


def max_ulp(a: np.ndarray, b: np.ndarray) -> int:
    """The largest distance between two float32 arrays in units in the last place."""
    def line(x: np.ndarray) -> np.ndarray:   # sign-magnitude bits -> one monotonic integer line
        i = np.ascontiguousarray(x, np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    assert a.shape == b.shape
    return int(np.abs(line(a) - line(b)).max(initial=0))


def test_max_ulp():
    one = np.float32(1.0)
    up = np.nextafter(one, np.float32(2))
    assert max_ulp(np.array([one, -one]), np.array([one, -one])) == 0
    assert max_ulp(np.array([one, -one]), np.array([up, -one])) == 1
    assert max_ulp(np.array([-one]), np.array([-np.nextafter(up, np.float32(2))])) == 2
    assert max_ulp(np.array([0.0], np.float32), np.array([-0.0], np.float32)) == 0
    tiny = np.array([np.finfo(np.float32).smallest_subnormal])
    assert max_ulp(tiny, -tiny) == 2                    # across zero


@pytest.mark.parametrize("family", FAMILIES)
def test_same_tensors_same_bytes(family, both):
    ref, ck, *_ = both(family)
    rt = {t.name: t for t in ref.tensors}
    ct = {t.name: t for t in ck.tensors}
    assert set(rt) == set(ct), (f"only in the reference: {sorted(set(rt) - set(ct))}; "
                                f"only in ckptkit: {sorted(set(ct) - set(rt))}")
    assert len(rt) > 10
    inexact = TRANSCENDENTAL.get(family, {})
    assert all(any(_role(n) == role for n in rt) for role in inexact), "a declared role is not in the file"
    for name, r in rt.items():
        c = ct[name]
        assert list(c.shape) == list(r.shape), name
        assert c.tensor_type == r.tensor_type, name
        if _role(name) in inexact:
            assert r.tensor_type == gguf.GGMLQuantizationType.F32, name
            ulp = max_ulp(np.asarray(c.data, np.float32), np.asarray(r.data, np.float32))
            assert ulp <= 1, f"{name} ({inexact[_role(name)]}): {ulp} units in the last place from the reference"
        else:
            assert c.data.tobytes() == r.data.tobytes(), f"{name}: data differ"
    if family == "gpt_oss_mxfp4":   # the published layout really went through the MXFP4 repacking
        assert {t.tensor_type.name for n, t in ct.items() if "_exps.weight" in n} == {"MXFP4"}


@pytest.mark.parametrize("family", FAMILIES)
def test_metadata_covers_the_reference(family, both):
    ref, ck, *_ = both(family)
    rf, cf = _fields(ref), _fields(ck)
    arch = rf["general.architecture"]
    assert cf["general.architecture"] == arch
    missing = sorted(set(rf) - set(cf) - ALLOWED_MISSING - ALLOWED_MISSING_IN.get(family, set()))
    assert not missing, f"keys the reference writes and ckptkit does not: {missing}"
    # every model hyperparameter has the reference's value (float32-exact)
    for k, v in rf.items():
        if k.startswith(arch + ".") and (family, k) not in DIFFERENT_VALUES:
            got = cf[k]
            if isinstance(v, float):
                assert np.float32(got) == np.float32(v), (k, got, v)
            else:
                assert got == v, (k, got, v)
    # the reference's mistakes are exactly these (see the docstring)
    if family == "gpt2":
        ffn_up = next(t for t in ck.tensors if t.name == "blk.0.ffn_up.weight")
        n_embd = rf["gpt2.embedding_length"]
        assert rf["gpt2.feed_forward_length"] == 4 * n_embd
        assert cf["gpt2.feed_forward_length"] == ffn_up.shape[1] != 4 * n_embd   # GGUF shape: (n_embd, n_ff)


def test_gpt2_reference_feed_forward_length_does_not_load(both):
    """llama.cpp sizes GPT-2's ffn_up by feed_forward_length: the reference's 4 * n_embd makes its
    file of a model with another n_inner unloadable; ckptkit's loads."""
    llama_child.require()
    ref_path = both("gpt2")[2]
    mine = ref_path.parent / "ckptkit.gguf"
    llama_child.load(mine)
    with pytest.raises(llama_child.LlamaRefused, match="Failed to load model"):
        llama_child.load(ref_path)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gemma3_text"])
def test_tokenizer_agrees(family, both):
    ref, ck, *_ = both(family)
    rf, cf = _fields(ref), _fields(ck)
    assert cf["tokenizer.ggml.model"] == rf["tokenizer.ggml.model"]
    assert cf["tokenizer.ggml.tokens"] == rf["tokenizer.ggml.tokens"]
    for k in ("tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id",
              "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.chat_template"):
        if k in rf:
            assert cf.get(k) == rf[k], k
    rt, ct = rf["tokenizer.ggml.token_type"], cf["tokenizer.ggml.token_type"]
    differ = [i for i, (a, b) in enumerate(zip(rt, ct, strict=True)) if a != b]
    if rf["tokenizer.ggml.model"] == "llama":
        # on purpose: <unk> is UNKNOWN (2), the reference's HF-vocab path says CONTROL (3)
        unk = rf["tokenizer.ggml.unknown_token_id"]
        assert differ == [unk] and (rt[unk], ct[unk]) == (3, 2)
        # on purpose: the reference writes the placeholder -1000 for every score
        rs, cs = rf["tokenizer.ggml.scores"], cf["tokenizer.ggml.scores"]
        assert set(rs) == {-1000.0}
        assert len(set(cs)) > 10                # ckptkit's carry the merge order
    else:
        assert not differ


def test_gemma3_tokenizer_reference_falls_back_to_byte_level_bpe(both):
    """Without tokenizer.model the reference writes Gemma's SentencePiece-style tokenizer.json as
    byte-level BPE; ckptkit writes it as SPM. Same tokens and specials; llama.cpp tokenizes like
    the HF tokenizer only with ckptkit's file."""
    from tokenizers import Tokenizer
    ref, ck, ref_path, model = both("gemma3_text")
    rf, cf = _fields(ref), _fields(ck)
    assert not (model / "tokenizer.model").exists()
    assert (rf["tokenizer.ggml.model"], cf["tokenizer.ggml.model"]) == ("gpt2", "llama")
    assert cf["tokenizer.ggml.tokens"] == rf["tokenizer.ggml.tokens"]
    # SPM merges by scores (from the merge ranks), not by a merges list
    assert "tokenizer.ggml.merges" in rf and "tokenizer.ggml.merges" not in cf
    assert len(set(cf["tokenizer.ggml.scores"])) > 10
    for k in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id",
              "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
              "tokenizer.chat_template"):
        if k in rf:
            assert cf.get(k) == rf[k], k
    # token types differ exactly where SPM has its own: the 256 byte-fallback tokens <0x00>..<0xFF>
    # (reference NORMAL, ckptkit BYTE) and <unk> (reference CONTROL, ckptkit UNKNOWN)
    rt, ct = rf["tokenizer.ggml.token_type"], cf["tokenizer.ggml.token_type"]
    byte_ids = [i for i, t in enumerate(cf["tokenizer.ggml.tokens"]) if len(t) == 6 and t.startswith("<0x")]
    unk = rf["tokenizer.ggml.unknown_token_id"]
    assert len(byte_ids) == 256 and {(rt[i], ct[i]) for i in byte_ids} == {(1, 6)}
    assert (rt[unk], ct[unk]) == (3, 2)
    assert [i for i, (a, b) in enumerate(zip(rt, ct, strict=True)) if a != b] == sorted(byte_ids + [unk])
    llama_child.require()
    text = "Hello world, the quick brown fox jumps over the lazy dog."
    want = Tokenizer.from_file(str(model / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    assert llama_child.tokenize(ref_path.parent / "ckptkit.gguf", [text]) == [want]
    assert llama_child.tokenize(ref_path, [text]) != [want]


@pytest.mark.parametrize("family", BACK_TO_HF)
def test_reference_gguf_back_to_hf(family, both, tmp_path):
    """A GGUF the reference wrote converts back (ckptkit GGUF -> HF) to a model transformers loads
    with no missing or unexpected keys, with the original's weights and logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from ckptkit.conversion import convert_to_hf
    *_, ref_path, model = both(family)
    out = tmp_path / "hf"
    convert_to_hf(str(ref_path), out, outtype="f32", shard_size=200_000)
    back, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    orig = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    so, sb = orig.state_dict(), back.state_dict()
    assert so.keys() == sb.keys() and all(torch.equal(so[k], sb[k]) for k in so)
    toks = torch.tensor([[1, 5, 9, 100, 200, 3, 77, 42]])
    with torch.no_grad():
        assert torch.equal(orig.eval()(toks).logits, back.eval()(toks).logits)
