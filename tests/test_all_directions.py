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


def test_gguf_to_gguf_memory_is_one_tensor_at_a_time(tiny_model, tmp_path, monkeypatch):
    """Each tensor of the stream is computed once, and at most one is held (one thread)."""
    from ckptkit.conversion import stream_source
    seen: list[int] = []
    real = stream_source.StreamSource._tensor

    def spy(self, i):
        data = real(self, i)
        seen.append(len(self._held))
        return data
    monkeypatch.setattr(stream_source.StreamSource, "_tensor", spy)
    src = tiny_model("qwen3_moe")
    f32, out = tmp_path / "a.gguf", tmp_path / "b.gguf"
    ckptkit.convert(src, f32, outtype="f32")
    ckptkit.convert(f32, out, outtype="f16")
    assert seen and max(seen) == 1


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
