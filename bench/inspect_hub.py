"""Inspect benchmark: `ckptkit inspect --json` against `huggingface_hub.get_safetensors_metadata`
on header-only full-size repos served by the local Hub server with a per-request latency.

    python bench/inspect_hub.py                      # DeepSeek-V3 671B + Llama-3-8B, 50 ms, 3 runs
    python bench/inspect_hub.py --repos llama3_8b --latency 0.1 --runs 5

Each tool runs in a fresh process (its own imports, HF cache and peak RSS), alternating order.
Requests and bytes are counted by the server (bytes = response bodies). Figures are the median
run by wall time. Then the in-process compute time of inference on the loaded index.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, check, git_rev, last_json, machine, mb, median, run_measured, size, table, verdict

CHILD = str(Path(__file__).with_name("_inspect_child.py"))
TOOLS = {"hf": "huggingface_hub.get_safetensors_metadata", "ckptkit": "ckptkit inspect --json"}


def must_read(files: dict) -> tuple[int, int, int, int]:
    """(shards, shard header bytes, index bytes, config bytes) a header reader cannot avoid."""
    from hubserver import VirtualFile
    shards = [v for k, v in files.items() if isinstance(v, VirtualFile)]
    heads = sum(len(v.prefix) for v in shards)  # 8-byte length + JSON, exactly
    index = len(files.get("model.safetensors.index.json", b""))
    config = len(files.get("config.json", b""))
    return len(shards), heads, index, config


def bench_repo(spec: str, latency: float, runs: int, tmp: Path) -> dict:
    from hubserver import HubServer
    from modelgen import header_only_tensors, make_header_only

    files = make_header_only(spec)
    n_tensors = len(header_only_tensors(spec))
    shards, heads, index, config = must_read(files)
    repo = f"bench/{spec.replace('_', '-')}"
    results: dict[str, list[dict]] = {t: [] for t in TOOLS}
    with HubServer(latency=latency) as server:
        server.add_repo(repo, files)
        for i in range(runs):
            order = list(TOOLS) if i % 2 == 0 else list(TOOLS)[::-1]
            for tool in order:
                cache = tempfile.mkdtemp(prefix="hfcache-", dir=tmp)  # cold cache every run
                env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1",
                       "HF_HUB_CACHE": cache, "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                       "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "", "NO_COLOR": "1"}
                server.reset_stats()
                report = Path(cache) / "report.json"
                r = check(run_measured([sys.executable, CHILD, tool, repo, str(report)], env=env, cwd=ROOT),
                          f"{tool} on {spec}")
                out = last_json(r.stdout)
                if tool == "ckptkit":  # counted here, after the measured process
                    rep = json.loads(report.read_text())
                    out.update(tensors=len(rep["tensors"]), family=(rep.get("family") or {}).get("family"))
                if out["tensors"] != n_tensors:
                    raise SystemExit(f"{tool} found {out['tensors']} tensors in {spec}, expected {n_tensors}")
                results[tool].append({"wall": r.wall - out.get("check_s", 0.0), "call": out["call_s"], "rss": r.maxrss,
                                      "requests": len(server.requests), "bytes": server.bytes_sent,
                                      "family": out.get("family")})
    med = {}
    for tool, rs in results.items():
        m = median([x["wall"] for x in rs])
        pick = min(rs, key=lambda x: abs(x["wall"] - m))
        med[tool] = {**pick, "wall": m, "call": median([x["call"] for x in rs]),
                     "rss": max(x["rss"] for x in rs)}
    return {"spec": spec, "tensors": n_tensors, "shards": shards, "heads": heads, "index": index,
            "config": config, "tools": med}


def compute_time(spec: str, tmp: Path, runs: int = 3) -> dict:
    """In-process: inference (scan, facts, catalogue match) on the loaded index of ``spec``."""
    from ckptkit.api import load_index
    from ckptkit.infer import infer
    from ckptkit.sources.local import LocalSource
    from modelgen import make_header_only, materialize

    d = materialize(make_header_only(spec), tmp / f"local-{spec}")  # sparse: headers only
    t0 = time.perf_counter()
    with LocalSource(d) as src:
        index = load_index(src)
    load = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        res = infer(index)
        times.append(time.perf_counter() - t0)
    validate = None
    try:  # `ckptkit validate`'s checks on the same index and inference, when this build has them
        from ckptkit.validate import validate_index
        vt = []
        for _ in range(runs):
            t0 = time.perf_counter()
            validate_index(index, inference=res)
            vt.append(time.perf_counter() - t0)
        validate = min(vt)
    except ImportError:
        pass
    return {"spec": spec, "names": len(index.tensors), "load_local": load, "infer": min(times),
            "validate": validate, "family": (res.family or {}).get("family")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", default="deepseek_v3_671b,llama3_8b",
                    help="header-only specs from tests/modelgen.py (comma-separated)")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every request")
    ap.add_argument("--runs", type=int, default=3, help="runs per tool (median reported)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    print(machine())
    print(f"ckptkit {git_rev()}; latency {args.latency * 1000:.0f} ms per request; median of {args.runs} runs\n")
    out = {"latency": args.latency, "repos": [], "compute": []}
    with tempfile.TemporaryDirectory(prefix="ckptkit-bench-") as tmpd:
        tmp = Path(tmpd)
        for spec in args.repos.split(","):
            res = bench_repo(spec, args.latency, args.runs, tmp)
            out["repos"].append(res)
            need = res["heads"] + res["index"] + res["config"]
            hf, ck = res["tools"]["hf"], res["tools"]["ckptkit"]
            rows = []
            for tool, r in (("hf", hf), ("ckptkit", ck)):
                rows.append([TOOLS[tool], f"{r['wall']:.2f} s", f"{r['call']:.2f} s", r["requests"],
                             size(r["bytes"]), mb(r["rss"]),
                             f"{r['wall'] / hf['wall']:.2f}" if tool != "hf" else "1.00"])
            print(table(["tool", "wall (process)", "in call", "requests", "bytes", "peak RSS", "wall vs hf"],
                        rows, f"{spec}: {res['tensors']:,} tensors in {res['shards']} shards; must read "
                              f"{size(res['heads'])} headers + {size(res['index'])} index + "
                              f"{size(res['config'])} config"))
            targets = [
                ["requests <= shards + 3", f"{ck['requests']} <= {res['shards'] + 3}",
                 verdict(ck["requests"] <= res["shards"] + 3)],
                ["bytes <= 1.1 x must-read", f"{size(ck['bytes'])} <= {size(1.1 * need)}",
                 verdict(ck["bytes"] <= 1.1 * need)],
                ["wall <= 0.3 x baseline (process)", f"{ck['wall']:.2f} <= {0.3 * hf['wall']:.2f} s",
                 verdict(ck["wall"] <= 0.3 * hf["wall"])],
                ["wall <= 0.3 x baseline (in call)", f"{ck['call']:.2f} <= {0.3 * hf['call']:.2f} s",
                 verdict(ck["call"] <= 0.3 * hf["call"])],
            ]
            print(table(["target", "measured", ""], targets))
        for spec in args.repos.split(","):
            out["compute"].append(compute_time(spec, tmp))
    rows = [[c["spec"], f"{c['names']:,}", f"{c['load_local']:.2f} s", f"{c['infer']:.3f} s",
             "-" if c["validate"] is None else f"{c['validate']:.3f} s", c["family"],
             verdict(c["infer"] + (c["validate"] or 0) < 1.0)] for c in out["compute"]]
    print(table(["repo", "names", "load index (local)", "infer", "validate", "family", "< 1 s"], rows,
                "inference and validation compute on the loaded index (in-process, best of 3)"))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
