"""The pairs of source and target formats that test_ckpt_layout.py does not cover: GGUF -> GGUF
(through the GGUF reader's stream read as an HF checkpoint) and HF -> HF (re-sharded, cast),
checked against the direct conversions and by transformers, llama.cpp and `ckptkit diff`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ckptkit
import llama_child
from test_ckpt_layout import GGUF_FAMILIES, raw_tensors


def _diff(a, b) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptkit", "diff", str(a), str(b)], capture_output=True, text=True)


def _tensors(path) -> dict[str, tuple[int, bytes]]:
    import gguf
    r = gguf.GGUFReader(path)
    return {t.name: (int(t.tensor_type), bytes(np.asarray(t.data).tobytes())) for t in r.tensors}


def _kvs(path, prefix: str) -> dict:
    import gguf
    r = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in r.fields.items() if k.startswith(prefix)}


@pytest.mark.parametrize("family", GGUF_FAMILIES)
def test_gguf_to_gguf_keeps_a_float_gguf_and_requantises_like_the_direct_conversion(family, tiny_model, tmp_path):
    src = tiny_model(family)
    f32, again, q8, q8_direct = (tmp_path / n for n in ("f32.gguf", "again.gguf", "q8.gguf", "q8_direct.gguf"))
    ckptkit.convert(src, f32, outtype="f32")
    ckptkit.convert(f32, again)                           # auto: the source's own file type
    assert _tensors(again) == _tensors(f32)
    arch = _kvs(f32, "general.architecture")["general.architecture"]
    kept, orig = _kvs(again, arch + "."), _kvs(f32, arch + ".")
    assert {k: kept.get(k) for k in orig} == orig   # (a rebuilt config may state a default too)
    ckptkit.convert(f32, q8, outtype="q8_0")
    ckptkit.convert(src, q8_direct, outtype="q8_0")
    assert _tensors(q8) == _tensors(q8_direct)
    assert _diff(src, again).returncode == 0


def test_gguf_to_gguf_runs_in_llama_cpp_with_its_vocabulary(tiny_model, tmp_path):
    llama_child.require()
    src = tiny_model("llama")
    f16, q8 = tmp_path / "f16.gguf", tmp_path / "q8.gguf"
    ckptkit.convert(src, f16, outtype="f16")
    ckptkit.convert(f16, q8, outtype="q8_0")
    assert _kvs(q8, "tokenizer.ggml.tokens") == _kvs(f16, "tokenizer.ggml.tokens")
    tokens = [1, 5, 9, 30, 2]
    a, b = llama_child.logits(f16, tokens), llama_child.logits(q8, tokens)
    assert a.shape == b.shape and float(np.abs(a - b).max()) <= 0.05 * float(np.abs(a).max())


@pytest.mark.parametrize("family", ["qwen3_moe", "deepseek_v2"])
def test_gguf_to_gguf_streams_tensors_in_chunks(family, tiny_model, tmp_path, monkeypatch):
    """Tensors read front to back come from their chunk iterator, a few chunks held; only a
    tensor read out of order (MLA's kv_b, split in two parts) is computed whole, and at most one
    is held then (one thread)."""
    from ckptkit.conversion import stream_source
    whole: list[tuple[str, int]] = []
    real = stream_source.StreamSource._tensor

    def spy(self, i):
        data = real(self, i)
        whole.append((self.stream.tensors[i].name, len(self._held)))
        return data
    monkeypatch.setattr(stream_source.StreamSource, "_tensor", spy)
    monkeypatch.setattr(stream_source, "WINDOW", 1)
    src = tiny_model(family)
    f32, out, direct = tmp_path / "a.gguf", tmp_path / "b.gguf", tmp_path / "c.gguf"
    ckptkit.convert(src, f32, outtype="f32")
    ckptkit.convert(f32, out, outtype="f16", threads=1)
    ckptkit.convert(src, direct, outtype="f16")
    assert _tensors(out) == _tensors(direct)
    if family == "deepseek_v2":
        assert whole and all("kv_b_proj" in n and held == 1 for n, held in whole), whole
    else:
        assert whole == []


def test_hf_to_hf_reshards_and_casts(tiny_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM
    src = tiny_model("qwen3_moe")
    same, f32 = tmp_path / "same", tmp_path / "f32"
    ckptkit.convert(src, same, to="hf", shard_size=50_000)
    assert raw_tensors(same) == raw_tensors(src)
    assert len(json.loads((same / "model.safetensors.index.json").read_text())["weight_map"]) == len(raw_tensors(src))
    ckptkit.convert(src, f32, to="hf", outtype="f32")
    assert {d for d, _, _ in raw_tensors(f32).values()} == {"torch.float32"}
    model, info = AutoModelForCausalLM.from_pretrained(f32, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert _diff(src, f32).returncode == 0 and _diff(src, same).returncode == 0


def test_gguf_to_gguf_refuses_resume_in_one_line(tiny_model, tmp_path):
    f32 = tmp_path / "a.gguf"
    ckptkit.convert(tiny_model("llama"), f32, outtype="f32")
    r = subprocess.run([sys.executable, "-m", "ckptkit", "convert", str(f32), str(tmp_path / "b.gguf"), "--resume"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--resume" in r.stderr
