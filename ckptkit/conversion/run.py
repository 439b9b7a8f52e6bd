"""Execute a plan: one streaming pass, tensor by tensor, chunk by chunk, in file order.

Reading, transforming and encoding a chunk are a job; with ``threads`` > 1 jobs run in a
pool with a bounded look-ahead, and the writer takes their results strictly in order. Memory
is bounded by (look-ahead + 1) chunks, whatever the model's size."""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..atomic import Chunk
from ..dtypes import GGML_TYPES
from ..formats.gguf_write import TensorSlot, write_gguf
from ..index import TensorInfo
from ..journal import Journal, resumable
from ..sources.base import Counted, Source
from ..sources.readahead import ReadAhead
from ..tensordata import bf16_to_f16, decode, row_nbytes
from .plan import OutTensor, Piece, Plan, matrix_shape
from .transforms import GENERATORS, LAYOUT_OPS, OPS, ROW_OPS, dequant_fp8_blocks, mxfp4_dequant, mxfp4_to_ggml

# Source bytes per job. Small chunks keep numpy's temporaries (float32: 2-4x the source) under
# glibc's mmap threshold, so their memory is reused instead of page-faulted in afresh per chunk:
# 0.5 GB Llama bf16 -> f16, 2 threads: 32 MB chunks 3.0 s CPU, 436 MB peak; 4 MB 1.9 s, 91 MB.
CHUNK_BYTES = 4 << 20


def encode(x: np.ndarray, ggml_type: int, cols: int) -> Chunk:
    """Values (C order) as bytes of a ggml type; ``cols`` is the output's row length."""
    name = GGML_TYPES[ggml_type][0]
    x = np.asarray(x, dtype=np.float32)
    if name == "F32":
        return _raw(x)
    if name == "F16":
        return _raw(x.astype(np.float16))
    from gguf import GGMLQuantizationType  # gguf-py's quantizers (its import costs ~50 ms)
    from gguf.quants import quantize
    return _raw(quantize(x.reshape(-1, cols), GGMLQuantizationType(ggml_type)))


def _raw(a: np.ndarray) -> memoryview:
    """The array's bytes without the extra copy ``tobytes()`` makes (a bytes-like object)."""
    return np.ascontiguousarray(a).data.cast("B")


def _passthrough(piece: Piece, slot: TensorSlot) -> bool:
    return not piece.ops and piece.scale is None and piece.src.dtype == GGML_TYPES[slot.ggml_type][0]


Range = tuple[str, int, int]  # file, offset, length


@dataclass(frozen=True)
class Job:
    """One chunk of output: the source ranges it reads, and the pure function making the chunk
    from their bytes (so a read-ahead can plan every read before the first one)."""

    reads: tuple[Range, ...]
    make: Callable[..., Chunk]

    def __call__(self, read: Callable[[str, int, int], Chunk]) -> Chunk:
        return self.make(*(read(*r) for r in self.reads))


def piece_jobs(piece: Piece, slot: TensorSlot, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Job]:
    """Jobs that together produce a piece's output bytes, in order."""
    if piece.gen is not None:      # computed from the config (e.g. rope_freqs): one small job
        name, *args = piece.gen
        yield Job((), partial(encode, GENERATORS[name](*args), slot.ggml_type,
                              slot.shape[-1] if slot.shape else 1))
        return
    if piece.mxfp4_scales is not None:
        yield from _mxfp4_jobs(piece, piece.mxfp4_scales, slot, chunk_bytes)
        return
    src = piece.src
    rows, cols = matrix_shape(src.shape)
    rb = src.nbytes // max(rows, 1)  # one row of the matrix view (all leading axes folded)
    q = max(piece.quantum, 1)
    step = max(q, (chunk_bytes // max(rb, 1)) // q * q)
    out_cols = slot.shape[-1] if slot.shape else 1
    passthrough = _passthrough(piece, slot)
    for a in range(piece.r0, piece.r1, step):
        b = min(a + step, piece.r1)
        reads: tuple[Range, ...] = ((src.file, src.offset + a * rb, (b - a) * rb),)
        if piece.scale is not None:
            br, _ = piece.scale_block
            s0, s1 = a // br, -(-b // br)
            srow = row_nbytes(piece.scale)
            reads += ((piece.scale.file, piece.scale.offset + s0 * srow, (s1 - s0) * srow),)
        yield Job(reads, partial(_job, piece, slot, a, b, cols, out_cols, passthrough))


def _job(piece: Piece, slot: TensorSlot, a: int, b: int, cols: int, out_cols: int, passthrough: bool,
         raw: Chunk, scale_raw: Chunk | None = None) -> Chunk:
    """Rows [a, b) of a piece from their bytes (and their scales' bytes, for block-scaled FP8)."""
    src = piece.src
    if passthrough:
        return raw
    if (src.dtype == "BF16" and GGML_TYPES[slot.ggml_type][0] == "F16" and piece.scale is None
            and all(op[0] in LAYOUT_OPS for op in piece.ops)):
        # the commonest conversion, 5x faster than via float32; moving values is dtype-blind
        x = bf16_to_f16(raw).reshape(b - a, cols)
        for name, *args in piece.ops:
            x = OPS[name](x, *args)
        return _raw(x)
    x = decode(raw, src.dtype, (b - a, cols)).astype(np.float32, copy=False)
    if piece.scale is not None and scale_raw is not None:
        br, bc = piece.scale_block
        s0, s1 = a // br, -(-b // br)
        s = decode(scale_raw, piece.scale.dtype,
                   (s1 - s0, matrix_shape(piece.scale.shape)[1])).astype(np.float32)
        x = dequant_fp8_blocks(x, s, a, br, bc)
    for name, *args in piece.ops:
        x = OPS[name](x, *args)
    return encode(x, slot.ggml_type, out_cols)


def _mxfp4_jobs(piece: Piece, sc: TensorInfo, slot: TensorSlot, chunk_bytes: int) -> Iterator[Job]:
    """Jobs for a piece of MXFP4 rows: blocks and exponents read together, row by row."""
    groups = piece.src.shape[-2]
    q = max(piece.quantum, 1)
    step = max(q, (chunk_bytes // (groups * 16)) // q * q)
    out_cols = slot.shape[-1]
    src = piece.src
    for a in range(piece.r0, piece.r1, step):
        b = min(a + step, piece.r1)
        reads = ((src.file, src.offset + a * groups * 16, (b - a) * groups * 16),
                 (sc.file, sc.offset + a * groups, (b - a) * groups))
        yield Job(reads, partial(_mxfp4_job, piece, slot, a, b, groups, out_cols))


def _mxfp4_job(piece: Piece, slot: TensorSlot, a: int, b: int, groups: int, out_cols: int,
               blocks_raw: Chunk, scales_raw: Chunk) -> Chunk:
    """Rows [a, b) of an MXFP4 piece from its blocks' and exponents' bytes."""
    blocks = np.frombuffer(blocks_raw, dtype=np.uint8).reshape(b - a, groups, 16)
    scales = np.frombuffer(scales_raw, dtype=np.uint8).reshape(b - a, groups)
    ops = list(piece.ops)
    while ops and ops[0][0] in ROW_OPS:     # row selections apply to the packed bytes as they are
        name, *args = ops.pop(0)
        blocks, scales = OPS[name](blocks, *args), OPS[name](scales, *args)
    if GGML_TYPES[slot.ggml_type][0] == "MXFP4":
        return mxfp4_to_ggml(blocks, scales).tobytes()
    x = mxfp4_dequant(blocks, scales)
    for name, *args in ops:
        x = OPS[name](x, *args)
    return encode(x, slot.ggml_type, out_cols)


def tensor_jobs(out: OutTensor, chunk_bytes: int = CHUNK_BYTES) -> list[Job]:
    return [j for p in out.pieces for j in piece_jobs(p, out.slot, chunk_bytes)]


class _Ordered:
    """The chunks of ``jobs`` in order, made ``threads`` at a time with one more queued. The first
    ones are started at once, so they are being made while the writer encodes the file's header."""

    def __init__(self, jobs: Iterable[Job], read: Callable[[str, int, int], Chunk], threads: int):
        self._jobs, self._read, self._threads = iter(jobs), read, threads
        self._pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        self._pending: deque[Future[Chunk]] = deque()
        self._fill()

    def _fill(self) -> None:
        while self._pool is not None and len(self._pending) <= self._threads:
            job = next(self._jobs, None)
            if job is None:
                return
            self._pending.append(self._pool.submit(job, self._read))

    def __iter__(self) -> Iterator[Chunk]:
        return self

    def __next__(self) -> Chunk:
        if self._pool is None:
            return next(self._jobs)(self._read)
        if not self._pending:
            raise StopIteration
        chunk = self._pending.popleft().result()
        self._fill()
        return chunk

    def close(self) -> None:
        """Jobs not started are dropped; running ones are waited for."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def execute(plan: Plan, source: Source, out_path: str | os.PathLike, threads: int = 1,
            split_max_bytes: int | None = None, on_bytes: Callable[[int], None] | None = None,
            chunk_bytes: int = CHUNK_BYTES, read_ahead: bool = False, connections: int | None = None,
            journal: Journal | None = None, on_fetched: Callable[[int], None] | None = None) -> list[Path]:
    """Write the GGUF file(s) of ``plan`` reading tensor data from ``source``. With
    ``read_ahead`` (a remote source) every read is planned first and fetched once, in large
    ranges, ``connections`` at a time (None: chosen from the ranges; see sources/readahead.py);
    the output is committed only after every range has arrived and passed its checks. With a
    ``journal`` the tensors an earlier, interrupted run completed are kept and neither read nor
    computed again. ``on_fetched`` is told the bytes of each read from ``source`` as it completes
    (from the reading threads), including ranges the read-ahead fetches again."""
    source = Counted(source, on_fetched)
    skip = journal.tensors if journal is not None else 0
    # One flat job stream keeps the pool busy across tensor boundaries; the writer regroups it.
    counts: list[int] = []
    all_jobs: list[Job] = []
    for t in plan.tensors[skip:]:
        js = tensor_jobs(t, chunk_bytes)
        counts.append(len(js))
        all_jobs.extend(js)
    # a fresh run fetches every byte of each file it reads, so each is checked against its
    # published hash; a resumed run fetches only what is left and checks the files it reads whole
    ahead = ReadAhead(source, [r for j in all_jobs for r in j.reads], connections,
                      whole=skip == 0) if read_ahead else None
    with ahead or nullcontext(), resumable(journal) if journal is not None else nullcontext(), \
            ExitStack() as stack:  # the stream's pool closes first: its jobs read through ``ahead``
        stream = stack.enter_context(closing(_Ordered(all_jobs, ahead.view if ahead is not None else source.read,
                                                      threads)))

        def chunks(i: int) -> Iterator[Chunk]:
            if i < skip:  # on disk already: the writer passes over it
                yield from _zeros(plan.tensors[i].slot.nbytes)
                return
            for _ in range(counts[i - skip]):
                yield next(stream)
            if i == len(plan.tensors) - 1:  # before the writer commits: no unchecked bytes get a final name
                (ahead or source).finish()
            if journal is not None:
                journal.checkpoint(i + 1)

        def per_tensor() -> Iterator[tuple[TensorSlot, Iterator[Chunk]]]:
            for i, t in enumerate(plan.tensors):
                yield t.slot, chunks(i)

        return write_gguf(out_path, plan.kvs, plan.slots, per_tensor(), split_max_bytes=split_max_bytes,
                          on_bytes=on_bytes)


_ZEROS = bytes(CHUNK_BYTES)


def _zeros(n: int) -> Iterator[Chunk]:
    """``n`` bytes standing for data already written (dropped by the resumable file)."""
    view = memoryview(_ZEROS)
    for a in range(0, n, len(_ZEROS)):
        yield view[: min(len(_ZEROS), n - a)]
