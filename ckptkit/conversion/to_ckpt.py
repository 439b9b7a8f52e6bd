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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .. import mapdata
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
    stack: tuple[int, int] | None = None   # expert e of the n the HF tensor stacks ([n, ...])

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


EXPERTS = ("split", "stacked")


def plan_ckpt(stream: Stream, experts: str = "split") -> CkptPlan:
    """Each stream tensor's canonical name; two tensors may not share one. ``experts``:
    "split" gives every routed expert its own tensor: per-expert tensors as the source has them,
    and a tensor the source stacks ([experts, ...]: gpt-oss, Llama 4) cut into its experts, each
    recorded with its place in the stack (``hf_stack``); "stacked" joins each layer's per-expert
    tensors of a role into one tensor [experts, ...] at the place of its expert 0 (a stacked
    source tensor stays as it is)."""
    if experts not in EXPERTS:
        raise CkptError(f"--experts must be one of {', '.join(EXPERTS)}")
    infos = canonicalize(t.name for t in stream.tensors)
    routed = mapdata.roles().groups["routed_experts"]
    out: list[CkptTensor] = []
    seen: dict[str, str] = {}
    groups: dict[str, list[tuple[int, StreamTensor]]] = {}

    def add(ct: CkptTensor, source_name: str) -> None:
        if ct.canonical.name in seen or ct.canonical.name in groups:
            raise CkptError(f"{seen.get(ct.canonical.name, ct.canonical.name)} and {source_name} both have the "
                            f"canonical name {ct.canonical.name}")
        seen[ct.canonical.name] = source_name
        out.append(ct)

    for t in stream.tensors:
        info = infos[t.name]
        c = canonical_of(t.name, info)
        if experts == "stacked" and c.expert is not None:
            c = canonical_of(t.name, info._replace(expert=None))
            if c.name not in groups:
                groups[c.name] = []
                out.append(CkptTensor(c, t))     # stands for the stack until every expert is known
            groups[c.name].append((info.expert or 0, t))
        elif (experts == "split" and c.expert is None and c.layer is not None and c.role is not None
              and routed.matches(c.role) and len(t.shape) >= 2 and "{expert}" not in t.name):
            parts = _unstacked(t)
            for e, part in enumerate(parts):
                ce = canonical_of(t.name, info._replace(expert=e))
                add(CkptTensor(ce, part, info.transposed and len(part.shape) == 2, (e, len(parts))), t.name)
        else:
            add(CkptTensor(c, t, info.transposed and len(t.shape) == 2), t.name)
    for i, ct in enumerate(out):
        if ct.canonical.name in groups:
            if ct.canonical.name in seen:
                raise CkptError(f"{seen[ct.canonical.name]} and the stacked experts both are {ct.canonical.name}")
            out[i] = CkptTensor(ct.canonical, _stacked(ct.canonical.name, groups[ct.canonical.name]))
    return CkptPlan(stream, out, list(stream.notes))


def _stacked(name: str, members: list[tuple[int, StreamTensor]]) -> StreamTensor:
    """One layer's experts of a role as one tensor: their bytes one after the other, expert 0
    first; its HF name is a template with ``{expert}``. The inverse of ``_unstacked``."""
    members = sorted(members, key=lambda m: m[0])
    ids = [e for e, _ in members]
    first = members[0][1]
    if ids != list(range(len(ids))) or any((t.dtype, t.shape) != (first.dtype, first.shape) for _, t in members):
        raise CkptError(f"{name}: experts {ids[0]}..{ids[-1]} are not 0..{len(ids) - 1} of one dtype and shape; "
                        "cannot stack them")
    templates = {t.name.replace(f".experts.{e}.", ".experts.{expert}.") for e, t in members}
    if len(templates) != 1 or "{expert}" not in next(iter(templates)):
        raise CkptError(f"{name}: the experts' HF names do not differ by their number only; cannot stack them")

    def chunks(source: Source) -> Iterator[bytes]:
        for _, t in members:
            yield from t.chunks(source)
    reads = None if any(t.reads is None for _, t in members) else tuple(r for _, t in members for r in t.reads or ())
    return StreamTensor(templates.pop(), first.dtype, (len(members), *first.shape),
                        tuple(s for _, t in members for s in t.source), chunks, first.stored_dtype, reads)


def _unstacked(t: StreamTensor) -> list[StreamTensor]:
    """A stacked-experts tensor [n, ...] as its n experts, each [...] and named as the stack (the
    manifest records each one's place in it). The inverse of ``_stacked``: the stack's chunks are
    read once, in order, and cut at the experts' boundaries (see _Cutter)."""
    n = t.shape[0]
    size = Entry(t.name, t.dtype, t.shape).nbytes
    if n < 1 or size % n:
        raise CkptError(f"{t.name} {list(t.shape)}: not stacked experts; cannot split it")
    cut = _Cutter(t, size // n)
    return [StreamTensor(t.name, t.dtype, t.shape[1:], tuple(f"{s}[{e}]" for s in t.source),
                         partial(cut.expert, e), t.stored_dtype, t.reads if e == 0 else ())
            for e in range(n)]


class _Cutter:
    """The bytes of expert ``e`` of a stacked tensor whose chunks do not fall on expert
    boundaries: experts asked for in order (as a writer writes them) share one pass over the
    stack's chunks, holding at most one chunk; an expert asked for out of order starts the stack
    again (correct, but reads it twice)."""

    def __init__(self, t: StreamTensor, per: int):
        self.t, self.per = t, per
        self.it: Iterator[bytes] | None = None
        self.source: Source | None = None
        self.buf, self.at = b"", 0      # the chunk in hand and the stack offset of its first byte

    def expert(self, e: int, source: Source) -> Iterator[bytes]:
        start, end = e * self.per, (e + 1) * self.per
        if self.it is None or self.source is not source or self.at > start:
            self.it, self.source, self.buf, self.at = iter(self.t.chunks(source)), source, b"", 0
        while True:
            a, b = max(start, self.at) - self.at, min(end, self.at + len(self.buf)) - self.at
            if a < b:
                yield self.buf[a:b]
            if self.at + len(self.buf) >= end:
                return
            self.at += len(self.buf)
            nxt = next(self.it, None)
            if nxt is None:
                raise CkptError(f"{self.t.name}: the stream ended at byte {self.at}, before expert {e} did")
            self.buf = nxt


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
        if "{expert}" in st.name:
            row["stacked_experts"] = st.shape[0]      # hf_name is a template: one HF tensor per expert
        if t.stack is not None:
            row["hf_stack"] = list(t.stack)          # [e, n]: expert e of the HF tensor hf_name [n, ...]
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
        source.finish()   # from the Hub: every file read passed its hash before the folder is named
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
                    on_plan: Callable[[CkptPlan], None] | None = None, dequantize: bool = False,
                    experts: str = "split") -> CkptResult:
    """Any checkpoint (HF, GGUF, ckpt) at ``spec`` into a uniform-layout folder at ``out``;
    ``dequantize``: FP8 weights times their scales (stream.py); ``experts``: split or stacked."""
    from ..api import load_index, open_source
    from ..infer import infer
    from ..sources.ckpt import is_ckpt, read_manifest
    from .stream import read_stream, reading
    with open_source(spec, revision) as source:
        index = load_index(source, tokenizer=True)
        stream = read_stream(source, index, outtype, vocab, dequantize)
        plan = plan_ckpt(stream, experts)
        if on_plan:
            on_plan(plan)
        if dry_run:
            return CkptResult(plan, None, [])
        previous = read_manifest(source) if is_ckpt(source) else None
        facts = infer(index).to_json()
        rec = source_record(spec, source, index, previous)
        with reading(source, stream) as src:
            files = write_ckpt(plan, src, out, facts, rec, shard_size, on_bytes)
        return CkptResult(plan, Path(out), files)
