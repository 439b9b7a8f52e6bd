"""The tensor index: what a checkpoint holds, read from headers only.

Plain data. Built by ``ckptkit.api.load_index`` from a Source; consumed by inference,
validation, rendering and the converters.
"""
from __future__ import annotations

import gc
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from math import prod
from operator import itemgetter
from typing import Any, NamedTuple

_freeze = False


def freeze_after_bulk() -> None:
    """In a process that is one command (the console script): what a ``bulk`` block made is
    moved out of the collector's sight when it ends (``gc.freeze``), so the collection its first
    allocation after it would start does not walk all of it once more (~25 ms after reading a
    DeepSeek-V3 index). Objects with no cycles are still freed when their last reference goes."""
    global _freeze
    _freeze = True


@contextmanager
def bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while a block makes ~100k small objects with no
    reference cycles (headers parsed into TensorInfo, names grouped for inference): otherwise
    it walks all of them again and again as they accumulate (0.25 s of a DeepSeek-V3 inspect).
    Nested blocks and a collector already off are left as they are."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            if _freeze:
                gc.freeze()
            gc.enable()


class TensorInfo(NamedTuple):  # a tuple: ~100k of them per big checkpoint, so cheap to make
    name: str
    dtype: str                 # safetensors dtype ("BF16", "F8_E4M3") or ggml type name ("Q4_K")
    shape: tuple[int, ...]     # numpy order (GGUF's reversed ne[] is turned around)
    file: str                  # path relative to the checkpoint root
    offset: int                # absolute byte offset of the data in ``file``
    nbytes: int

    @property
    def numel(self) -> int:
        return prod(self.shape)


_DTYPE_SHAPE = itemgetter(1, 2)   # TensorInfo -> (dtype, shape)
_NBYTES = itemgetter(5)


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int | None
    format: str                # "safetensors" | "gguf"
    header_bytes: int = 0      # bytes of the file before its tensor data


# The files that describe a checkpoint's tokenizer, read next to config.json when asked for.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json", "chat_template.json",
                   "chat_template.jinja")


@dataclass(frozen=True)
class Unreadable:
    """A tokenizer file that is there but cannot be read (not JSON, not UTF-8): inspect goes on
    without it and validate reports it."""
    message: str


# The things TensorIndex.per_file may hold, by name: the report's tensor rows
# (report.tensor_rows), inference's scan of the file (infer.scan.file_scan) and the count of
# each (dtype, shape) (file_census)
TENSOR_ROWS, FILE_SCAN, CENSUS = "tensor_rows", "file_scan", "census"


def file_census(tensors: list[TensorInfo]) -> bytes:
    """``TensorIndex.census`` of one file's tensors, as JSON: ``[[dtype, shape, count], ...]``."""
    return json.dumps([[d, list(s), n] for (d, s), n in Counter(map(_DTYPE_SHAPE, tensors)).items()]).encode()


def _merged_census(pieces: list[bytes], total: int) -> Counter[tuple[str, tuple[int, ...]]] | None:
    """The census of several files from their ``file_census``, in order of first appearance;
    None unless the pieces are what it writes and count ``total`` tensors in all."""
    out: Counter[tuple[str, tuple[int, ...]]] = Counter()
    try:
        for piece in pieces:
            for dtype, shape, n in json.loads(piece):
                if type(dtype) is not str or type(n) is not int or n < 1 or not set(map(type, shape)) <= {int}:
                    return None
                out[(dtype, tuple(shape))] += n
    except (ValueError, TypeError):
        return None
    return out if sum(out.values()) == total else None


@dataclass
class TensorIndex:
    format: str                                  # "safetensors" | "gguf"
    files: list[FileInfo]
    tensors: dict[str, TensorInfo]               # in file order
    config: dict[str, Any] | None = None         # config.json, when present
    shard_index: dict[str, Any] | None = None    # model.safetensors.index.json, when present
    metadata: dict[str, Any] = field(default_factory=dict)  # safetensors __metadata__ / GGUF KV
    source: str = ""                             # label of the source it came from
    # the tokenizer's small files (TOKENIZER_FILES) when they were read: JSON parsed, a .jinja
    # template as text, a file that could not be read as Unreadable
    tokenizer_files: dict[str, Any] = field(default_factory=dict)
    # virtual file -> tp_slices.Join for tensors joined from tensor-parallel slices (their
    # TensorInfo.file is that virtual file); empty for every other checkpoint
    joins: dict[str, Any] = field(default_factory=dict)
    # things made of each file's tensors as the headers were read, one piece per file of
    # ``files``, by name (header_reads.py, report.PER_FILE): what reading them all again would
    # give, made on two cores; empty when none were made
    per_file: dict[str, list[bytes]] = field(default_factory=dict, compare=False, repr=False)

    def pieces(self, name: str) -> list[bytes] | None:
        """``per_file[name]`` when it holds one piece for each of ``files``, else None."""
        got = self.per_file.get(name)
        return got if got is not None and len(got) == len(self.files) else None

    def census(self) -> Counter[tuple[str, tuple[int, ...]]]:
        """How many tensors have each (dtype, shape), in order of first appearance: 92k tensors
        are a few dozen kinds, counted in C, so totals cost per kind, not per tensor."""
        pieces = self.pieces(CENSUS)     # counted file by file as the headers were read
        merged = _merged_census(pieces, len(self.tensors)) if pieces is not None else None
        return merged if merged is not None else Counter(map(_DTYPE_SHAPE, self.tensors.values()))

    @property
    def total_parameters(self) -> int:
        return sum(n * prod(shape) for (_, shape), n in self.census().items())

    @property
    def total_bytes(self) -> int:
        return sum(map(_NBYTES, self.tensors.values()))

    def parameters_by_dtype(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (dtype, shape), n in self.census().items():
            out[dtype] = out.get(dtype, 0) + n * prod(shape)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def by_file(self) -> dict[str, list[TensorInfo]]:
        out: dict[str, list[TensorInfo]] = {f.name: [] for f in self.files}
        for t in self.tensors.values():
            out.setdefault(t.file, []).append(t)
        return out


# ---- collapsing names by pattern -------------------------------------------------------------

_NUM = re.compile(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)")


@dataclass
class TensorGroup:
    pattern: str               # "model.layers.{0..60}.mlp.experts.{0..255}.down_proj.weight"
    template: str              # "model.layers.{}.mlp.experts.{}.down_proj.weight"
    shape: tuple[int, ...]
    dtype: str
    count: int
    numel: int                 # parameters in the whole group
    nbytes: int
    first: str                 # first member's name


def span_text(values: Iterable[int]) -> str:
    """{0,1,2,5,7,8} -> "0..2,5,7..8" ("none" when empty)."""
    vals = sorted(set(values))
    if not vals:
        return "none"
    parts: list[str] = []
    start = prev = vals[0]
    for v in vals[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}..{prev}")
        if v is not None:
            start = prev = v
    return ",".join(parts)


def _ranges(values: Iterable[int]) -> str:
    return "{" + span_text(values) + "}"


def split_numbers(name: str) -> tuple[str, tuple[int, ...]]:
    """"model.layers.3.mlp.experts.7.w1" -> ("model.layers.{}.mlp.experts.{}.w1", (3, 7))."""
    nums: list[int] = []

    def sub(m: re.Match) -> str:
        nums.append(int(m.group(0)))
        return "{}"

    return _NUM.sub(sub, name), tuple(nums)


def group_tensors(tensors: Iterable[TensorInfo]) -> list[TensorGroup]:
    """Collapse tensors that differ only in their numeric path parts (layers, experts) and
    share shape and dtype, in order of first appearance."""
    groups: dict[tuple, dict] = {}
    for t in tensors:
        template, nums = split_numbers(t.name)
        key = (template, t.shape, t.dtype)
        g = groups.get(key)
        if g is None:
            g = groups[key] = {"slots": [set() for _ in nums], "count": 0, "numel": 0,
                               "nbytes": 0, "first": t.name}
        for slot, n in zip(g["slots"], nums, strict=True):
            slot.add(n)
        g["count"] += 1
        g["numel"] += t.numel
        g["nbytes"] += t.nbytes
    out = []
    for (template, shape, dtype), g in groups.items():
        pattern = template
        for slot in g["slots"]:
            rendered = str(next(iter(slot))) if len(slot) == 1 else _ranges(slot)
            pattern = pattern.replace("{}", rendered.replace("{", "\0").replace("}", "\1"), 1)
        pattern = pattern.replace("\0", "{").replace("\1", "}")
        out.append(TensorGroup(pattern, template, shape, dtype, g["count"], g["numel"],
                               g["nbytes"], g["first"]))
    return out
