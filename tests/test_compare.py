"""`ckptkit compare`, `ckptkit catalogue` and the architecture summary of `inspect`: the numbers
in the tables are the checkpoint's and the catalogue's."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ckptkit.catalogue import models
from ckptkit.render.compare import catalogue_table, column_from_model, compare_table, markdown


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True)


def md_rows(text: str) -> dict[str, list[str]]:
    """Markdown table -> {first cell: other cells}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            out[cells[0]] = cells[1:]
    return out


def test_compare_tiny_checkpoint_with_catalogue_model(tiny_model):
    path = tiny_model("llama", tokenizer=False)
    cfg = json.loads((path / "config.json").read_text())
    r = cli("compare", str(path), "Llama 3 8B", "--markdown")
    assert r.returncode == 0, r.stderr
    rows = md_rows(r.stdout)
    assert rows[""] == [str(path), "Llama 3 8B"]
    assert rows["Layers"] == [str(cfg["num_hidden_layers"]), "32"]
    assert rows["Hidden size"] == [f"{cfg['hidden_size']:,}", "4,096"]
    assert rows["Q / KV heads"] == [f"{cfg['num_attention_heads']} / {cfg['num_key_value_heads']}", "32 / 8"]
    assert rows["Attention"][1] == "GQA"
    assert rows["Context"] == [f"{cfg['max_position_embeddings']:,}", "8,192"]
    # Llama 3 8B: 2 (k, v) x 8 kv heads x 128 x 2 bytes x 32 layers = 131072 bytes = 128 KiB
    assert rows["KV cache / token (16-bit)"][1] == "128.0 KiB"
    assert rows["Norm"][0] == "RMSNorm, pre"


def test_compare_full_size_moe_and_mla(header_only_dir):
    ds, oss = header_only_dir("deepseek_v3_671b"), header_only_dir("gpt_oss_20b")
    r = cli("compare", str(ds), str(oss), "DeepSeek-V3 / R1", "--markdown")
    assert r.returncode == 0, r.stderr
    rows = md_rows(r.stdout)
    assert rows["Family"] == ["DeepSeek-V3 / R1", "gpt-oss-20b", "DeepSeek-V3 / R1"]
    assert rows["Layers"] == ["61 (+1 MTP)", "24", "61 (+1 MTP)"]
    assert rows["Attention"][:2] == ["MLA", "GQA, sinks"]
    assert rows["Q / KV heads"] == ["128 / 128", "64 / 8", "128 / 128"]
    assert rows["MLA ranks (kv / q)"] == ["512 / 1536", "", "512 / 1536"]
    assert rows["Experts active / total"] == ["8+1 / 256", "4 / 32", "8+1 / 256"]
    assert rows["FFN / MoE"][0] == "MoE 256 x 2,048 + 1 shared; first 3 dense"
    assert rows["Params total"][0] == "684.49B" and rows["Params total"][2] == "671B"
    assert rows["Params active"][1] == "3.61B"
    # (512 + 64) x 2 bytes x 61 layers = 70272 bytes; gpt-oss: 2 x 8 x 64 x 2 x 24 = 49152
    assert rows["KV cache / token (16-bit)"] == ["68.6 KiB", "48.0 KiB", "68.6 KiB"]
    assert rows["Sliding window"][1] == "128 on 12 layers"


def test_compare_terminal_table_and_errors(tiny_model, tmp_path):
    r = cli("compare", str(tiny_model("qwen3_moe", tokenizer=False)), "Qwen3 30B-A3B")
    assert r.returncode == 0, r.stderr
    assert "Experts active / total" in r.stdout and "8 / 128" in r.stdout
    r = cli("compare", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.startswith("ckptkit: ")


def test_catalogue_lists_every_model_with_published_numbers():
    headers, rows = catalogue_table()
    assert len(rows) == len(models())
    by = {r[0]: dict(zip(headers, r, strict=True)) for r in rows}
    ds = by["DeepSeek-V3 / R1"]
    assert (ds["Layers"], ds["Hidden size"], ds["Experts active / total"]) == ("61 (+1 MTP)", "7,168", "8+1 / 256")
    assert by["Kimi K2"]["Params total"] == "1.04T"
    assert by["GPT-3 175B (no weights)"]["Params total"] == "175B"
    assert by["Llama 4 Maverick"]["Experts active / total"].endswith("/ 128")


def test_catalogue_cli_family_filter_and_markdown():
    r = cli("catalogue", "--family", "deepseek_v3", "--markdown")
    assert r.returncode == 0, r.stderr
    rows = md_rows(r.stdout)
    assert set(rows) == {"Model", "DeepSeek-V3 / R1"}
    row = dict(zip(rows["Model"], rows["DeepSeek-V3 / R1"], strict=True))
    # DeepSeek's card counts the input embedding in its 37B active
    assert row["Hidden size"] == "7,168" and row["Params active + embedding"] == "37B"
    assert row["Attention"] == "MLA" and "Params active" not in row
    r = cli("catalogue")
    assert r.returncode == 0 and "Qwen3-Next 80B-A3B" in r.stdout
    r = cli("catalogue", "--family", "nope")
    assert r.returncode == 2 and "unknown family" in r.stderr


def test_markdown_escapes_pipes():
    assert markdown(["a|b"], [["c"]]).splitlines()[0] == "| a\\|b |"


@pytest.mark.parametrize("name", ["Mixtral 8x7B", "Gemma 3 27B", "OLMo 2 7B"])
def test_model_columns_follow_the_rows(name):
    m = next(x for x in models() if x["name"] == name)
    col = column_from_model(m)
    assert col["layers"] == f"{m['num_layers']:,}" and col["hidden"] == f"{m['hidden_size']:,}"
    headers, rows = compare_table([col])
    assert headers == ["", name] and all(r[1] for r in rows)


def test_inspect_prints_the_architecture(header_only_dir):
    r = cli("inspect", str(header_only_dir("deepseek_v3_671b")), "--no-progress")
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert "MLA, 128 heads, head_dim 192 (nope 128 + rope 64, v 128); kv_lora_rank 512, " \
           "q_lora_rank 1536" in text
    assert "MoE, 256 experts x 2048, top-8 [config], 1 shared; first 3 layer(s) dense (18432)" in text
    assert "61 (+1 MTP)" in text and "70,272 bytes/token" in text and "FP8 (F8_E4M3)" in text


def test_inspect_marks_config_facts(tiny_model):
    r = cli("inspect", str(tiny_model("llama", tokenizer=False)), "--no-progress")
    assert r.returncode == 0, r.stderr
    attn = next(line for line in r.stdout.splitlines() if line.strip().startswith("attention"))
    # plain Llama: k/q shapes cannot split heads from head_dim, so the counts cite config.json
    assert "GQA, 4 q heads / 2 kv heads, head_dim 16" in attn and "[config]" in attn


def test_compare_gguf_context_from_metadata(tmp_path):
    """A GGUF has no config.json: its context length comes from {arch}.context_length."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from ckptkit.conversion import convert_to_gguf
    example = Path(__file__).parent.parent / "examples" / "tiny-llama"
    out = tmp_path / "t.gguf"
    convert_to_gguf(str(example), out, vocab=False)
    r = subprocess.run([sys.executable, "-m", "ckptkit", "compare", str(out), "--markdown"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ctx = json.loads((example / "config.json").read_text())["max_position_embeddings"]
    assert f"| Context | {ctx} |" in r.stdout
