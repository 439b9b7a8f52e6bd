"""Architecture diagrams: parameters by part, the SVG's blocks for each kind of model, the CLI,
and a real SVG renderer drawing the result."""
import functools
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from math import prod
from pathlib import Path

import numpy as np
import pytest

from ckptkit import api
from ckptkit.index import TensorIndex, TensorInfo
from ckptkit.infer import infer
from ckptkit.render.diagram import diagram_svg, panel, panel_from_index, panel_from_model
from ckptkit.render.diagram_layout import COL_W, Panel
from ckptkit.render.diagram_params import param_breakdown

SVG = "{http://www.w3.org/2000/svg}"
EXAMPLE = Path(__file__).parent.parent / "examples" / "tiny-llama"


def _index(shapes: dict[str, tuple[int, ...]]) -> TensorIndex:
    tensors = {n: TensorInfo(n, "BF16", s, "m.safetensors", 0, 2 * prod(s)) for n, s in shapes.items()}
    return TensorIndex("safetensors", [], tensors)


def test_breakdown_counts_each_tensor_by_role():
    idx = _index({
        "model.embed_tokens.weight": (100, 8),
        "model.layers.0.input_layernorm.weight": (8,),
        "model.layers.0.self_attn.q_proj.weight": (8, 8),
        "model.layers.0.self_attn.q_proj.weight_scale_inv": (1, 1),     # scale: not a parameter
        "model.layers.0.self_attn.rotary_emb.inv_freq": (4,),            # buffer: not a parameter
        "model.layers.0.mlp.gate_proj.weight": (16, 8),
        "model.layers.1.mlp.gate.weight": (2, 8),
        "model.layers.1.mlp.experts.0.up_proj.weight": (4, 8),
        "model.layers.1.mlp.experts.1.up_proj.weight": (4, 8),
        "model.layers.1.mlp.shared_experts.up_proj.weight": (4, 8),
        "model.layers.2.eh_proj.weight": (8, 16),                        # DeepSeek MTP layer:
        "model.layers.2.self_attn.q_proj.weight": (8, 8),                # all of it is MTP
        "model.norm.weight": (8,),
        "lm_head.weight": (100, 8),
        "vision_tower.patch.weight": (3, 3),
        "something.unknown": (5,),
    })
    parts = param_breakdown(idx)
    assert parts == {"embedding": 800, "attention": 64, "dense_ffn": 128, "routed_experts": 64,
                     "shared_experts": 32, "router": 16, "norms": 16, "head": 800, "mtp": 192,
                     "vision": 9, "other": 5}
    assert sum(parts.values()) == infer(idx, match=False).value("parameters")["total"]
    # a tied head stored anyway is the embedding's copy: counted once
    assert param_breakdown(idx, tied=True)["head"] == 0


def _model(kind, header_only_dir, tiny_model):
    if kind in ("llama3_8b", "deepseek_v3_671b", "gpt_oss_20b", "llama4_scout_like"):
        return header_only_dir(kind)
    return tiny_model(kind)


def _facts_and_svg(kind, header_only_dir, tiny_model):
    return _facts_and_svg_at(kind, str(_model(kind, header_only_dir, tiny_model)))


@functools.cache
def _facts_and_svg_at(kind: str, path: str) -> tuple[dict, str]:
    index = api.inspect(path)
    report = infer(index).to_json()
    facts = {k: f["value"] for k, f in report["facts"].items()}
    return facts, diagram_svg([panel_from_index(kind, report, index)])


def _blocks(svg: str) -> dict[str, list[str]]:
    """data-role -> the texts of each element with that role, joined by " | "."""
    out: dict[str, list[str]] = {}
    for g in ET.fromstring(svg).iter(SVG + "g"):
        texts = [t.text or "" for t in g.iter(SVG + "text")]
        out.setdefault(g.get("data-role"), []).append(" | ".join(texts))
    return out


def _segments(svg: str) -> list[int]:
    return [int(g.get("data-params")) for g in ET.fromstring(svg).iter(SVG + "g")
            if g.get("data-role", "").startswith("param-")]


@pytest.mark.parametrize("kind", ["llama3_8b", "deepseek_v3_671b", "gpt_oss_20b", "qwen3_next",
                                  "gemma3_text", "llama4_scout_like"])
def test_breakdown_segments_sum_to_total(kind, header_only_dir, tiny_model):
    facts, svg = _facts_and_svg(kind, header_only_dir, tiny_model)
    segs = _segments(svg)
    assert sum(segs) == facts["parameters"]["total"]
    vision = [int(g.get("data-params")) for g in ET.fromstring(svg).iter(SVG + "g")
              if g.get("data-role") == "param-vision"]
    assert vision == ([facts["parameters"]["vision"]] if facts["parameters"].get("vision") else [])
    widths = [float(g.find(SVG + "rect").get("width")) for g in ET.fromstring(svg).iter(SVG + "g")
              if g.get("data-role", "").startswith("param-")]
    assert sum(widths) == pytest.approx(COL_W, abs=0.1)


def test_stored_copy_of_a_tied_head_counts_once(tmp_path):
    """Config ties the head, the file stores it anyway (Qwen3-0.6B's layout): the bar counts
    the stored copy once, as the parameter total does."""
    import json
    import shutil
    d = shutil.copytree(EXAMPLE, tmp_path / "tied")
    cfg = json.loads((d / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    index = api.inspect(str(d))
    assert "lm_head.weight" in index.tensors
    report = infer(index).to_json()
    assert report["facts"]["tied_embeddings"]["value"] is True
    svg = diagram_svg([panel_from_index("tied", report, index)])
    assert sum(_segments(svg)) == report["facts"]["parameters"]["value"]["total"]
    assert "param-head" not in _blocks(svg)


def test_dense_gqa_blocks(header_only_dir, tiny_model):
    f, svg = _facts_and_svg("llama3_8b", header_only_dir, tiny_model)
    b = _blocks(svg)
    assert f["attention"] == "gqa"
    (attn,) = b["attention"]
    assert "Grouped-query attention" in attn
    assert f"{f['num_attention_heads']} q heads / {f['num_key_value_heads']} kv heads, " \
           f"head_dim {f['head_dim']}" in attn
    assert f"hidden {f['intermediate_size']:,}" in b["ffn"][0]
    assert b["layers-title"] == [f"{f['num_layers']} x decoder layer"]
    assert f"{f['hidden_size']:,} -> {f['vocab_size']:,}" in b["head"][0]
    assert f"{f['vocab_size']:,} x {f['hidden_size']:,}" in b["embedding"][0]
    for absent in ("moe", "mtp", "attention-linear", "attention-sliding", "norm-post", "expert"):
        assert absent not in b
    assert len(b["norm"]) == 2 and b["norm-final"] == ["Final RMSNorm"]   # pre-norm: 2 per layer
    # two residual sublayers, each add fed by a skip path
    assert len(b["add"]) == 2
    assert len([p for p in ET.fromstring(svg).iter(SVG + "path") if p.get("data-role") == "residual"]) == 2
    assert {k[len("param-"):] for k in b if k.startswith("param-")} == \
        {"embedding", "attention", "dense_ffn", "norms", "head"}


def test_mla_moe_blocks(header_only_dir, tiny_model):
    f, svg = _facts_and_svg("deepseek_v3_671b", header_only_dir, tiny_model)
    b = _blocks(svg)
    (attn,) = b["attention"]
    assert "Multi-head latent attention" in attn
    assert f"kv rank {f['kv_lora_rank']}, q rank {f['q_lora_rank']:,}" in attn
    assert f"head {f['qk_nope_head_dim']} + {f['qk_rope_head_dim']} rope, v {f['v_head_dim']}" in attn
    (moe,) = b["moe"]
    assert f"{f['num_experts']} experts x {f['expert_intermediate_size']:,}, " \
           f"top-{f['num_experts_per_tok']} active, {f['num_shared_experts']} shared" in moe
    assert f"first {f['dense_prefix_layers']} layers: dense FFN {f['intermediate_size']:,}" in moe
    assert len(b["expert-active"]) == f["num_experts_per_tok"] == 8
    assert len(b["expert-shared"]) == f["num_shared_experts"] == 1
    assert b["experts-more"] == [f"... {f['num_experts']}"]   # 256 squares do not fit
    assert "ffn" not in b
    assert "1 multi-token-prediction module" in b["mtp"][0]
    assert "param-mtp" in b and "param-routed_experts" in b and "param-shared_experts" in b


def test_hybrid_linear_attention_blocks(header_only_dir, tiny_model):
    f, svg = _facts_and_svg("qwen3_next", header_only_dir, tiny_model)
    b = _blocks(svg)
    n, lin = f["num_layers"], len(f["linear_attention_layers"])
    assert 0 < lin < n
    assert f"{lin} of {n} layers" in b["attention-linear"][0]
    assert f"{n - lin} of {n} layers" in b["attention"][0]
    assert "QK-norm" in b["attention"][0]
    assert "attention-sliding" not in b


def test_sliding_window_sandwich_blocks(header_only_dir, tiny_model):
    f, svg = _facts_and_svg("gemma3_text", header_only_dir, tiny_model)
    b = _blocks(svg)
    win = f["sliding_window"]
    slid = b["attention-sliding"][0]
    assert f"window {win['window']}" in slid and f"{len(win['layers'])} of {f['num_layers']}" in slid
    assert f"{f['num_layers'] - len(win['layers'])} of {f['num_layers']} layers" in b["attention"][0]
    assert f["norm_placement"] == "sandwich" and len(b["norm-post"]) == 2
    assert "tied to the token embedding" in b["head"][0]
    head = next(g for g in ET.fromstring(svg).iter(SVG + "g") if g.get("data-role") == "head")
    assert head.find(SVG + "rect").get("stroke-dasharray")


def test_sinks_and_sliding_window_gqa(header_only_dir, tiny_model):
    f, svg = _facts_and_svg("gpt_oss_20b", header_only_dir, tiny_model)
    b = _blocks(svg)
    assert "sinks" in b["attention"][0] and f"window {f['sliding_window']['window']}" in \
        b["attention-sliding"][0]
    assert len(b["expert-active"]) == f["num_experts_per_tok"]


def test_text_is_escaped_and_output_deterministic():
    facts = {"num_layers": 2, "hidden_size": 8, "vocab_size": 16, "attention": "mha",
             "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 4,
             "parameters": {"total": 10}}
    p = Panel('a<b & "c">', facts, {"embedding": 4, "attention": 6})
    svg = diagram_svg([p, p])
    assert svg == diagram_svg([p, p])
    root = ET.fromstring(svg)          # parses: the label's <, & and quotes are escaped
    titles = [g.find(SVG + "text").text for g in root.iter(SVG + "g") if g.get("data-role") == "title"]
    assert titles == ['a<b & "c">'] * 2
    assert float(root.get("width")) > 2 * COL_W


def test_a_model_without_layers_still_draws():
    """A vocabulary-only file has an embedding and nothing to repeat: no made-up blocks."""
    b = _blocks(diagram_svg([Panel("vocab-only", {"vocab_size": 32000, "hidden_size": 0})]))
    assert b["layers-title"] == ["no decoder layers in the tensors"]
    assert "attention" not in b and "ffn" not in b and "embedding" in b


def test_catalogue_panel_has_no_breakdown():
    from ckptkit.render.compare import find_model
    m = find_model("Llama 3 8B")
    assert m is not None
    b = _blocks(diagram_svg([panel_from_model(m)]))
    assert f"{m.num_attention_heads} q heads / {m.num_key_value_heads} kv heads" in b["attention"][0]
    assert "params-none" in b and not any(k.startswith("param-") for k in b)


@pytest.mark.parametrize("name, text", [("gpt-oss-20b", "3.60B active"),
                                        ("Qwen3 30B-A3B", "3.30B active with embedding")])
def test_catalogue_panel_labels_active_by_how_the_card_counts(name, text):
    """gpt-oss's card leaves the input embedding out of "active"; Qwen's counts it in."""
    from ckptkit.render.compare import find_model
    m = find_model(name)
    assert m is not None
    subtitle = _blocks(diagram_svg([panel_from_model(m)]))["subtitle"][0]
    assert subtitle.endswith(text), subtitle


def test_report_panel_reads_fact_values():
    p = panel("x", {"family": {"model": "Some model"}, "facts": {"num_layers": {"value": 3}}})
    assert p.facts == {"num_layers": 3} and p.family == "Some model"


def _run(*args):
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True)


def test_cli_inspect_and_compare_diagrams(tmp_path, header_only_dir, tiny_model):
    llama, qwen = header_only_dir("llama3_8b"), tiny_model("qwen3_next")
    out = tmp_path / "arch.svg"
    r = _run("inspect", str(llama), "--json", "--diagram", str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}" in r.stderr
    b = _blocks(out.read_text())
    assert b["title"] == [str(llama)] and "Grouped-query attention" in b["attention"][0]
    cmp = tmp_path / "cmp.svg"
    r = _run("compare", str(llama), str(qwen), "Llama 3 8B", "--diagram", str(cmp))
    assert r.returncode == 0, r.stderr
    b = _blocks(cmp.read_text())
    assert b["title"] == [str(llama), str(qwen), "Llama 3 8B"]
    assert len(b["layers-title"]) == 3 and len(b["attention-linear"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.svg", "cmp.svg"]   # no temp files


# ---- rendering with a real SVG renderer ---------------------------------------------------------

def _png_pixels(data: bytes) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what resvg writes) to an array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and not interlace
            bpp = 4 if color == 6 else 3
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride = zlib.decompress(idat), w * bpp
    rows, prev = [], bytearray(stride)
    for y in range(h):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return np.frombuffer(b"".join(rows), np.uint8).reshape(h, w, bpp)


def test_rendered_png_is_a_readable_picture(header_only_dir, tiny_model):
    import resvg_py as resvg  # a test dependency: a wheel with no system libraries
    _, svg = _facts_and_svg("deepseek_v3_671b", header_only_dir, tiny_model)
    png = bytes(resvg.svg_to_bytes(svg_string=svg, zoom=0.5))
    px = _png_pixels(png)
    root = ET.fromstring(svg)
    assert px.shape[1] == round(float(root.get("width")) / 2)
    assert px.shape[0] == round(float(root.get("height")) / 2)
    gray = px[..., :3].astype(float).mean(axis=2)
    assert gray.std() > 20                    # not blank: boxes, colours and text
    assert (gray < 100).mean() > 0.005         # some dark ink (text, outlines)
    # the text is drawn (a font was found): without it the picture differs
    bare = bytes(resvg.svg_to_bytes(svg_string=svg.replace("<text", "<text display=\"none\""),
                                    zoom=0.5))
    assert (np.abs(_png_pixels(bare).astype(int) - px.astype(int)).sum(axis=2) > 60).mean() > 0.01
