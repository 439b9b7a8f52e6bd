"""GGUF -> Hugging Face safetensors, streamed: the HF -> GGUF mapping data read backwards.

The GGUF architecture picks a target (mappings/hf_configs.toml: transformers class, config.json
keys as expressions over the GGUF metadata, HF tensor names); tensor names go back through the
canonical role tables (mappings/roles.toml) and the conversion family's [transforms] are
inverted (mappings/convert/): hf_plan.py. The conversion is the GGUF reader's canonical stream
(stream.gguf_stream) written by the HF writer (write_hf.py), as ckpt -> HF and HF -> HF are:
dequantised tensor by tensor, chunk by chunk, into shards in a temporary folder that is renamed
to the output only when complete."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..api import load_index, open_source
from ..sources.base import Counted
from .hf_config import build_config, flat_config, metadata_names, pick_target, targets
from .hf_data import CHUNK_BYTES, dequantize_rows, encode, piece_arrays, piece_chunks, tensor_chunks
from .hf_plan import OUTTYPES, HFPiece, HFPlan, HFTensor, InverseOp, gguf_matrix, inverse_ops, plan_hf, refuse_plan
from .stream import gguf_stream, reading
from .tokenizer.to_hf import tokenizer_files
from .transforms import INVERSE_OPS as OPS
from .transforms import unpermute_rope
from .vocab_only import is_vocab_only, write_tokenizer_folder
from .write_hf import DEFAULT_SHARD_SIZE, write_hf_folder

# the names this module held before its parts moved out, for existing callers
__all__ = [
    "CHUNK_BYTES", "DEFAULT_SHARD_SIZE", "OPS", "OUTTYPES", "HFPiece", "HFPlan", "HFResult", "HFTensor", "InverseOp",
    "build_config", "convert_to_hf", "dequantize_rows", "encode", "flat_config", "gguf_matrix", "inverse_ops",
    "metadata_names", "pick_target", "piece_arrays", "piece_chunks", "plan_hf", "refuse_plan", "targets",
    "tensor_chunks", "tokenizer_files", "unpermute_rope",
]


@dataclass
class HFResult:
    plan: HFPlan | None     # None: a vocabulary-only GGUF, converted to a tokenizer-only folder
    out_dir: Path | None
    files: list[str]
    notes: list[str]


def convert_to_hf(spec: str, out_dir: str | os.PathLike, outtype: str = "bf16",
                  shard_size: int = DEFAULT_SHARD_SIZE, revision: str | None = None, vocab: bool = True,
                  dry_run: bool = False, on_bytes: Callable[[int], None] | None = None,
                  on_plan: Callable[[HFPlan], None] | None = None, keep_mtp: bool = True,
                  keep_mxfp4: bool = False, on_fetched: Callable[[int], None] | None = None) -> HFResult:
    """Convert the GGUF model at ``spec`` into a Hugging Face folder at ``out_dir``; MTP layers
    kept unless ``keep_mtp`` is false, MXFP4 experts dequantised unless ``keep_mxfp4``. The one
    engine: the GGUF reader's stream (stream.gguf_stream) into the HF writer (write_hf), read
    from the Hub through the read-ahead and checked against the Hub's hashes before the folder
    is named. ``on_fetched`` is told the bytes of each read of tensor data from the source."""
    with open_source(spec, revision) as source:
        index = load_index(source)
        if is_vocab_only(index):
            folder, names, notes = write_tokenizer_folder(index, out_dir, dry_run)
            return HFResult(None, folder, names, notes)
        stream = gguf_stream(source, index, outtype, vocab, keep_mtp=keep_mtp, keep_mxfp4=keep_mxfp4)
        plan = stream.hf_plan
        assert plan is not None
        if on_plan:
            on_plan(plan)
        if dry_run:
            return HFResult(plan, None, [], plan.notes)
        with reading(Counted(source, on_fetched) if on_fetched else source, stream) as src:
            written = write_hf_folder(stream, src, out_dir, shard_size, on_bytes)
        return HFResult(plan, Path(out_dir), written, plan.notes)
