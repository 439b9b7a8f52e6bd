"""One measured inspect, run in its own process so imports, memory and the Hub client are its own.

    python bench/_inspect_child.py ckptkit|hf REPO_ID

HF_ENDPOINT must already point at the server. Prints one JSON line: seconds spent importing,
seconds in the call, the number of tensors found (checked by the parent), and the seconds this
script spent counting them (parsing ckptkit's 17 MB report), which are not the tool's.
"""
from __future__ import annotations

import contextlib
import io
import json
import sys
import time


def main() -> None:
    tool, repo = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    if tool == "ckptkit":
        from ckptkit.cli import main as cli
        t1 = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:  # exactly `ckptkit inspect REPO --json --no-progress`
                cli(["inspect", repo, "--json", "--no-progress"], standalone_mode=False)
            except SystemExit as e:
                if e.code:
                    raise
        t2 = time.perf_counter()
        report = json.loads(buf.getvalue())
        tensors = len(report["tensors"])
        extra = {"family": (report.get("family") or {}).get("family")}
    elif tool == "hf":
        from huggingface_hub import get_safetensors_metadata
        t1 = time.perf_counter()
        meta = get_safetensors_metadata(repo)
        t2 = time.perf_counter()
        tensors = sum(len(f.tensors) for f in meta.files_metadata.values())
        extra = {}
    else:
        raise SystemExit(f"unknown tool {tool!r}")
    check_s = time.perf_counter() - t2
    print(json.dumps({"import_s": t1 - t0, "call_s": t2 - t1, "check_s": check_s, "tensors": tensors, **extra}))


if __name__ == "__main__":
    main()
