"""The uniform-layout writer (``--to ckpt``): the canonical tensor stream (stream.py) written as
safetensors shards under canonical names (canonical.py) plus ``manifest.json``.

The manifest holds the format and its version, the family, every inferred fact with its
evidence, the source (spec, revision, file sizes and hashes where the Hub lists them), the
original config.json, the files carried along, and per tensor its canonical name, HF name,
role, layer, expert, dtype, shape, shard and the source tensor(s) it came from. Streamed tensor
by tensor into a temporary folder renamed to the output when complete."""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CkptError
from ..formats.safetensors_write import Entry, atomic_dir, write_sharded
from ..index import TensorIndex
from ..infer.names import canonicalize
from ..sources.base import Source
from ..sources.ckpt import FORMAT, MANIFEST, VERSION
from .canonical import SCHEME, Canonical, canonical_of
from .stream import Stream, StreamTensor

DEFAULT_SHARD_SIZE = 5 * 10**9


@dataclass
class CkptTensor:
    canonical: Canonical
    tensor: StreamTensor
    transposed: bool = False

    @property
    def entry(self) -> Entry:
        return Entry(self.canonical.name, self.tensor.dtype, self.tensor.shape)


@dataclass
class CkptPlan:
    stream: Stream
    tensors: list[CkptTensor]
    notes: list[str] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(t.entry.nbytes for t in self.tensors)


def plan_ckpt(stream: Stream) -> CkptPlan:
    """Each stream tensor's canonical name; two tensors may not share one."""
    infos = canonicalize(t.name for t in stream.tensors)
    out: list[CkptTensor] = []
    seen: dict[str, str] = {}
    for t in stream.tensors:
        info = infos[t.name]
        c = canonical_of(t.name, info)
        if c.name in seen:
            raise CkptError(f"{seen[c.name]} and {t.name} both have the canonical name {c.name}")
        seen[c.name] = t.name
        out.append(CkptTensor(c, t, info.transposed and len(t.shape) == 2))
    return CkptPlan(stream, out, list(stream.notes))


def source_record(spec: str, source: Source, index: TensorIndex, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Where the tensors came from: spec, label, a model name, format, Hub commit, files."""
    from . import _hub_of
    hub = _hub_of(source)
    rec: dict[str, Any] = {"spec": spec, "label": source.label,
                           "format": "ckpt" if previous is not None else index.format,
                           "revision": hub.commit_sha if hub is not None else None}
    name = (index.config or {}).get("_name_or_path") or index.metadata.get("general.name") \
        or Path(source.label.rstrip("/")).name
    if previous is not None:
        name = (previous.get("source") or {}).get("name") or name
        rec["origin"] = previous.get("source")
    rec["name"] = str(name)
    files = []
    for f in index.files:
        item: dict[str, Any] = {"name": f.name, "size": f.size}
        if hub is not None:
            try:
                _, (_, sha256, blob) = hub._entry(f.name)
            except CkptError:
                sha256 = blob = None
            if sha256:
                item["sha256"] = sha256
            elif blob:
                item["git_blob"] = blob
        files.append(item)
    rec["files"] = files
    return rec


def manifest(plan: CkptPlan, facts: dict[str, Any], source: dict[str, Any],
             weight_map: dict[str, str]) -> dict[str, Any]:
    s = plan.stream
    arch = None
    if s.family:
        from .family import families
        arch = families()[s.family].arch
    tensors = []
    for t in plan.tensors:
        c, st = t.canonical, t.tensor
        row: dict[str, Any] = {"name": c.name, "hf_name": st.name, "role": c.role, "layer": c.layer,
                               "expert": c.expert, "dtype": st.dtype, "shape": list(st.shape),
                               "file": weight_map[c.name], "source": list(st.source),
                               "source_dtype": st.stored_dtype}
        if c.mtp:
            row["mtp"] = True
        if t.transposed:
            row["layout"] = "in_out"       # stored [in, out], as HF's Conv1D has it
        tensors.append(row)
    return {"format": FORMAT, "format_version": VERSION, "naming": SCHEME,
            "family": {"conversion": s.family, "gguf_arch": arch,
                       "architectures": s.config.get("architectures"),
                       "model_type": s.config.get("model_type"),
                       "catalogue": facts.get("family")},
            "facts": facts.get("facts", {}), "source": source, "config": s.config,
            "side_files": sorted(s.side_files), "notes": plan.notes, "tensors": tensors}


def write_ckpt(plan: CkptPlan, source: Source, out: str | os.PathLike, facts: dict[str, Any],
               source_rec: dict[str, Any], shard_size: int = DEFAULT_SHARD_SIZE,
               on_bytes: Callable[[int], None] | None = None) -> list[str]:
    """Write the folder; returns the names of the files written."""
    with atomic_dir(out) as tmp:
        entries = [t.entry for t in plan.tensors]
        data = ((t.canonical.name, t.tensor.chunks(source)) for t in plan.tensors)
        index = write_sharded(lambda name: open(tmp / name, "wb"), entries, data, shard_size,
                              {"format": "pt"}, on_bytes)
        for name, raw in plan.stream.side_files.items():
            (tmp / name).write_bytes(raw)
        doc = manifest(plan, facts, source_rec, index["weight_map"])
        (tmp / MANIFEST).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        return sorted(p.name for p in tmp.iterdir())


@dataclass
class CkptResult:
    plan: CkptPlan
    out_dir: Path | None
    files: list[str]


def convert_to_ckpt(spec: str, out: str | os.PathLike, outtype: str = "auto", revision: str | None = None,
                    shard_size: int = DEFAULT_SHARD_SIZE, vocab: bool = True, dry_run: bool = False,
                    on_bytes: Callable[[int], None] | None = None,
                    on_plan: Callable[[CkptPlan], None] | None = None, dequantize: bool = False) -> CkptResult:
    """Any checkpoint (HF, GGUF, ckpt) at ``spec`` into a uniform-layout folder at ``out``;
    ``dequantize``: FP8 weights times their scales (stream.py)."""
    from ..api import load_index, open_source
    from ..infer import infer
    from ..sources.ckpt import is_ckpt, read_manifest
    from .stream import read_stream, reading
    with open_source(spec, revision) as source:
        index = load_index(source, tokenizer=True)
        stream = read_stream(source, index, outtype, vocab, dequantize)
        plan = plan_ckpt(stream)
        if on_plan:
            on_plan(plan)
        if dry_run:
            return CkptResult(plan, None, [])
        previous = read_manifest(source) if is_ckpt(source.files()) else None
        facts = infer(index).to_json()
        rec = source_record(spec, source, index, previous)
        with reading(source, stream) as src:
            files = write_ckpt(plan, src, out, facts, rec, shard_size, on_bytes)
        return CkptResult(plan, Path(out), files)
