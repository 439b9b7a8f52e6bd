"""Cold and warm `ckptkit inspect --json` against `huggingface_hub.get_safetensors_metadata`, side by
side in one run, on header-only full-size repos served by the local Hub server with a latency.

    python bench/inspect_warm.py                         # DeepSeek-V3 671B, 50 ms, 5 rounds
    python bench/inspect_warm.py --repos llama3_8b --runs 3

Each round, in alternating order, in fresh processes: get_safetensors_metadata (it keeps nothing
between calls, so it is always cold); ckptkit with an empty HF home (cold: fetches, parses,
infers, fills the index cache); ckptkit again with that home (warm: the listing request that
names the commit, then the cache); ckptkit with the commit's full sha, twice: the first finds
the index cached but makes the report (it names its source, so it is cached per label), the
second finds both (warm, no request at all).
ckptkit writes its report to a file, as `ckptkit inspect REPO --json > FILE` does, and ends as
the console script does; the tensors are counted afterwards.
Figures: process wall time (less the hf child's own counting of the tensors it got), best of the
rounds and the spread (min..max); ratios are of the best runs, and of the medians in parentheses.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, check, cpu_probe, git_rev, last_json, machine, median, run_measured, table, verdict

CHILD = str(Path(__file__).with_name("_inspect_child.py"))
RUNS = {"hf": "huggingface_hub.get_safetensors_metadata", "cold": "ckptkit inspect --json, cold",
        "warm": "ckptkit inspect --json, warm",
        "pinned_index": "ckptkit inspect REPO@sha --json, index cached (report made)",
        "pinned": "ckptkit inspect REPO@sha --json, warm"}
GOALS = {"cold": 0.5, "warm": 0.15, "pinned": 0.15}


def bench_repo(spec: str, latency: float, rounds: int, tmp: Path) -> dict:
    from hubserver import HubServer
    from modelgen import header_only_tensors, make_header_only

    files = make_header_only(spec)
    n_tensors = len(header_only_tensors(spec))
    repo = f"bench/{spec.replace('_', '-')}"
    got: dict[str, list[dict]] = {k: [] for k in RUNS}
    with HubServer(latency=latency) as server:
        sha = server.add_repo(repo, files)

        def one(kind: str, home: Path) -> None:
            env = {"HF_ENDPOINT": server.url, "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(home),
                   "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                   "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": "", "NO_COLOR": "1", "CKPTKIT_NO_CACHE": ""}
            tool = "hf" if kind == "hf" else "ckptkit"
            pinned = kind.startswith("pinned")
            server.reset_stats()
            report = tmp / "report.json"
            r = check(run_measured([sys.executable, CHILD, tool, repo + (f"@{sha}" if pinned else ""), str(report)],
                                   env=env, cwd=ROOT), f"{kind} on {spec}")
            out = last_json(r.stdout)
            if tool == "ckptkit":  # counted here, after the measured process
                out["tensors"] = len(json.loads(report.read_text())["tensors"])
            if out["tensors"] != n_tensors:
                raise SystemExit(f"{kind} found {out['tensors']} tensors in {spec}, expected {n_tensors}")
            # the hf child's own count of the tensors is not the tool's time
            got[kind].append({"wall": r.wall - out.get("check_s", 0.0), "call": out["call_s"],
                              "requests": len(server.requests)})
            if tool == "ckptkit":
                stored(home)

        def stored(home: Path) -> None:
            """Wait for the cache stores the command left to a detached child (a user's next
            command would come seconds later)."""
            d = home / "assets" / "ckptkit" / "index-v1"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if d.is_dir() and any(d.glob("*.index")) and any(d.glob("*.report")):
                    return
                time.sleep(0.05)
            raise SystemExit(f"no index cache entry appeared in {d}")

        for i in range(rounds):
            home = Path(tempfile.mkdtemp(prefix="hfhome-", dir=tmp))
            ck = ["cold", "warm", "pinned_index", "pinned"]
            for kind in (["hf", *ck] if i % 2 == 0 else [*ck, "hf"]):
                one(kind, Path(tempfile.mkdtemp(prefix="hfhome-", dir=tmp)) if kind == "hf" else home)
    return {"spec": spec, "tensors": n_tensors, "shards": sum(f.endswith(".safetensors") for f in files),
            "runs": got}


def summary(runs: list[dict]) -> dict:
    walls = [r["wall"] for r in runs]
    calls = [r["call"] for r in runs]
    return {"best": min(walls), "median": median(walls), "max": max(walls), "call": min(calls),
            "requests": max(r["requests"] for r in runs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repos", default="deepseek_v3_671b", help="header-only specs from tests/modelgen.py")
    ap.add_argument("--latency", type=float, default=0.05, help="seconds added to every request")
    ap.add_argument("--runs", type=int, default=5, help="rounds (each runs every tool once)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    print(machine())
    print(f"ckptkit {git_rev()}; latency {args.latency * 1000:.0f} ms per request; best of {args.runs} rounds\n")
    out = []
    with tempfile.TemporaryDirectory(prefix="ckptkit-bench-") as tmpd:
        for spec in args.repos.split(","):
            probe = cpu_probe()
            res = bench_repo(spec, args.latency, args.runs, Path(tmpd))
            res["cpu_probe_s"] = [probe, cpu_probe()]
            print(f"CPU probe (a fixed Python loop, lower is faster) before and after: "
                  f"{res['cpu_probe_s'][0]:.3f} s, {res['cpu_probe_s'][1]:.3f} s")
            s = {k: summary(v) for k, v in res["runs"].items()}
            hf = s["hf"]
            rows = [[RUNS[k], f"{v['best']:.2f} s", f"{v['best']:.2f}..{v['max']:.2f} s", f"{v['call']:.2f} s",
                     v["requests"], "1.00" if k == "hf" else
                     f"{v['best'] / hf['best']:.2f} ({v['median'] / hf['median']:.2f})"]
                    for k, v in s.items()]
            print(table(["run", "wall, best", "spread", "in call, best", "requests", "vs hf: best (median)"],
                        rows, f"{spec}: {res['tensors']:,} tensors in {res['shards']} shards"))
            targets = [[f"{RUNS[k]} <= {g} x hf", f"{s[k]['best']:.2f} <= {g * hf['best']:.2f} s",
                        verdict(s[k]["best"] <= g * hf["best"])] for k, g in GOALS.items()]
            print(table(["goal (process wall, best of rounds)", "measured", ""], targets))
            out.append({**res, "summary": s})
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
