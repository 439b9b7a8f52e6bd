"""All nine conversion directions on one generated Llama: HF safetensors, GGUF and the uniform
layout (ckpt) as source and target, each `ckptkit convert` in a fresh process; and transformers'
GGUF loader beside ckptkit GGUF -> HF on the same GGUF.

    python bench/directions.py                 # ~1 GB BF16 Llama, --outtype auto (BF16 kept)
    python bench/directions.py --size 0.5      # a smaller model
    python bench/directions.py --no-transformers

The sources: the generated HF folder (bench/genmodel.py, reused from --workdir); the GGUF and ckpt
folder are the outputs of the measured HF -> GGUF and HF -> ckpt runs. Every run starts with its
source read once (page cache warm for all). Peak RSS and CPU come from GNU time, wall from this
process. The bound of issue 10 is 2 x the largest tensor (of the BF16 model) + 300 MB.

Every output is checked, so a fast wrong result cannot pass: `ckptkit diff` of the original HF
folder against it must exit 0 (exact), and its tensor bytes are compared, by this script's own
safetensors parser or gguf-py's reader, with the checkpoint it must equal byte for byte (HF
outputs: the original; GGUF outputs: the HF -> GGUF output; ckpt outputs: the HF -> ckpt output).

transformers: `AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=torch.bfloat16)`,
then `save_pretrained` (its refusal is reported), in a child started by `--transformers-child`;
transformers needs `accelerate` for a GGUF (the `bench` extra: `pip install -e '.[test,bench]'`),
else that row says skipped.
"""
from __future__ import annotations

import argparse
import json
import mmap
import os
import shutil
import struct
import sys
import time
from pathlib import Path

from _common import check, git_rev, machine, mb, run_measured, table, verdict
from genmodel import make_llama, model_bytes

FORMATS = ("hf", "gguf", "ckpt")
LABEL = {"hf": "HF", "gguf": "GGUF", "ckpt": "ckpt"}


def out_path(work: Path, src: str, dst: str) -> Path:
    return work / (f"{src}-to-{dst}.gguf" if dst == "gguf" else f"{src}-to-{dst}")


def remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()


def disk_bytes(p: Path) -> int:
    return p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def warm(p: Path) -> None:
    """Read a source once so every run starts with it in the page cache."""
    for f in ([p] if p.is_file() else sorted(p.rglob("*"))):
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(16 << 20):
                    pass


def load() -> float:
    return os.getloadavg()[0]


# ---- independent checks: tensor bytes ----------------------------------------------------------

def st_tensors(folder: Path) -> dict[str, tuple[str, tuple, Path, int, int]]:
    """name -> (dtype, shape, file, start, end) from every safetensors header in a folder
    (parsed here, not by ckptkit)."""
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            head = json.loads(fh.read(n))
        for name, e in head.items():
            if name != "__metadata__":
                a, b = e["data_offsets"]
                out[name] = (e["dtype"], tuple(e["shape"]), f, 8 + n + a, 8 + n + b)
    return out


def same_safetensors(a: Path, b: Path) -> str:
    """'' when both folders hold the same tensor names, dtypes, shapes and bytes, else why not."""
    ta, tb = st_tensors(a), st_tensors(b)
    if ta.keys() != tb.keys():
        return f"names differ: {sorted(ta.keys() ^ tb.keys())[:3]}"
    maps: dict[Path, mmap.mmap] = {}

    def view(f: Path) -> mmap.mmap:
        if f not in maps:
            with open(f, "rb") as fh:
                maps[f] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        return maps[f]
    try:
        for name, (dt, shape, f, s, e) in ta.items():
            dt2, shape2, f2, s2, e2 = tb[name]
            if (dt, shape) != (dt2, shape2):
                return f"{name}: {dt}{list(shape)} vs {dt2}{list(shape2)}"
            ma, mb_ = view(f), view(f2)
            for off in range(0, e - s, 64 << 20):  # bounded slices: this process's memory stays small
                n = min(64 << 20, e - s - off)
                if ma[s + off:s + off + n] != mb_[s2 + off:s2 + off + n]:
                    return f"{name}: bytes differ"
    finally:
        for m in maps.values():
            m.close()
    return ""


def same_gguf(a: Path, b: Path) -> str:
    """'' when both GGUF files hold the same tensors (name, type, shape, bytes), else why not."""
    import gguf
    import numpy as np
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    ta, tb = {t.name: t for t in ra.tensors}, {t.name: t for t in rb.tensors}
    if ta.keys() != tb.keys():
        return f"names differ: {sorted(ta.keys() ^ tb.keys())[:3]}"
    for name, t in ta.items():
        u = tb[name]
        if (int(t.tensor_type), list(t.shape)) != (int(u.tensor_type), list(u.shape)):
            return f"{name}: type/shape differ"
        if not np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(u.data).view(np.uint8)):
            return f"{name}: bytes differ"
    return ""


def verify(hf: Path, out: Path, dst: str, reference: Path | None) -> dict:
    """`ckptkit diff hf out` (exit 0 wanted) and a byte comparison with ``reference``."""
    d = run_measured([sys.executable, "-m", "ckptkit", "diff", str(hf), str(out), "--no-progress"])
    why = "" if reference is None else same_gguf(reference, out) if dst == "gguf" else same_safetensors(reference, out)
    said = "- (the reference of the others)" if reference is None else \
        why or f"equal to {reference.name}"
    return {"diff_rc": d.rc, "diff_wall": d.wall, "diff_rss": d.maxrss, "diff_tail": d.stdout[-300:],
            "bytes": said, "ok": d.rc == 0 and not why}


# ---- the runs ---------------------------------------------------------------------------------

def convert(src: Path, out: Path, dst: str, outtype: str, threads: int) -> dict:
    remove(out)
    warm(src)
    ld = load()
    cmd = [sys.executable, "-m", "ckptkit", "convert", str(src), str(out), "--to", dst,
           "--outtype", outtype, "--threads", str(threads), "--no-progress"]
    r = check(run_measured(cmd), f"convert {src.name} -> {out.name}")
    return {"wall": r.wall, "cpu": r.cpu, "rss": r.maxrss, "out": disk_bytes(out), "load": ld}


def directions(args, work: Path, hf: Path, limit: float) -> list[dict]:
    """The nine runs, sources first (HF -> GGUF and HF -> ckpt give the other two sources)."""
    src = {"hf": hf, "gguf": out_path(work, "hf", "gguf"), "ckpt": out_path(work, "hf", "ckpt")}
    # what each output must equal byte for byte
    same_as = {"hf": hf, "gguf": src["gguf"], "ckpt": src["ckpt"]}
    results = []
    for s in FORMATS:
        for d in FORMATS:
            out = src[d] if s == "hf" and d != "hf" else out_path(work, s, d)
            r = convert(src[s], out, d, args.outtype, args.threads)
            r |= {"src": s, "dst": d, "limit": limit}
            if args.verify:  # HF -> GGUF and HF -> ckpt are the references: diff only
                r |= verify(hf, out, d, None if out == same_as[d] else same_as[d])
            results.append(r)
            print(f"  {LABEL[s]} -> {LABEL[d]}: {r['wall']:.1f} s, {mb(r['rss'])}"
                  + (f", diff rc {r['diff_rc']}, bytes {r['bytes']}" if args.verify else ""), flush=True)
            if out not in src.values() and not args.keep:
                remove(out)
    return results


def transformers_child(gguf_path: str, out: str) -> None:
    """One measured transformers load (and save) of a GGUF; prints a JSON line."""
    import resource
    t0 = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM
    t1 = time.perf_counter()
    p = Path(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.bfloat16)
    t2 = time.perf_counter()
    rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    err = ""
    try:
        model.save_pretrained(out)
    except Exception as e:  # noqa: BLE001 - its refusal is the result
        err = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".split(" - ")[0][:160]
    t3 = time.perf_counter()
    print(json.dumps({"import": t1 - t0, "load": t2 - t1, "save": t3 - t2, "rss_load": rss_load,
                      "saved": not err, "error": err}))


def transformers_side(args, work: Path, hf: Path, gguf_path: Path, ckptkit_row: dict) -> list[list]:
    import importlib.util
    if importlib.util.find_spec("accelerate") is None:  # transformers refuses a GGUF without it
        why = "its GGUF loader needs accelerate: pip install -e '.[test,bench]'"
        return [["transformers", "skipped", "", "", "", "", why]]
    out = work / "transformers-save"
    remove(out)
    warm(gguf_path)
    ld = load()
    r = run_measured([sys.executable, __file__, "--transformers-child", str(gguf_path), str(out)])
    if r.rc != 0:
        sys.stderr.write(r.stderr[-3000:])
        why = (r.stderr.strip().splitlines() or ["?"])[-1][:200]
        return [["transformers", f"failed (exit {r.rc})", "", "", "", "", why]]
    j = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    if j["saved"]:
        why = same_safetensors(hf, out)
        d = run_measured([sys.executable, "-m", "ckptkit", "diff", str(hf), str(out), "--no-progress"])
        saved = f"saved {mb(disk_bytes(out))}; diff rc {d.rc}; bytes vs HF: {why or 'equal'}"
    else:
        saved = f"save_pretrained refused: {j['error']}"
    remove(out)
    ck = ckptkit_row
    rows = [["ckptkit convert --to hf", f"{ck['wall']:.1f} s", f"{ck['cpu']:.1f} s", mb(ck["rss"]),
             "1.00x / 1.00x", f"{ck['load']:.1f}", f"wrote {mb(ck['out'])} (tokenizer included)"],
            ["transformers from_pretrained(gguf_file=) + save_pretrained", f"{r.wall:.1f} s", f"{r.cpu:.1f} s",
             mb(r.maxrss), f"{r.wall / ck['wall']:.2f}x / {r.maxrss / ck['rss']:.2f}x", f"{ld:.1f}",
             f"load {j['load']:.1f} s (+{j['import']:.1f} s imports), peak RSS after load "
             f"{mb(j['rss_load'])}; {saved}"]]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=1.0, help="GB of the generated BF16 Llama")
    ap.add_argument("--outtype", default="auto", help="ckptkit --outtype for every direction")
    ap.add_argument("--threads", type=int, default=2, help="ckptkit --threads")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ckptkit-bench"))
    ap.add_argument("--no-verify", dest="verify", action="store_false", help="skip diff and byte checks")
    ap.add_argument("--no-transformers", dest="transformers", action="store_false")
    ap.add_argument("--keep", action="store_true", help="keep every output in --workdir/directions")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--transformers-child", nargs=2, metavar=("GGUF", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.transformers_child:
        return transformers_child(*args.transformers_child)
    args.workdir.mkdir(parents=True, exist_ok=True)
    from convert import with_tokenizer
    hf = with_tokenizer(make_llama(args.workdir / f"llama-{args.size:g}gb", args.size))
    total, largest = model_bytes(hf)
    limit = 2 * largest + 300e6
    work = args.workdir / "directions"
    work.mkdir(exist_ok=True)
    load0 = os.getloadavg()
    print(machine())
    print(f"ckptkit {git_rev()}; --outtype {args.outtype} --threads {args.threads}; work dir {work}; "
          f"load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}\n")
    print(f"{hf.name}: {mb(total)} of BF16 tensors, largest {mb(largest)}; bound 2 x largest + 300 MB = {mb(limit)}")
    t0 = time.perf_counter()
    res = directions(args, work, hf, limit)
    rows = []
    for r in res:
        check_cell = "-" if not args.verify else (
            ("ok" if r["ok"] else "WRONG") + f": diff rc {r['diff_rc']}; bytes {r['bytes']}")
        rows.append([f"{LABEL[r['src']]} -> {LABEL[r['dst']]}", f"{r['wall']:.1f} s", f"{r['cpu']:.1f} s",
                     mb(r["out"]), mb(r["rss"]), mb(limit), verdict(r["rss"] <= limit), f"{r['load']:.1f}",
                     check_cell])
    print(table(["direction", "wall", "CPU", "output", "peak RSS", "bound", "", "load 1 min", "output check"],
                rows, f"\nckptkit convert, each direction in a fresh process (--outtype {args.outtype})"))
    if args.verify:
        print(table(["direction", "diff wall", "diff peak RSS", ""],
                    [[f"{LABEL[r['src']]} -> {LABEL[r['dst']]}", f"{r['diff_wall']:.1f} s", mb(r["diff_rss"]),
                      verdict(r["diff_rss"] <= limit)] for r in res],
                    "\n`ckptkit diff HF-original OUTPUT` (the check above; its own memory against the bound)"))
    tf_rows = []
    if args.transformers:
        ck = next(r for r in res if (r["src"], r["dst"]) == ("gguf", "hf"))
        tf_rows = transformers_side(args, work, hf, out_path(work, "hf", "gguf"), ck)
        print(table(["GGUF -> HF", "wall", "CPU", "peak RSS", "vs ckptkit: wall / RSS", "load 1 min", "notes"],
                    tf_rows, f"\nGGUF -> HF on the same GGUF ({out_path(work, 'hf', 'gguf').name}, "
                             f"--outtype {args.outtype})"))
    load1 = os.getloadavg()
    missed = [r for r in res if r["rss"] > limit]
    wrong = [r for r in res if args.verify and not r["ok"]]
    print(f"\n{9 - len(missed)}/9 directions within the bound; {len(wrong)} wrong outputs; "
          f"{time.perf_counter() - t0:.0f} s in all; load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    if not args.keep:
        for p in (out_path(work, "hf", "gguf"), out_path(work, "hf", "ckpt")):
            remove(p)
    if args.json:
        Path(args.json).write_text(json.dumps({"total": total, "largest": largest, "limit": limit,
                                               "directions": res, "transformers": tf_rows,
                                               "load": [load0, load1]}, indent=1, default=str))
    if wrong:
        raise SystemExit("some outputs are wrong: " + ", ".join(f"{r['src']}->{r['dst']}" for r in wrong))


if __name__ == "__main__":
    main()
