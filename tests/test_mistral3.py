"""Mistral Small 3.1 (Mistral3ForConditionalGeneration): its text model to GGUF (llama.cpp's
"mistral3" architecture, vision tower dropped), checked against transformers' logits, llama.cpp's
own converter and back to a MistralForCausalLM; and the full-size published layout planned from
headers alone."""
from __future__ import annotations

import json

import numpy as np
import pytest

import llama_child
import modelgen
from ckptkit import api
from ckptkit.conversion import convert_to_gguf, convert_to_hf
from ckptkit.errors import CkptError
from ckptkit.infer import infer
from modelgen import TensorSpec

TOKENS = [1, 5, 9, 100, 200, 3, 77, 42, 300, 12]

TEXT = dict(model_type="mistral", vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=24,       # q width 96 != hidden 64
            max_position_embeddings=256, rope_theta=1e9, sliding_window=None, rms_norm_eps=1e-5,
            tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
VISION = dict(model_type="pixtral", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
              num_attention_heads=2, head_dim=16, image_size=64, patch_size=16)

# mistralai/Mistral-Small-3.1-24B-Base-2503 config.json as published
SMALL_31 = {
    "architectures": ["Mistral3ForConditionalGeneration"], "image_token_index": 10, "model_type": "mistral3",
    "multimodal_projector_bias": False, "projector_hidden_act": "gelu", "spatial_merge_size": 2,
    "text_config": {"attention_dropout": 0.0, "head_dim": 128, "hidden_act": "silu", "hidden_size": 5120,
                    "initializer_range": 0.02, "intermediate_size": 32768, "max_position_embeddings": 131072,
                    "model_type": "mistral", "num_attention_heads": 32, "num_hidden_layers": 40,
                    "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000000.0,
                    "sliding_window": None, "use_cache": True, "vocab_size": 131072},
    "torch_dtype": "bfloat16",
    "vision_config": {"attention_dropout": 0.0, "head_dim": 64, "hidden_act": "gelu", "hidden_size": 1024,
                      "image_size": 1540, "initializer_range": 0.02, "intermediate_size": 4096,
                      "model_type": "pixtral", "num_attention_heads": 16, "num_channels": 3,
                      "num_hidden_layers": 24, "patch_size": 14, "rope_theta": 10000.0},
    "vision_feature_layer": -1,
}


def _model(**text):
    import torch
    import transformers
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration
    transformers.utils.logging.set_verbosity_error()
    cfg = Mistral3Config(text_config=dict(TEXT, **text), vision_config=VISION, spatial_merge_size=2,
                         multimodal_projector_bias=False, image_token_index=10, tie_word_embeddings=False)
    torch.manual_seed(0)
    return Mistral3ForConditionalGeneration(cfg).eval()


@pytest.fixture(scope="module")
def tiny_mistral3(tmp_path_factory):
    """A tiny random Mistral3ForConditionalGeneration written by save_pretrained (published
    names: language_model.model.*, language_model.lm_head, vision_tower.*, multi_modal_projector.*)."""
    d = tmp_path_factory.mktemp("mistral3") / "model"
    _model().save_pretrained(d, max_shard_size=100_000)
    modelgen.make_tokenizer(d, "spm", TEXT["vocab_size"])
    return d


def _text_logits(model_dir, tokens=TOKENS) -> np.ndarray:
    import torch
    from transformers import Mistral3ForConditionalGeneration
    m = Mistral3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(input_ids=torch.tensor([tokens])).logits[0].numpy()


def test_saved_layout_is_the_published_one(tiny_mistral3):
    names = json.loads((tiny_mistral3 / "model.safetensors.index.json").read_text())["weight_map"]
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in names
    assert "language_model.lm_head.weight" in names
    assert any(n.startswith("vision_tower.") for n in names)
    assert any(n.startswith("multi_modal_projector.") for n in names)


def test_to_gguf_runs_in_llama_cpp_like_transformers(tiny_mistral3, tmp_path):
    llama_child.require()
    import gguf
    out = tmp_path / "m.gguf"
    res = convert_to_gguf(str(tiny_mistral3), out, outtype="f32")
    assert res.plan.arch == "mistral3"
    dropped = {n for n, _ in res.plan.dropped}
    assert dropped and all(n.startswith(("vision_tower.", "multi_modal_projector.")) for n in dropped)
    r = gguf.GGUFReader(out)
    kv = {k: f.contents() for k, f in r.fields.items()}
    assert kv["general.architecture"] == "mistral3"
    assert kv["mistral3.attention.key_length"] == 24 and kv["mistral3.rope.dimension_count"] == 24
    assert {t.name for t in r.tensors} >= {"output.weight", "blk.1.attn_q.weight"}
    assert not any("vision" in t.name or "mm." in t.name for t in r.tensors)
    ref = _text_logits(tiny_mistral3)
    got = llama_child.logits(out, TOKENS)
    assert got.shape == ref.shape and float(np.std(ref)) > 0
    rel = float(np.abs(got - ref).max() / np.abs(ref).max())
    assert rel < 1e-3, rel


def test_same_tensors_and_keys_as_llama_cpp_converter(tiny_mistral3, tmp_path):
    """llama.cpp's convert_hf_to_gguf.py on the same model: the same tensors byte for byte and
    every hyperparameter key (the tokenizer differences are test_reference_converter's subject)."""
    import gguf

    import test_reference_converter as ref
    mine, theirs = tmp_path / "ckptkit.gguf", tmp_path / "reference.gguf"
    convert_to_gguf(str(tiny_mistral3), mine, outtype="f32")
    ref.run_reference(ref._fetch(), tiny_mistral3, theirs, None)
    a, b = gguf.GGUFReader(mine), gguf.GGUFReader(theirs)
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert ta.keys() == tb.keys()
    for n in tb:
        assert ta[n].tensor_type == tb[n].tensor_type and np.array_equal(ta[n].data, tb[n].data), n
    fa, fb = ({k: f.contents() for k, f in x.fields.items() if k.startswith("mistral3.")} for x in (a, b))
    assert fa == pytest.approx(fb)


def test_gguf_back_to_mistral_for_causal_lm(tiny_mistral3, tmp_path):
    """GGUF -> HF gives the text model as transformers' class for it: loads with no missing,
    unexpected or mismatched keys, the original text weights bit for bit, the same logits."""
    import torch
    from transformers import AutoModelForCausalLM, Mistral3ForConditionalGeneration
    g = tmp_path / "m.gguf"
    convert_to_gguf(str(tiny_mistral3), g, outtype="f32")
    out = tmp_path / "hf"
    convert_to_hf(str(g), out, outtype="f32")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["MistralForCausalLM"] and cfg["head_dim"] == 24
    assert cfg["sliding_window"] is None
    back, info = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    assert type(back).__name__ == "MistralForCausalLM"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    orig = Mistral3ForConditionalGeneration.from_pretrained(tiny_mistral3, dtype=torch.float32).eval()
    text = orig.model.language_model.state_dict()
    sb = back.state_dict()
    assert sb["lm_head.weight"].equal(orig.lm_head.weight)
    assert all(torch.equal(sb["model." + k], v) for k, v in text.items())
    toks = torch.tensor([TOKENS])
    with torch.no_grad():
        assert torch.equal(back.eval()(toks).logits, orig(input_ids=toks).logits)


@pytest.mark.parametrize("text, why", [
    ({"sliding_window": 16}, "sliding-window"),
    ({"model_type": "ministral3"}, "Mistral text model"),
])
def test_unsupported_text_models_refused_in_one_line(tmp_path, text, why):
    cfg = dict(SMALL_31, text_config=dict(SMALL_31["text_config"], **text))
    src = _header_only(cfg, tmp_path / "m", shards=1, vision=False)
    with pytest.raises(CkptError, match=why) as e:
        convert_to_gguf(str(src), tmp_path / "x.gguf", dry_run=True, vocab=False)
    assert "\n" not in str(e.value)


# ---- the full-size published layout, headers only ----------------------------------------------

def small_31_tensors(c: dict, vision: bool = True) -> list[TensorSpec]:
    """Mistral Small 3.1's tensors under the published names (transformers' class on the meta
    device, renamed as save_pretrained writes them)."""
    import torch
    import transformers
    transformers.utils.logging.set_verbosity_error()
    config = transformers.AutoConfig.for_model(**c)
    with torch.device("meta"):
        model = transformers.Mistral3ForConditionalGeneration(config)
    out = []
    for k, v in model.state_dict().items():
        for a, b in (("model.language_model.", "language_model.model."), ("lm_head.", "language_model.lm_head."),
                     ("model.vision_tower.", "vision_tower."),
                     ("model.multi_modal_projector.", "multi_modal_projector.")):
            if k.startswith(a):
                k = b + k[len(a):]
                break
        if vision or k.startswith("language_model."):
            out.append(TensorSpec(k, "BF16", tuple(v.shape)))
    return out


def _header_only(c: dict, dest, shards: int = 10, vision: bool = True):
    tensors = small_31_tensors(c, vision)
    files: dict = {"config.json": json.dumps(c).encode()}
    wm = {}
    for i, group in enumerate(modelgen._shard(tensors, shards), start=1):
        name = f"model-{i:05d}-of-{shards:05d}.safetensors"
        prefix, size = modelgen.safetensors_prefix(group)
        files[name] = modelgen.VirtualFile(prefix=prefix, size=len(prefix) + size)
        wm.update((t.name, name) for t in group)
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": wm}).encode()
    return modelgen.materialize(files, dest)


@pytest.fixture(scope="module")
def small_31(tmp_path_factory):
    return _header_only(SMALL_31, tmp_path_factory.mktemp("small31") / "Mistral-Small-3.1-24B-Base-2503")


def test_full_size_inspect(small_31):
    index = api.inspect(str(small_31))
    inf = infer(index)
    assert inf.family["family"] == "mistral3" and inf.family["model"] == "Mistral Small 3.1 24B"
    p = inf.value("parameters")
    text = sum(t.numel for t in index.tensors.values() if t.name.startswith("language_model."))
    assert p["total"] == index.total_parameters == text + p["vision"]
    assert 23.5e9 < text < 24.0e9 and 0.4e9 < p["vision"] < 0.45e9    # "24B" text, Pixtral vision tower
    assert inf.value("head_dim") == 128 and inf.value("num_key_value_heads") == 8
    from ckptkit.validate import validate
    v = validate(str(small_31))
    assert not v.findings, [f.to_json() for f in v.findings]


def test_full_size_dry_run_plan(small_31, tmp_path):
    plan = convert_to_gguf(str(small_31), tmp_path / "never.gguf", dry_run=True, vocab=False).plan
    assert not (tmp_path / "never.gguf").exists()
    assert plan.arch == "mistral3"
    slots = {s.name: s for s in plan.slots}
    assert len(slots) == 3 + 40 * 9
    assert slots["blk.39.attn_q.weight"].shape == (4096, 5120)
    assert slots["blk.0.attn_k.weight"].shape == (1024, 5120)
    assert slots["blk.0.attn_output.weight"].shape == (5120, 4096)
    assert slots["output.weight"].shape == (131072, 5120) and slots["blk.0.ffn_up.weight"].shape == (32768, 5120)
    kv = {k.key: k.value for k in plan.kvs}
    want = {"mistral3.block_count": 40, "mistral3.embedding_length": 5120, "mistral3.feed_forward_length": 32768,
            "mistral3.attention.head_count": 32, "mistral3.attention.head_count_kv": 8,
            "mistral3.attention.key_length": 128, "mistral3.attention.value_length": 128,
            "mistral3.rope.dimension_count": 128, "mistral3.context_length": 131072,
            "mistral3.vocab_size": 131072, "mistral3.rope.freq_base": 1e9}
    for k, v in want.items():
        assert kv[k] == pytest.approx(v), k
    assert "mistral3.attention.sliding_window" not in kv
    vision = [n for n, _ in plan.dropped]
    assert len(vision) > 100 and all(n.startswith(("vision_tower.", "multi_modal_projector.")) for n in vision)


def test_uniform_layout_keeps_the_vision_tower(tiny_mistral3, tmp_path):
    """HF -> ckpt keeps the whole model (vision tower as extra.* tensors): ckpt -> HF gives the
    Mistral3ForConditionalGeneration back bit for bit, and ckpt -> GGUF equals HF -> GGUF."""
    import torch
    from transformers import Mistral3ForConditionalGeneration

    from ckptkit.conversion import convert_ckpt_to_hf, convert_to_ckpt
    ck = tmp_path / "ckpt"
    convert_to_ckpt(str(tiny_mistral3), ck)
    manifest = json.loads((ck / "manifest.json").read_text())
    names = {t["name"] for t in manifest["tensors"]}
    assert "blk.1.attn_q.weight" in names and any(n.startswith("extra.vision_tower.") for n in names)
    a, b = tmp_path / "hf.gguf", tmp_path / "ckpt.gguf"
    convert_to_gguf(str(tiny_mistral3), a, outtype="f32")
    convert_to_gguf(str(ck), b, outtype="f32")
    assert a.read_bytes() == b.read_bytes()
    back = tmp_path / "hf"
    convert_ckpt_to_hf(str(ck), back)
    m, info = Mistral3ForConditionalGeneration.from_pretrained(back, dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    orig = Mistral3ForConditionalGeneration.from_pretrained(tiny_mistral3, dtype=torch.float32)
    so, sb = orig.state_dict(), m.state_dict()
    assert so.keys() == sb.keys() and all(torch.equal(so[k], sb[k]) for k in so)


def test_diff_with_its_gguf_counts_the_dropped_tower_apart(tiny_mistral3, tmp_path):
    """The vision tower a text GGUF leaves out is listed as dropped, not as a difference: the diff
    of the model and its f32 GGUF exits 0; a tensor really missing still fails it."""
    from click.testing import CliRunner

    from ckptkit.cli import main
    out = tmp_path / "m.gguf"
    convert_to_gguf(str(tiny_mistral3), out, outtype="f32")
    r = CliRunner().invoke(main, ["diff", str(tiny_mistral3), str(out), "--json"])
    doc = json.loads(r.output)
    assert r.exit_code == 0, r.output[-2000:]
    dropped = [t for t in doc["tensors"] if t["status"] == "dropped"]
    assert dropped and all(t["name"].startswith(("vision_tower.", "multi_modal_projector.")) for t in dropped)
    assert doc["counts"]["dropped"] == len(dropped) and doc["counts"]["only_a"] == 0
    assert doc["counts"]["exact"] > 0 and doc["equal"] is True
    shown = CliRunner().invoke(main, ["diff", str(tiny_mistral3), str(out)]).output
    assert "by design" in shown
