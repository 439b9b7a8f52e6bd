"""GGUF Gemma 4 (``tokenizer.ggml.model = "gemma4"``) -> tokenizer.json. llama.cpp reads it as a
BPE over raw UTF-8 (no byte-level mapping) whose spaces are written "▁", split only into runs of
newlines and runs of anything else (pre-type GEMMA4), with <0xXX> byte fallback, always adding
BOS (src/llama-vocab.cpp): a Replace normalizer, that Split, and a byte-fallback BPE do the same."""
from __future__ import annotations

from typing import Any

from ...errors import UnsupportedError
from .to_hf_bpe import split_merges
from .to_hf_vocab import BYTE, GGUFVocab, added_tokens, post_processor, tokenizer_config
from .vocab import SPM_SPACE

# the pre-tokenizer llama.cpp applies to Gemma 4 (LLAMA_VOCAB_PRE_TYPE_GEMMA4); to_gguf recognises it
GEMMA4_SPLIT = "[^\\n]+|[\\n]+"


def gemma4_files(v: GGUFVocab, max_length: int | None) -> dict[str, Any]:
    if v.merges is None:
        raise UnsupportedError("the gemma4 vocabulary has no tokenizer.ggml.merges")
    if v.flag("add_space_prefix", False):
        raise UnsupportedError("a gemma4 vocabulary with add_space_prefix: llama.cpp ignores it for BPE")
    add_eos = v.flag("add_eos_token", False) and "eos" in v.ids
    add_bos = "bos" in v.ids        # llama.cpp adds BOS to Gemma 4 whatever the file says
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens(v),
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": SPM_SPACE},
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": GEMMA4_SPLIT}, "behavior": "Isolated",
                          "invert": False},
        "post_processor": post_processor(v, add_bos, add_eos),
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPM_SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": v.text("unk"), "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": BYTE in v.types,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(v.tokens)},
                  "merges": split_merges(v.merges)},
    }
    return {"tokenizer.json": tj, "tokenizer_config.json": tokenizer_config(v, add_bos, add_eos, max_length)}
