"""One measured inspect, run in its own process so imports, memory and the Hub client are its own.

    python bench/_inspect_child.py ckptkit REPO_ID REPORT_FILE
    python bench/_inspect_child.py hf REPO_ID

HF_ENDPOINT must already point at the server. Prints one JSON line: seconds spent importing,
seconds in the call, and for hf the number of tensors found and the seconds spent counting them
(not the tool's). ckptkit runs as `ckptkit inspect REPO --json --no-progress > REPORT_FILE`
does, ending as the console script does (ckptkit.__main__.finish: the index cache stored by a
detached child after the output); the parent counts the report's tensors.
"""
from __future__ import annotations

import contextlib
import json
import sys
import time


def main() -> None:
    tool, repo = sys.argv[1], sys.argv[2]
    t0 = time.perf_counter()
    if tool == "ckptkit":
        from ckptkit.cli import main as cli
        t1 = time.perf_counter()
        from ckptkit.__main__ import finish, prepare

        prepare()  # as the console script runs a command (ckptkit/__main__.py)
        with open(sys.argv[3], "w") as f, contextlib.redirect_stdout(f):
            try:  # exactly `ckptkit inspect REPO --json --no-progress > REPORT_FILE`
                cli(["inspect", repo, "--json", "--no-progress"], standalone_mode=False)
            except SystemExit as e:
                if e.code:
                    raise
        t2 = time.perf_counter()
        print(json.dumps({"import_s": t1 - t0, "call_s": t2 - t1}))
        finish(0)
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
