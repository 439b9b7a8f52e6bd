"""Whether a stored output head that config.json ties to the embedding is a copy of it.

Headers cannot tell a harmless copy (Qwen3-0.6B stores lm_head.weight equal to its embedding)
from a trained head a loader would throw away, so a few ranges of both are read and compared."""
from __future__ import annotations

from ..errors import CkptError
from ..index import TensorIndex
from ..infer import Inference
from ..infer.embeddings import ignored_head
from ..infer.fact import Hints
from ..sources.base import Source

SAMPLE = 4096            # bytes per sampled range; three ranges: start, middle, end


def sample_offsets(nbytes: int, sample: int = SAMPLE) -> list[tuple[int, int]]:
    """(offset, length) of the ranges compared in a tensor of ``nbytes`` bytes."""
    starts = {0, max(0, nbytes // 2 - sample // 2), max(0, nbytes - sample)}
    return [(s, min(sample, nbytes - s)) for s in sorted(starts) if nbytes - s > 0]


def stored_head_is_copy(source: Source, index: TensorIndex, inf: Inference) -> bool | None:
    """True when the sampled bytes of the stored head equal the embedding's, False when they
    differ, None when there is no such head or it cannot be compared byte for byte."""
    if inf.scan is None:
        return None
    found = ignored_head(inf.scan, Hints(index.config, index.metadata, index.format))
    emb = inf.scan.globals.get("token_embd.weight")
    if found is None or emb is None:
        return None
    h, e = index.tensors.get(found[0].name), index.tensors.get(emb.name)
    if h is None or e is None or h.dtype != e.dtype or h.nbytes != e.nbytes:
        return None
    try:
        for off, n in sample_offsets(h.nbytes):
            if source.read(h.file, h.offset + off, n) != source.read(e.file, e.offset + off, n):
                return False
    except CkptError:         # unreadable data is for other checks to report; here: unknown
        return None
    return True
