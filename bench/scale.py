"""Scale benchmark: how inspect time and convert memory grow with the size of the tensor index.

    python bench/scale.py                 # inspect: 0.5B .. 671B-like indexes; convert RSS 0.25..1 GB
    python bench/scale.py --convert-sizes 0.5,1,2,4

Inspect: header-only Qwen2.5-0.5B-like, Llama-3-8B, Llama-4-Scout-like, DeepSeek-V3 671B
and Kimi-K2-like (1T, 139,644 tensors) replicas (sparse files: only the headers exist), read from local disk so the
figure is ckptkit's own cost per tensor, in-process, best of 3; then `infer` on the index.
Convert: `ckptkit convert --outtype f16` peak RSS (own process, GNU time) on dense generated Llama
models of growing size (see bench/convert.py for the comparison with other tools).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import check, git_rev, machine, mb, run_measured, size, table
from genmodel import make_llama, model_bytes

SPECS = ["qwen2_0_5b_like", "llama3_8b", "llama4_scout_like", "deepseek_v3_671b", "kimi_k2_like"]


def qwen05_files() -> dict:
    """A Qwen2.5-0.5B-like single-file checkpoint (24 layers, 290 tensors), header only."""
    from hubserver import VirtualFile
    from modelgen import TensorSpec, safetensors_prefix
    H, F, V, L, kv = 896, 4864, 151936, 24, 128
    ts = [TensorSpec("model.embed_tokens.weight", "BF16", (V, H))]
    for i in range(L):
        p = f"model.layers.{i}"
        ts += [TensorSpec(f"{p}.input_layernorm.weight", "BF16", (H,)),
               TensorSpec(f"{p}.self_attn.q_proj.weight", "BF16", (H, H)),
               TensorSpec(f"{p}.self_attn.q_proj.bias", "BF16", (H,)),
               TensorSpec(f"{p}.self_attn.k_proj.weight", "BF16", (kv, H)),
               TensorSpec(f"{p}.self_attn.k_proj.bias", "BF16", (kv,)),
               TensorSpec(f"{p}.self_attn.v_proj.weight", "BF16", (kv, H)),
               TensorSpec(f"{p}.self_attn.v_proj.bias", "BF16", (kv,)),
               TensorSpec(f"{p}.self_attn.o_proj.weight", "BF16", (H, H)),
               TensorSpec(f"{p}.post_attention_layernorm.weight", "BF16", (H,)),
               TensorSpec(f"{p}.mlp.gate_proj.weight", "BF16", (F, H)),
               TensorSpec(f"{p}.mlp.up_proj.weight", "BF16", (F, H)),
               TensorSpec(f"{p}.mlp.down_proj.weight", "BF16", (H, F))]
    ts.append(TensorSpec("model.norm.weight", "BF16", (H,)))
    prefix, data = safetensors_prefix(ts)
    cfg = (b'{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":896,'
           b'"num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,'
           b'"intermediate_size":4864,"vocab_size":151936,"tie_word_embeddings":true}')
    return {"config.json": cfg, "model.safetensors": VirtualFile(prefix, len(prefix) + data)}


def inspect_scale(tmp: Path, runs: int) -> list[dict]:
    from ckptkit.api import load_index
    from ckptkit.infer import infer
    from ckptkit.sources.local import LocalSource
    from modelgen import make_header_only, materialize

    out = []
    for spec in SPECS:
        files = qwen05_files() if spec == "qwen2_0_5b_like" else make_header_only(spec)
        d = materialize(files, tmp / spec)
        loads, infers = [], []
        for _ in range(runs):
            t0 = time.perf_counter()
            with LocalSource(d) as src:
                index = load_index(src)
            t1 = time.perf_counter()
            infer(index)
            loads.append(t1 - t0)
            infers.append(time.perf_counter() - t1)
        heads = sum(len(v.prefix) for v in files.values() if hasattr(v, "prefix"))
        out.append({"spec": spec, "tensors": len(index.tensors), "files": len(index.files),
                    "params": index.total_parameters, "header_bytes": heads,
                    "load": min(loads), "infer": min(infers)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--convert-sizes", default="0.25,0.5,1", help="GB of the dense models (0: skip)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ckptkit-bench"))
    args = ap.parse_args()
    print(machine())
    print(f"ckptkit {git_rev()}\n")
    with tempfile.TemporaryDirectory(prefix="ckptkit-scale-") as tmpd:
        res = inspect_scale(Path(tmpd), args.runs)
    base = res[0]
    rows = []
    for r in res:
        total = r["load"] + r["infer"]
        rows.append([r["spec"], f"{r['params'] / 1e9:,.1f} B", f"{r['tensors']:,}", r["files"], size(r["header_bytes"]),
                     f"{r['load']:.3f} s", f"{r['infer']:.3f} s",
                     f"{total / r['tensors'] * 1e6:.1f} us", f"{r['tensors'] / base['tensors']:.0f}x",
                     f"{total / (base['load'] + base['infer']):.1f}x"])
    print(table(["index", "params", "tensors", "files", "headers", "read+parse", "infer", "per tensor",
                 "tensors vs 0.5B", "time vs 0.5B"], rows,
                "inspect from local disk (headers only), in-process, best of runs"))
    per = [(r["load"] + r["infer"]) / r["tensors"] for r in res]
    print(f"\ntime per tensor ranges {min(per) * 1e6:.1f} .. {max(per) * 1e6:.1f} us over "
          f"{res[0]['tensors']:,} .. {res[-1]['tensors']:,} tensors: linear in the tensor count")

    sizes = [float(x) for x in args.convert_sizes.split(",") if float(x) > 0]
    if sizes:
        rows, work = [], args.workdir
        work.mkdir(parents=True, exist_ok=True)
        out = work / "scale-out.gguf"
        for gb in sizes:
            d = make_llama(work / f"llama-{gb:g}gb", gb)
            tot, big = model_bytes(d)
            r = check(run_measured([sys.executable, "-m", "ckptkit", "convert", str(d), str(out),
                                    "--outtype", "f16", "--no-progress", "--no-vocab"]), f"convert {d}")
            out.unlink()
            rows.append([f"{gb:g} GB", mb(tot), mb(big), f"{r.wall:.1f} s", mb(r.maxrss),
                         f"{r.maxrss / tot:.2f}"])
        print(table(["model", "tensors", "largest", "wall", "peak RSS", "RSS / model"], rows,
                    "ckptkit convert -> f16: peak RSS against model size"))


if __name__ == "__main__":
    main()
