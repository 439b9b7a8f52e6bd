"""Convert from the Hub: `ckptkit convert org/name` (streamed) against `snapshot_download` followed
by `ckptkit convert` of the downloaded folder, on a generated Llama served by the local Hub server
with a per-request latency.

    python bench/convert_hub.py                       # 0.4 GB, 4 shards, 50 ms, 3 runs
    python bench/convert_hub.py --size 1 --latency 0.1 --runs 5 --connections 8
    python bench/convert_hub.py --moe 64 --runs 1     # Mixtral-style, 64 per-expert tensors per layer

Each way runs in a fresh process (cold HF cache, peak RSS from GNU time), alternating order.
Bytes are response bodies counted by the server; peak disk is the output alone for the stream,
the snapshot plus the output for the download. The two outputs' tensors are compared.
"""
from __future__ import annotations

import argparse
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import genmodel
from _common import ROOT, check, git_rev, machine, mb, median, run_measured, table, verdict

DOWNLOAD_THEN_CONVERT = """
import sys, time
from huggingface_hub import snapshot_download
from ckptkit.conversion import convert_to_gguf
t = time.perf_counter()
folder = snapshot_download(sys.argv[1])
t1 = time.perf_counter()
convert_to_gguf(folder, sys.argv[2], outtype="f16", threads=2)
print(f"download {t1 - t:.2f} convert {time.perf_counter() - t1:.2f}")
from ckptkit.__main__ import finish
finish(0)  # as the ckptkit command ends (no interpreter teardown): the ways differ in reading only
"""


def tensor_bytes(folder: Path) -> tuple[int, int]:
    """(bytes of the safetensors files, bytes of their tensor data)."""
    files = data = 0
    for p in folder.glob("*.safetensors"):
        with open(p, "rb") as f:
            head = 8 + struct.unpack("<Q", f.read(8))[0]
        files += p.stat().st_size
        data += p.stat().st_size - head
    return files, data


def same_tensors(a: Path, b: Path) -> bool:
    import gguf
    import numpy as np
    ra, rb = gguf.GGUFReader(a), gguf.GGUFReader(b)
    return ([t.name for t in ra.tensors] == [t.name for t in rb.tensors]
            and all(np.array_equal(x.data, y.data) for x, y in zip(ra.tensors, rb.tensors, strict=True)))


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=float, default=0.4, help="model size in GB (default 0.4)")
    ap.add_argument("--shard-mb", type=int, default=100, help="shard size in MB (default 100: 4 shards)")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every request")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=None, help="default: ckptkit's own choice")
    ap.add_argument("--moe", type=int, default=0, metavar="EXPERTS",
                    help="a 4-layer Mixtral-style model with this many experts instead of the Llama")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/ckptkit-bench"))
    args = ap.parse_args()
    from hubserver import HubServer

    genmodel.SHARD_BYTES = args.shard_mb << 20
    if args.moe:
        model = genmodel.make_moe(args.workdir / f"moe-{args.moe}e-{args.shard_mb}mb", experts=args.moe)
    else:
        model = genmodel.make_llama(args.workdir / f"llama-{args.size}g-{args.shard_mb}mb", args.size)
    files, data = tensor_bytes(model)
    repo = "bench/moe-hub" if args.moe else "bench/llama-hub"
    rows: dict[str, list[dict]] = {"stream": [], "download": []}
    tmp = Path(tempfile.mkdtemp(prefix="convert-hub-", dir=args.workdir))
    with HubServer(latency=args.latency) as server:
        server.add_repo_from_dir(repo, model)
        for i in range(args.runs):
            for way in (["stream", "download"] if i % 2 == 0 else ["download", "stream"]):
                cache = tmp / f"cache-{way}-{i}"
                out = tmp / f"{way}.gguf"
                env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_TELEMETRY": "1",
                       "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": ""}
                if way == "stream":
                    cmd = [sys.executable, "-m", "ckptkit", "convert", repo, str(out), "--outtype", "f16",
                           "--threads", "2", "--no-progress"]
                    cmd += ["--connections", str(args.connections)] if args.connections else []
                else:
                    cmd = [sys.executable, "-c", DOWNLOAD_THEN_CONVERT, repo, str(out)]
                server.reset_stats()
                r = check(run_measured(cmd, env=env, cwd=ROOT), way)
                disk = out.stat().st_size + (dir_bytes(cache) if cache.exists() else 0)
                rows[way].append({"wall": r.wall, "cpu": r.cpu, "rss": r.maxrss, "bytes": server.bytes_sent,
                                  "requests": len(server.requests), "disk": disk, "note": r.stdout.strip()})
                shutil.rmtree(cache, ignore_errors=True)
        identical = same_tensors(tmp / "stream.gguf", tmp / "download.gguf")
    shutil.rmtree(tmp, ignore_errors=True)

    def med(way: str, key: str) -> float:
        return median([x[key] for x in rows[way]])

    print(f"ckptkit {git_rev()}; {machine()}")
    print(f"model: {model.name}, {mb(files)} in {len(list(model.glob('*.safetensors')))} shards "
          f"({mb(data)} tensor data); {args.latency * 1000:.0f} ms per request; median of {args.runs}")
    base = med("download", "wall")
    print(table(["way", "wall", "vs download", "CPU", "bytes fetched", "bytes / files", "requests", "peak RSS",
                 "peak disk"],
                [[w, f"{med(w, 'wall'):.2f} s", f"{med(w, 'wall') / base:.2f}", f"{med(w, 'cpu'):.2f} s",
                  mb(med(w, "bytes")),
                  f"{med(w, 'bytes') / files:.3f}", int(med(w, "requests")), mb(med(w, "rss")),
                  mb(med(w, "disk"))] for w in ("stream", "download")]))
    print(f"\nsame tensors from both ways: {identical}")
    ratio = med("stream", "wall") / base
    print(f"stream wall ≤ 0.7 × download+convert: {ratio:.2f} — {verdict(ratio <= 0.7)}")
    print(f"bytes fetched ≤ 1.02 × files: {med('stream', 'bytes') / files:.3f} — "
          f"{verdict(med('stream', 'bytes') <= 1.02 * files)}")


if __name__ == "__main__":
    main()
