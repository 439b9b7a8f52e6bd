"""What a file's name says: pickles ckptkit refuses to open, and the parts of a split GGUF."""
from __future__ import annotations

import re
from typing import NamedTuple

# torch.save / pickle files: loading one can run code, so ckptkit lists them but never opens them
SHARD_INDEX = "model.safetensors.index.json"   # the shard index of a sharded HF checkpoint
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# gguf-split's part names: <stem>-00001-of-00003.gguf
_SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def is_pickle(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)


class SplitPart(NamedTuple):
    stem: str       # the name without "-00001-of-00003.gguf"
    no: int         # 1-based part number
    total: int      # parts in the set


def parse_split_gguf(name: str) -> SplitPart | None:
    """The part a split-GGUF file name says it is, or None for any other name."""
    m = _SPLIT_GGUF.match(name)
    return SplitPart(m["stem"], int(m["no"]), int(m["count"])) if m else None


def split_gguf_name(stem: str, no: int, count: int) -> str:
    """The file name of part ``no`` (1-based) of ``count``: what llama.cpp's gguf-split writes."""
    return f"{stem}-{no:05d}-of-{count:05d}.gguf"
