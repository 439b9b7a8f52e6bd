"""HF safetensors -> GGUF, planned from headers, then streamed."""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..api import load_index, open_source
from ..errors import CkptError, UnsupportedError
from ..formats.gguf_write import kv
from ..journal import Journal, discard
from ..sources.base import Source
from ..sources.ckpt import NAME_KEY as CKPT_NAME_KEY
from ..sources.digest import ChecksumError
from ..sources.hub import HubSource
from .family import family_for

# the planner and the executor import numpy and gguf: loaded when a conversion runs, so that
# importing a light part of the package (the tokenizer's pre-tokenizer table, for inspect) stays cheap
if TYPE_CHECKING:
    from .plan import Plan
    from .stream_source import StreamSource
    from .to_ckpt import CkptResult
    from .to_hf import HFResult
    from .write_hf import HFFolderResult

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*$", re.I)


def parse_size(text: str) -> int:
    m = _SIZE.match(text)
    if not m:
        raise CkptError(f"not a size: {text!r} (e.g. 50G, 500M)")
    return int(float(m[1]) * 1000 ** " KMGT".index((m[2] or " ").upper()))


@dataclass
class ConvertResult:
    plan: Plan
    outputs: list[Path]


def build_plan(source: Source, outtype: str = "auto", keep_mtp: bool = True, family: str | None = None,
               vocab: bool = True, pre: str | None = None, vocab_only: bool = False) -> Plan:
    """The GGUF plan; ``vocab_only``: the tokenizer and the architecture's metadata, no tensors."""
    if vocab_only:
        from .vocab_only import vocab_only_plan
        return vocab_only_plan(source, family, pre)
    index = load_index(source)
    if index.format != "safetensors":
        raise UnsupportedError("convert to GGUF reads safetensors checkpoints; this one is already GGUF")
    from .plan import plan_gguf
    fam = family_for(index.config, family)
    plan = plan_gguf(index, fam, outtype, keep_mtp)
    plan.kvs.append(kv("general.file_type", _file_type(plan)))
    plan.kvs.append(kv("general.quantization_version", 2))
    # a ckpt folder names the model as its source did, so ckpt -> GGUF equals HF -> GGUF
    name = ((index.config or {}).get("_name_or_path") or index.metadata.get(CKPT_NAME_KEY)
            or Path(source.label.rstrip("/")).name)
    plan.kvs.insert(1, kv("general.name", str(name)))
    if vocab and _has_tokenizer(source):
        from .tokenizer import tokenizer_kvs
        vocab_size = next((t.slot.shape[0] for t in plan.tensors if t.slot.name == "token_embd.weight"),
                          (index.config or {}).get("vocab_size", 0))
        plan.kvs.extend(tokenizer_kvs(source, index.config, vocab_size, pre))
    else:
        # llama.cpp loads a model without a vocabulary when told so explicitly
        plan.kvs.append(kv("tokenizer.ggml.model", "none"))
    return plan


def _has_tokenizer(source: Source) -> bool:
    from .tokenizer import has_tokenizer
    return has_tokenizer(source)


def _file_type(plan: Plan) -> int:
    """llama_ftype of the type holding most bytes: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7,
    MOSTLY_BF16 32, MOSTLY_MXFP4_MOE 38."""
    from collections import Counter
    c: Counter = Counter()
    for t in plan.tensors:
        if len(t.slot.shape) > 1:
            c[t.slot.ggml_type] += t.slot.nbytes
    top = c.most_common(1)[0][0] if c else 0
    return {0: 0, 1: 1, 8: 7, 30: 32, 39: 38}.get(top, 0)


def convert_to_gguf(spec: str, out: str | os.PathLike, outtype: str = "auto", revision: str | None = None,
                    threads: int = 1, split_max_size: str | None = None, keep_mtp: bool = True,
                    family: str | None = None, vocab: bool = True, pre: str | None = None,
                    dry_run: bool = False, on_bytes: Callable[[int], None] | None = None,
                    on_plan: Callable[[Plan], None] | None = None,
                    read_timeout: float | None = None, connections: int | None = None,
                    resume: bool = False, on_fetched: Callable[[int], None] | None = None,
                    vocab_only: bool = False) -> ConvertResult:
    """From the Hub: ``read_timeout`` is the seconds a read may receive nothing before it is
    abandoned and resumed (default: the source's, see HubSource); ``connections`` the ranged
    requests in flight at once (default: 4, more when the ranges are small). ``resume``: keep a
    journal next to the temporary output and continue from the tensors an interrupted run with
    ``resume`` completed. ``on_fetched`` is told the bytes of tensor data read from the source as
    they arrive (from reading threads; see ``execute``)."""
    run = partial(_convert_once, spec, out, outtype, revision, threads, split_max_size, keep_mtp,
                  family, vocab, pre, dry_run, on_bytes, read_timeout=read_timeout,
                  connections=connections, resume=resume, on_fetched=on_fetched, vocab_only=vocab_only)
    try:
        return run(on_plan)
    except ChecksumError:
        # a byte changed on the way: the output, and anything kept to resume it, is discarded;
        # fetch everything once more
        discard(out)
    try:
        return run(None)
    except ChecksumError as e:
        discard(out)
        raise ChecksumError(f"{e.message} (twice; the output was not written)", e.where) from None


def _convert_once(spec: str, out: str | os.PathLike, outtype: str, revision: str | None, threads: int,
                  split_max_size: str | None, keep_mtp: bool, family: str | None, vocab: bool,
                  pre: str | None, dry_run: bool, on_bytes: Callable[[int], None] | None,
                  on_plan: Callable[[Plan], None] | None, read_timeout: float | None = None,
                  connections: int | None = None, resume: bool = False,
                  on_fetched: Callable[[int], None] | None = None, vocab_only: bool = False) -> ConvertResult:
    with open_source(spec, revision) as source, ExitStack() as stack:
        hub = _hub_of(source)
        if hub is not None and read_timeout is not None:
            hub.timeout = read_timeout
        if hub is not None and Path(out).parent.is_dir():  # checksums' out-of-order bytes wait there
            hub.digests.spill_dir = str(Path(out).parent)
        streamed = None
        if not vocab_only and load_index(source).format == "gguf":
            # GGUF -> GGUF: the GGUF reader's stream (HF convention, float32) read as an HF checkpoint
            if resume:
                raise CkptError("--resume is for safetensors sources; a GGUF source is converted in one go")
            streamed, outtype = _gguf_as_hf(source, outtype, threads)
            source = streamed
            hub = None  # the stream's own GGUF reads go through a read-ahead (below), not the plan's
        plan = build_plan(source, outtype, keep_mtp, family, vocab, pre, vocab_only)
        if on_plan:
            on_plan(plan)
        if dry_run:
            return ConvertResult(plan, [])
        if streamed is not None:   # from the Hub: the GGUF's bytes fetched once, checked (finish)
            from .stream import reading
            streamed.inner = stack.enter_context(reading(streamed.inner, streamed.stream))
        split = parse_size(split_max_size) if split_max_size else None
        # remote: every tensor byte planned and fetched once, `connections` ranges at a time
        journal = Journal(out, _resume_key(plan, source, split)) if resume else None
        from .run import execute
        outputs = execute(plan, source, out, threads=threads, split_max_bytes=split, on_bytes=on_bytes,
                          read_ahead=hub is not None, connections=connections, journal=journal,
                          on_fetched=on_fetched)
        return ConvertResult(plan, outputs)


# a GGUF's file type -> the GGUF outtype "auto" keeps when converting it to GGUF again
_AUTO_FROM_FILE_TYPE = {0: "f32", 1: "f16", 32: "bf16", 7: "q8_0"}


def _gguf_as_hf(source: Source, outtype: str, threads: int) -> tuple[StreamSource, str]:
    """A GGUF source as the HF checkpoint its GGUF -> HF stream makes (values exact in float32:
    rotary permutation and norm offsets undone, quantised types dequantised), and the outtype
    "auto" means for it: the GGUF's own file type when the planner writes it, else f16."""
    from .stream import gguf_stream
    from .stream_source import StreamSource
    index = load_index(source)
    stream = gguf_stream(source, index, "f32", vocab=True)
    if outtype == "auto":
        outtype = _AUTO_FROM_FILE_TYPE.get(int(index.metadata.get("general.file_type", 1) or 0), "f16")
    return StreamSource(stream, source, keep=1 if threads <= 1 else 2), outtype


def _resume_key(plan: Plan, source: Source, split: int | None) -> str:
    """What an output's bytes depend on: the GGUF header, every piece's source range and
    operations, the split size, ckptkit's version and the source's exact bytes (a Hub commit,
    or local files' sizes and modification times)."""
    from .. import __version__
    from ..formats.gguf_write import DEFAULT_ALIGNMENT, header_bytes
    hub = _hub_of(source)
    from ..tp_slices import real_files
    files = sorted({f for t in plan.tensors for p in t.pieces if p.gen is None for f in real_files(source, p.src.file)})
    if hub is not None:
        ident: object = hub.commit_sha
    else:
        ident = [(f, (lp := source.local_path(f)) and lp.stat().st_size, lp and lp.stat().st_mtime_ns)
                 for f in files]
    h = hashlib.sha256(header_bytes(plan.kvs, plan.slots, DEFAULT_ALIGNMENT)[0])
    h.update(repr((__version__, split, ident, [t.pieces for t in plan.tensors])).encode())
    return h.hexdigest()


def _hub_of(source: Source) -> HubSource | None:
    """The Hub source under any wrappers, if the source is remote."""
    while not isinstance(source, HubSource):
        inner = getattr(source, "inner", None)
        if not isinstance(inner, Source):
            return None
        source = inner
    return source


def source_is_gguf(spec: str, revision: str | None = None) -> bool:
    """Whether ``spec`` holds a GGUF model (then ``convert`` goes GGUF -> HF)."""
    return source_kind(spec, revision) == "gguf"


TARGETS = ("gguf", "hf", "ckpt")


def source_kind(spec: str, revision: str | None = None) -> str:
    """"gguf", "ckpt" (a uniform-layout folder: manifest.json) or "hf" (safetensors)."""
    from ..api import find_checkpoint_files
    from ..sources.ckpt import is_ckpt
    with open_source(spec, revision) as source:
        if is_ckpt(source):
            return "ckpt"
        return "gguf" if find_checkpoint_files(source)[0] == "gguf" else "hf"


def default_target(kind: str, out: str) -> str:
    """``--to`` when not given: a .gguf output is GGUF; a GGUF or ckpt source goes to HF, an HF
    source to GGUF."""
    if str(out).endswith(".gguf"):
        return "gguf"
    return "gguf" if kind == "hf" else "hf"


def check_target(kind: str, target: str, out: str, outtype: str) -> None:
    """Refuse the pairs and outputs no converter makes, in one line."""
    if target not in TARGETS:
        raise CkptError(f"convert to {target!r}; known: {', '.join(TARGETS)}")
    if target == "gguf" and os.path.isdir(out):
        raise CkptError("is a folder; a GGUF output is a file", out)
    if target != "gguf" and str(out).endswith(".gguf"):
        raise CkptError(f"--to {target} writes a folder, not a .gguf file", out)
    if target != "gguf" and outtype == "q8_0":
        raise CkptError(f"--to {target} writes bf16, f16 or f32 safetensors (--outtype); q8_0 is for GGUF")


def _twice(run: Callable[..., Any], kw: dict[str, Any]) -> Any:
    """``run(**kw)``, once more if a byte changed on the way (ChecksumError): a folder output is
    only named when complete, so nothing is left to discard; the second attempt fetches again
    and is not shown its plan again."""
    try:
        return run(**kw)
    except ChecksumError:
        pass
    try:
        return run(**{**kw, "on_plan": None})
    except ChecksumError as e:
        raise ChecksumError(f"{e.message} (twice; the output was not written)", e.where) from None


def convert_to_hf(spec: str, out_dir: str | os.PathLike, outtype: str = "bf16", **kw: Any) -> HFResult:
    """GGUF -> Hugging Face folder; see ckptkit.conversion.to_hf.convert_to_hf."""
    from .to_hf import convert_to_hf as run
    return _twice(run, {"spec": spec, "out_dir": out_dir, "outtype": outtype, **kw})


def convert_to_ckpt(spec: str, out_dir: str | os.PathLike, outtype: str = "auto", **kw: Any) -> CkptResult:
    """Any checkpoint -> the uniform layout; see ckptkit.conversion.to_ckpt.convert_to_ckpt."""
    from .to_ckpt import convert_to_ckpt as run
    return _twice(run, {"spec": spec, "out": out_dir, "outtype": outtype, **kw})


def convert_ckpt_to_hf(spec: str, out_dir: str | os.PathLike, outtype: str = "auto", **kw: Any) -> HFFolderResult:
    """A ckpt folder (or HF safetensors) -> a Hugging Face folder; see conversion/write_hf.py."""
    from .write_hf import convert_st_to_hf as run
    return _twice(run, {"spec": spec, "out": out_dir, "outtype": outtype, **kw})
