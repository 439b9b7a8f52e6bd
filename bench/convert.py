"""Convert benchmark: `ckptkit convert` HF -> GGUF (f16, q8_0) against `cp` of the same bytes and
llama.cpp's `convert_hf_to_gguf.py` on the same generated model, same output type, same run.

    python bench/convert.py                    # 1 GB Llama; RSS at 0.5/1/2 GB; 64-expert MoE
    python bench/convert.py --size 2 --full    # the issue's 2 GB model; reference at every size
    python bench/convert.py --runs 5 --outtypes f16 --rss-sizes "" --experts 0   # issue 14's ratio

The main comparison runs `cp` and ckptkit --runs times each, alternating (this VM's disk and CPU
vary by a third from one run to the next), and reports the best wall time of each with the spread;
"vs cp" is the ratio of the best throughputs (of the medians in parentheses). The reference
converter runs once per output type.

Models (real Llama / Mixtral tensor names, random BF16, 300 MB shards; Mixtral layout for the MoE,
a generated Llama-2-style tokenizer so both tools convert a vocabulary) are written once under --workdir and reused.
Every tool runs in its own process; peak RSS and CPU come from GNU time. `cp` is followed by
`sync` of the copies, because ckptkit fsyncs its output (the reference does not).

The reference converter comes from the llama-cpp-python 0.3.36 source distribution: found at
$CKPTKIT_BENCH_LLAMA_CPP or /tmp/llsrc/..., else fetched with
`pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36` into --workdir and unpacked.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from _common import check, git_rev, machine, mb, median, run_measured, table, verdict
from genmodel import make_llama, make_moe, model_bytes

LLAMA_CPP_VERSION = "0.3.36"
KNOWN_SRC = Path(f"/tmp/llsrc/llama_cpp_python-{LLAMA_CPP_VERSION}/vendor/llama.cpp")


def reference_converter(workdir: Path) -> Path:
    """The llama.cpp directory holding convert_hf_to_gguf.py (with its gguf-py and conversion/)."""
    for cand in (os.environ.get("CKPTKIT_BENCH_LLAMA_CPP"), KNOWN_SRC,
                 workdir / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"):
        if cand and (Path(cand) / "convert_hf_to_gguf.py").is_file():
            return Path(cand)
    dl = workdir / "sdist"
    dl.mkdir(parents=True, exist_ok=True)
    print(f"fetching the reference converter: pip download llama-cpp-python=={LLAMA_CPP_VERSION} (sdist)")
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    f"llama-cpp-python=={LLAMA_CPP_VERSION}", "-d", str(dl)], check=True)
    sdist = next(dl.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}.tar.gz"))
    keep = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/gguf-py/",
            "vendor/llama.cpp/conversion/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers()
                   if m.isfile() and any(m.name.split("/", 1)[-1].startswith(k) for k in keep)]
        tar.extractall(workdir, members=members, filter="data")
    return workdir / f"llama_cpp_python-{LLAMA_CPP_VERSION}" / "vendor" / "llama.cpp"


def with_tokenizer(d: Path) -> Path:
    if not (d / "tokenizer.json").exists():
        from modelgen import make_tokenizer
        make_tokenizer(d, kind="spm")  # Llama-2 style: the reference reads it without a pre-tokenizer hash
    return d


def drop_cache_hint(path: Path) -> None:
    """Read the model once so every tool starts with it in the page cache (same for all)."""
    for f in sorted(path.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(16 << 20):
                pass


def run_tool(tool: str, src: Path, out: Path, outtype: str, threads: int, ref: Path | None):
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    env = {}
    if tool == "cp":
        cmd = ["sh", "-c", 'cp -r "$0" "$1" && sync "$1"/*.safetensors', str(src), str(out)]
    elif tool == "ckptkit":
        cmd = [sys.executable, "-m", "ckptkit", "convert", str(src), str(out), "--outtype", outtype,
               "--threads", str(threads), "--no-progress"]
    else:
        cmd = [sys.executable, str(ref / "convert_hf_to_gguf.py"), str(src), "--outfile", str(out),
               "--outtype", outtype]
        env = {"PYTHONPATH": str(ref / "gguf-py"), "NO_LOCAL_GGUF": ""}
    r = check(run_measured(cmd, env=env), f"{tool} {outtype} on {src.name}")
    size = (sum(f.stat().st_size for f in out.glob("*.safetensors")) if out.is_dir()
            else out.stat().st_size)
    if out.is_dir():
        shutil.rmtree(out)
    else:
        out.unlink()
    return {"tool": tool, "outtype": outtype, "wall": r.wall, "cpu": r.cpu, "rss": r.maxrss, "out": size}


def row(r: dict, cp: dict | None, ckpt: dict | None) -> list:
    mbs = r["out"] / r["wall"] / 1e6
    vs_cp = f"{mbs / (cp['out'] / cp['wall'] / 1e6):.2f}" if cp and r["tool"] != "cp" else ""
    speed = f"{r['wall'] / ckpt['wall']:.2f}x" if ckpt and r["tool"] == "reference" else ""
    return [r["tool"], r["outtype"] if r["tool"] != "cp" else "-", f"{r['wall']:.1f} s", f"{r['cpu']:.1f} s",
            mb(r["out"]), f"{mbs:.0f}", vs_cp, mb(r["rss"]), speed]


HEAD = ["tool", "out type", "wall", "CPU", "output", "MB/s", "vs cp", "peak RSS", "ref / ckptkit"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=1.0, help="GB of the main comparison model (issue: 2; 0: skip)")
    ap.add_argument("--rss-sizes", default="0.5,1,2", help="GB sizes for the peak-RSS growth table")
    ap.add_argument("--outtypes", default="f16,q8_0")
    ap.add_argument("--threads", type=int, default=2, help="ckptkit --threads")
    ap.add_argument("--runs", type=int, default=3, help="runs of cp and of ckptkit in the main comparison")
    ap.add_argument("--experts", type=int, default=64, help="experts per layer of the MoE model (0: skip)")
    ap.add_argument("--full", action="store_true", help="also run the reference at every RSS size")
    ap.add_argument("--no-reference", action="store_true", help="skip convert_hf_to_gguf.py")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ckptkit-bench"))
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    ref = None if args.no_reference else reference_converter(work)
    print(machine())
    print(f"ckptkit {git_rev()}; ckptkit --threads {args.threads}; reference: "
          f"{'skipped' if ref is None else ref / 'convert_hf_to_gguf.py'}; work dir {work}\n")
    out = work / "out.gguf"
    results: dict = {"main": [], "rss": [], "moe": []}

    if args.size > 0:
        main_comparison(args, work, ref, out, results)
    rss_growth(args, work, ref, out, results)
    moe(args, work, ref, out, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def main_comparison(args, work: Path, ref: Path | None, out: Path, results: dict) -> None:
    src = with_tokenizer(make_llama(work / f"llama-{args.size:g}gb", args.size))
    total, largest = model_bytes(src)
    drop_cache_hint(src)
    outtypes = args.outtypes.split(",")
    got: dict[tuple[str, str], list[dict]] = {}
    for i in range(args.runs):  # alternating, so a slow spell of the machine hits both
        order = [("cp", "-"), *(("ckptkit", t) for t in outtypes)]
        for tool, t in (order if i % 2 == 0 else order[::-1]):
            dest = work / "cp-copy" if tool == "cp" else out
            got.setdefault((tool, t), []).append(run_tool(tool, src, dest, t, args.threads, ref))
    if ref is not None:
        for t in outtypes:
            got[("reference", t)] = [run_tool("reference", src, out, t, args.threads, ref)]
    results["main"] = [r for runs in got.values() for r in runs]
    cp = got[("cp", "-")]
    best = {k: min(v, key=lambda r: r["wall"]) for k, v in got.items()}

    def speed(runs: list[dict], pick) -> float:
        return pick([r["out"] / r["wall"] for r in runs])

    rows = []
    for (tool, t), runs in got.items():
        b = best[(tool, t)]
        vs_cp = "" if tool == "cp" else (f"{speed(runs, max) / speed(cp, max):.2f} "
                                         f"({speed(runs, median) / speed(cp, median):.2f})")
        vs_ref = f"{b['wall'] / best[('ckptkit', t)]['wall']:.2f}x" if tool == "reference" else ""
        walls = [r["wall"] for r in runs]
        rows.append([tool, t, f"{b['wall']:.2f} s", f"{min(walls):.2f}..{max(walls):.2f} s", f"{b['cpu']:.1f} s",
                     mb(b["out"]), f"{b['out'] / b['wall'] / 1e6:.0f}", vs_cp, mb(b["rss"]), vs_ref])
    print(table(["tool", "out type", "wall, best", "spread", "CPU", "output", "MB/s", "vs cp: best (median)",
                 "peak RSS", "ref / ckptkit"], rows,
                f"{src.name}: {mb(total)} of BF16 tensors, largest {mb(largest)}; {args.runs} runs of cp and ckptkit"))
    targets = []
    for t in outtypes:
        ck = got[("ckptkit", t)]
        if t == "f16":
            ratio = speed(ck, max) / speed(cp, max)
            for goal in (0.5, 0.8):
                targets.append([f"f16 throughput >= {goal} x cp (best of runs){' (issue 14)' if goal == 0.8 else ''}",
                                f"{ratio:.2f} x", verdict(ratio >= goal)])
        if ("reference", t) in best:
            rf, b = best[("reference", t)], best[("ckptkit", t)]
            targets.append([f"{t}: >= 1.5x faster than the reference", f"{rf['wall'] / b['wall']:.2f}x",
                            verdict(rf["wall"] >= 1.5 * b["wall"])])
    print(table(["target", "measured", ""], targets))


def rss_growth(args, work: Path, ref: Path | None, out: Path, results: dict) -> None:
    """Peak RSS against model size."""
    rows = []
    for gb in [float(x) for x in args.rss_sizes.split(",") if x.strip()]:
        d = with_tokenizer(make_llama(work / f"llama-{gb:g}gb", gb))
        tot, big = model_bytes(d)
        drop_cache_hint(d)
        ck = run_tool("ckptkit", d, out, "f16", args.threads, ref)
        rf = run_tool("reference", d, out, "f16", args.threads, ref) if ref and args.full else None
        limit = 2 * big + 300e6
        results["rss"].append({"gb": gb, "total": tot, "largest": big, "ckptkit": ck, "reference": rf})
        rows.append([f"{gb:g} GB", mb(tot), mb(big), mb(ck["rss"]), mb(limit), verdict(ck["rss"] <= limit),
                     f"{ck['wall']:.1f} s", mb(rf["rss"]) if rf else "-"])
    if not rows:
        return
    print(table(["model", "tensors", "largest", "ckptkit peak RSS", "limit 2x+300MB", "", "ckptkit wall",
                 "reference peak RSS"], rows, "peak RSS of HF -> GGUF f16 as the model grows (dense Llama)"))
    rss = [r["ckptkit"]["rss"] for r in results["rss"]]
    if len(rss) > 1:
        growth = results["rss"][-1]["total"] / results["rss"][0]["total"]
        print(f"\nckptkit peak RSS spread across sizes: {mb(min(rss))} .. {mb(max(rss))} "
              f"({max(rss) / min(rss):.2f}x for {growth:.1f}x the bytes)")


def moe(args, work: Path, ref: Path | None, out: Path, results: dict) -> None:
    """Many experts per layer: the reference gathers a layer's experts before stacking them."""
    if args.experts:
        d = with_tokenizer(make_moe(work / f"mixtral-{args.experts}e", experts=args.experts))
        tot, big = model_bytes(d)
        drop_cache_hint(d)
        runs = [run_tool("ckptkit", d, out, "f16", args.threads, ref)]
        if ref is not None:
            runs.append(run_tool("reference", d, out, "f16", args.threads, ref))
        results["moe"] = runs
        rows = [row(r, None, runs[0]) for r in runs]
        print(table(HEAD, rows, f"{d.name}: Mixtral layout, {args.experts} experts per layer in 4 layers, "
                                f"{mb(tot)}, largest source tensor {mb(big)}"))
        cfg = json.loads((d / "config.json").read_text())  # an output tensor stacks all experts (f16)
        stacked = 2 * cfg["intermediate_size"] * cfg["hidden_size"] * args.experts
        limit = 2 * max(big, stacked) + 300e6
        print(table(["target", "measured", ""], [[
            f"MoE peak RSS <= 2 x largest tensor ({mb(max(big, stacked))}, stacked) + 300 MB",
            f"{mb(runs[0]['rss'])} <= {mb(limit)}",
            verdict(runs[0]["rss"] <= limit)]]))


if __name__ == "__main__":
    main()
