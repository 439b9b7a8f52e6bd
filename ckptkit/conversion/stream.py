"""Readers of the canonical tensor stream: any source as a list of tensors in the Hugging Face
convention (names, layout and values as transformers has them), each with a lazy chunk iterator.

- HF safetensors (and a ckpt folder, which ``load_index`` presents under its HF names): the
  stored bytes, passed through, or cast chunk by chunk for an explicit float ``outtype``.
- GGUF: the GGUF -> HF plan (hf_plan.py: rotary permutation and norm offsets undone, split
  tensors re-fused, stacked experts split), dequantised to ``outtype``.

Writers (to_ckpt.py, write_hf.py) take the stream; nothing here holds more than one chunk."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CkptError, UnsupportedError
from ..index import TensorIndex, TensorInfo
from ..sources.base import Source
from ..sources.files import is_pickle

if TYPE_CHECKING:
    from .hf_pieces import HFPiece
    from .hf_plan import HFPlan

CHUNK_BYTES = 16 << 20
MAX_SIDE_FILE = 64 << 20       # small files carried along (tokenizer, generation config, README)
FLOAT_OUT = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


@dataclass(frozen=True)
class StreamTensor:
    name: str                          # the HF name
    dtype: str                         # safetensors dtype written
    shape: tuple[int, ...]
    source: tuple[str, ...]            # the source tensor(s) it is made of
    chunks: Callable[[Source], Iterator[bytes]]
    stored_dtype: str = ""             # the source's dtype
    reads: tuple[tuple[str, int, int], ...] | None = None    # the source reads ``chunks`` makes, when known


@dataclass
class Stream:
    format: str                        # "safetensors" | "gguf" (a ckpt folder reads as safetensors)
    config: dict[str, Any]
    tensors: list[StreamTensor]
    side_files: dict[str, bytes]       # relative name -> bytes (tokenizer files, ...)
    family: str | None = None          # the conversion family (mappings/convert), when known
    notes: list[str] = field(default_factory=list)
    hf_plan: HFPlan | None = None      # a GGUF's: the GGUF -> HF plan the tensors come from

    @property
    def nbytes(self) -> int:
        from ..formats.safetensors_write import Entry
        return sum(Entry(t.name, t.dtype, t.shape).nbytes for t in self.tensors)


Range = tuple[str, int, int]           # file, offset, length


def raw_tensor(name: str, t: TensorInfo, origin: str) -> StreamTensor:
    """A tensor's stored bytes, CHUNK_BYTES at a time."""
    n = CHUNK_BYTES
    reads = tuple((t.file, t.offset + a, min(n, t.nbytes - a)) for a in range(0, t.nbytes, n))

    def chunks(source: Source) -> Iterator[bytes]:
        for r in reads:
            yield source.read(*r)
    return StreamTensor(name, t.dtype, t.shape, (origin,), chunks, t.dtype, reads)


def cast_tensor(name: str, t: TensorInfo, dtype: str, origin: str) -> StreamTensor:
    """A float tensor's values re-encoded as ``dtype``, whole rows (about CHUNK_BYTES) at a time."""
    from ..tensordata import decode, row_nbytes
    from .hf_data import encode
    parts: list[tuple[Range, tuple[int, ...]]] = [((t.file, t.offset, t.nbytes), t.shape)]
    if len(t.shape) >= 2:
        rb = row_nbytes(t)
        step = max(1, CHUNK_BYTES // max(rb, 1))
        parts = [((t.file, t.offset + r0 * rb, (min(r0 + step, t.shape[0]) - r0) * rb),
                  (min(r0 + step, t.shape[0]) - r0, *t.shape[1:])) for r0 in range(0, t.shape[0], step)]

    def chunks(source: Source) -> Iterator[bytes]:
        for r, shape in parts:
            yield encode(decode(source.read(*r), t.dtype, shape), dtype)
    return StreamTensor(name, dtype, t.shape, (origin,), chunks, t.dtype, tuple(r for r, _ in parts))


@contextmanager
def reading(source: Source, stream: Stream) -> Iterator[Source]:
    """The source to read the stream's tensors from: from the Hub, a read-ahead that fetches the
    planned reads once, in large ranges, several at a time (as HF -> GGUF does); else itself."""
    from ..sources.readahead import ReadAhead
    from . import _hub_of
    reads = [r for t in stream.tensors for r in t.reads or ()]
    if _hub_of(source) is None or not reads:
        yield source
        return
    ahead = ReadAhead(source, reads)   # every byte of each file read, so each is checked (finish)
    try:
        yield ahead
    finally:
        ahead.close()


def side_files(source: Source, skip: set[str]) -> dict[str, bytes]:
    """The small top-level files a model folder carries besides its weights (tokenizer files,
    generation config, chat template, README), to be copied along."""
    out = {}
    for name, size in sorted(source.files().items()):
        if ("/" in name or name.startswith(".") or name in skip or is_pickle(name)
                or name.endswith((".safetensors", ".gguf", ".safetensors.index.json"))):
            continue
        if size is not None and size > MAX_SIDE_FILE:
            continue
        data = source.read_file(name)
        if len(data) <= MAX_SIDE_FILE:
            out[name] = data
    return out


def mxfp4_dequantized(blocks: TensorInfo, scales: TensorInfo, name: str, out_dtype: str) -> StreamTensor:
    """Stacked MXFP4 experts (``*_blocks`` U8 [E, rows, G, 16] with ``*_scales`` U8 [E, rows, G])
    as the float tensor transformers' gpt-oss dequantisation gives: [E, G * 32, rows] (each
    expert's matrix transposed, the [in, out] layout of its model), one expert at a time."""
    from ..errors import FormatError
    from .hf_data import encode
    from .transforms import mxfp4_dequant
    if (len(blocks.shape) != 4 or blocks.shape[-1] != 16 or tuple(scales.shape) != tuple(blocks.shape[:-1])
            or blocks.dtype != "U8" or scales.dtype != "U8"):
        raise FormatError(f"{blocks.name} {list(blocks.shape)} / {scales.name} {list(scales.shape)}: not stacked "
                          "MXFP4 experts (U8 [E, rows, G, 16] and [E, rows, G])")
    n, rows, groups, _ = blocks.shape
    bb, sb = rows * groups * 16, rows * groups
    reads = tuple(r for e in range(n) for r in ((blocks.file, blocks.offset + e * bb, bb),
                                                 (scales.file, scales.offset + e * sb, sb)))

    def chunks(source: Source) -> Iterator[bytes]:
        import numpy as np
        for e in range(n):
            b = np.frombuffer(source.read(*reads[2 * e]), np.uint8).reshape(rows, groups, 16)
            sc = np.frombuffer(source.read(*reads[2 * e + 1]), np.uint8).reshape(rows, groups)
            yield encode(mxfp4_dequant(b, sc).T, out_dtype)
    return StreamTensor(name, out_dtype, (n, groups * 32, rows), (blocks.name, scales.name), chunks, "MXFP4", reads)


def dequantized(index: TensorIndex, config: dict[str, Any], outtype: str) -> dict[str, StreamTensor]:
    """FP8 weights times their block scales, and MXFP4 experts (``mxfp4_dequantized``), as
    ``outtype`` (auto: bf16), by the name of the weight (the blocks); each consumes its scales."""
    from ..tensordiff_sides import fp8_scales, scaled_chunks
    from .family import effective_config
    from .hf_data import encode
    out_dtype = FLOAT_OUT.get(outtype, "BF16")
    out = {}
    for name, (scale, block) in fp8_scales(index, effective_config(config)).items():
        t = index.tensors[name]

        def chunks(source: Source, t: TensorInfo = t, scale: TensorInfo = scale,
                   block: tuple[int, int] = block) -> Iterator[bytes]:
            for x in scaled_chunks(t, scale, block)(source, CHUNK_BYTES):
                yield encode(x, out_dtype)
        out[name] = StreamTensor(name, out_dtype, t.shape, (name, scale.name), chunks, f"{t.dtype}×{scale.dtype}")
    for name, t in index.tensors.items():
        sc = index.tensors.get(name[: -len("_blocks")] + "_scales") if name.endswith("_blocks") else None
        if sc is not None:
            out[name] = mxfp4_dequantized(t, sc, name[: -len("_blocks")], out_dtype)
    return out


def hf_stream(source: Source, index: TensorIndex, outtype: str = "auto",
              origin: dict[str, str] | None = None, dequantize: bool = False) -> Stream:
    """An HF-named safetensors index as the stream. ``origin`` maps HF names to the names the
    tensors had in the source (a ckpt folder's canonical names). ``dequantize``: FP8 weights
    times their scales, the scales and config.json's quantization_config dropped."""
    from .family import family_for
    if outtype not in ("auto", *FLOAT_OUT):
        raise CkptError(f"--outtype for a safetensors source must be auto, {', '.join(FLOAT_OUT)}")
    if index.config is None:
        raise UnsupportedError("no config.json: the uniform layout keeps it so HF can be rebuilt")
    try:
        fam: str | None = family_for(index.config).name
    except CkptError:
        fam = None
    if fam == "mistral_native":
        raise UnsupportedError("a native Mistral checkpoint (params.json, consolidated.safetensors) does not hold "
                               "the HF convention; convert the repo's HF-format files")
    config = dict(index.config)
    fp8 = dequantized(index, config, outtype) if dequantize else {}
    consumed = {st.source[1] for st in fp8.values()}
    if dequantize:
        config.pop("quantization_config", None)
        if isinstance(config.get("text_config"), dict):
            config["text_config"] = {k: v for k, v in config["text_config"].items() if k != "quantization_config"}
    tensors = []
    for name, t in index.tensors.items():
        if name in consumed:
            continue
        if name in fp8:          # by the weight's (or the MXFP4 blocks') name; named as HF names it
            tensors.append(fp8[name])
            continue
        out = t.dtype
        if outtype != "auto" and t.dtype in ("F32", "F16", "BF16", "F64"):
            out = FLOAT_OUT[outtype]
        was = (origin or {}).get(name, name)
        tensors.append(raw_tensor(name, t, was) if out == t.dtype else cast_tensor(name, t, out, was))
    skip = {"config.json", "params.json", "manifest.json"}
    return Stream("safetensors", config, tensors, side_files(source, skip), fam)


def gguf_stream(source: Source, index: TensorIndex, outtype: str = "auto", vocab: bool = True,
                keep_mtp: bool = True, keep_mxfp4: bool = False) -> Stream:
    """A GGUF through the GGUF -> HF plan (kept as ``hf_plan``): HF names, HF convention,
    dequantised to ``outtype`` (auto: bf16); every tokenizer file GGUF -> HF writes. MTP layers
    left out unless ``keep_mtp``; MXFP4 experts kept as HF MXFP4 blocks with ``keep_mxfp4``.
    Each tensor's ``reads`` are the GGUF ranges its chunks read, in order (the read-ahead's plan)."""
    from .hf_config import config_from_tensors
    from .hf_data import read_tensor, tensor_chunks
    from .hf_plan import HFTensor, gguf_matrix, plan_hf
    from .tokenizer.to_hf import tokenizer_folder_files
    plan = plan_hf(index, "bf16" if outtype == "auto" else outtype, keep_mtp=keep_mtp, keep_mxfp4=keep_mxfp4)
    # settings only tensors hold (Llama 3 rope scaling from rope_freqs) go back into config.json
    config_from_tensors(plan.config, plan.derived, lambda t: read_tensor(source, t))
    files: dict[str, bytes] = {}
    if vocab:   # every tokenizer file GGUF -> HF writes (tokenizer.model too, where it is rebuilt)
        files, notes = tokenizer_folder_files(index.metadata, plan.config.get("max_position_embeddings"))
        plan.notes += notes

    def origin(t: HFTensor) -> tuple[str, ...]:
        out = []
        for p in t.pieces:
            whole = (p.r0, p.r1) == (0, gguf_matrix(p.src.shape)[0])
            out.append(p.src.name if whole else f"{p.src.name}[rows {p.r0}:{p.r1}]")
        return tuple(out)

    chunk = CHUNK_BYTES    # one size for the chunks and the reads planned from them

    def chunks_of(t: HFTensor) -> Callable[[Source], Iterator[bytes]]:
        return lambda s: tensor_chunks(s, t, chunk)

    tensors = [StreamTensor(t.entry.name, t.entry.dtype, t.entry.shape, origin(t), chunks_of(t),
                            "+".join(dict.fromkeys(p.src.dtype for p in t.pieces)),
                            tuple(r for p in t.pieces for r in piece_reads(p, chunk)))
               for t in plan.tensors]
    return Stream("gguf", plan.config, tensors, files, plan.family.name, plan.notes, plan)


def piece_reads(p: HFPiece, chunk_bytes: int) -> list[Range]:
    """The GGUF reads hf_data.piece_arrays makes for a piece, in order: a join's parts whole,
    a 1-D tensor whole, else whole row quanta of about ``chunk_bytes`` float32 output bytes."""
    from .hf_data import _row_bytes
    from .hf_pieces import gguf_matrix
    if p.join:
        return [r for jp in p.join for r in piece_reads(jp.piece, 1 << 62)]
    src = p.src
    if len(src.shape) <= 1:
        return [(src.file, src.offset, src.nbytes)]
    _, cols = gguf_matrix(src.shape)
    rb = _row_bytes(src, cols)
    q = max(p.quantum, 1)
    step = max(q, (chunk_bytes // max(cols * 4, 1)) // q * q)
    return [(src.file, src.offset + a * rb, (min(a + step, p.r1) - a) * rb) for a in range(p.r0, p.r1, step)]


def read_stream(source: Source, index: TensorIndex, outtype: str = "auto", vocab: bool = True,
                dequantize: bool = False) -> Stream:
    """The stream of any source: GGUF through its HF plan (always dequantised), safetensors (or
    ckpt) as stored, or with FP8 dequantised."""
    if index.format == "gguf":
        return gguf_stream(source, index, outtype, vocab)
    from ..sources.ckpt import canonical_names, is_ckpt, read_manifest
    origin = canonical_names(read_manifest(source)) if is_ckpt(source) else None
    stream = hf_stream(source, index, outtype, origin, dequantize)
    if not vocab:
        stream.side_files = {}
    return stream
