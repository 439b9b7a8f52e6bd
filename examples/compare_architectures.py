"""Shows: comparing the architectures of several checkpoints from Python, as a Markdown table.

    python examples/compare_architectures.py SRC [SRC ...] [--revision REV]

Each SRC is a checkpoint folder, a safetensors or GGUF file, or a Hugging Face Hub repo id
(``org/name``, ``org/name@revision``); only headers, config.json and the tokenizer files are
read. The table has the rows of ``ckptkit compare`` (built by the same functions), plus three
computed here from the tensor index and the inferred facts, to show how to reach them.
"""
from __future__ import annotations

import argparse
import sys

from ckptkit.api import inspect
from ckptkit.errors import CkptError
from ckptkit.index import TensorIndex
from ckptkit.infer import Inference, infer
from ckptkit.render.compare import column_from_report, compare_table, markdown
from ckptkit.render.text import human_bytes

# rows this script adds after ckptkit's own: (label, column key)
EXTRA_ROWS = [("Tensors", "tensors"), ("Stored bytes", "stored"), ("Facts from tensors alone", "from_tensors")]


def column(spec: str, revision: str | None = None) -> dict[str, str]:
    """One table column: ckptkit compare's cells for ``spec`` plus this script's."""
    index: TensorIndex = inspect(spec, revision)          # headers only, every shard
    facts: Inference = infer(index)                       # facts, each with source and evidence
    meta = index.metadata if index.format == "gguf" else None
    col = column_from_report(spec, facts.to_json(), index.config, meta)
    known = [f for f in facts.facts.values() if f.value is not None]
    col["tensors"] = f"{len(index.tensors):,}"
    col["stored"] = human_bytes(index.total_bytes)
    # a fact's source says whether shapes alone gave it ("tensors") or a config had to ("config")
    col["from_tensors"] = f"{sum(f.source == 'tensors' for f in known)} of {len(known)}"
    return col


def table(specs: list[str], revision: str | None = None) -> str:
    columns = [column(s, revision) for s in specs]
    headers, rows = compare_table(columns)
    rows += [[label] + [c[key] for c in columns] for label, key in EXTRA_ROWS]
    return markdown(headers, rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", metavar="SRC", help="folder, file or Hub repo id")
    ap.add_argument("--revision", help="Hub revision for every Hub SRC")
    args = ap.parse_args(argv)
    try:
        print(table(args.specs, args.revision))
    except CkptError as e:                                # one line, as the CLI prints it
        print(f"compare_architectures: {e}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
