"""GGUF Unigram (``tokenizer.ggml.model = "t5"``) -> tokenizer.json. llama.cpp normalises with the
SentencePiece compiled character map the GGUF carries (``tokenizer.ggml.precompiled_charsmap``,
the same bytes tokenizers' Precompiled normaliser reads), then writes spaces as "▁": with
``remove_extra_whitespaces`` it drops leading, trailing and repeated spaces and puts "▁" before
every word, first included; otherwise every space becomes "▁" and ``add_space_prefix`` puts one
in front. The Viterbi search over the pieces' scores, with an unknown piece scoring 10 below the
lowest, is tokenizers' Unigram model (src/llama-vocab.cpp, llm_tokenizer_ugm_session). The same
pieces and map make a SentencePiece Unigram tokenizer.model (to_hf_spm_model)."""
from __future__ import annotations

import base64
from typing import Any

from ...errors import UnsupportedError
from .to_hf_spm_model import spm_model_bytes
from .to_hf_vocab import BYTE, GGUFVocab, added_tokens, post_processor, tokenizer_config
from .vocab import SPM_SPACE


def ugm_files(v: GGUFVocab, max_length: int | None) -> dict[str, Any]:
    if v.scores is None:
        raise UnsupportedError("the Unigram vocabulary has no tokenizer.ggml.scores")
    if "unk" not in v.ids:
        raise UnsupportedError("the Unigram vocabulary names no unknown token")
    charsmap = v.meta.get("tokenizer.ggml.precompiled_charsmap")
    steps: list[dict] = []
    blob = b""
    if charsmap:
        if not isinstance(charsmap, list) or not all(isinstance(b, int) for b in charsmap):
            raise UnsupportedError("tokenizer.ggml.precompiled_charsmap is not a byte array")
        blob = bytes(b & 0xFF for b in charsmap)
        steps.append({"type": "Precompiled", "precompiled_charsmap": base64.b64encode(blob).decode()})
    space = {"type": "Replace", "pattern": {"String": " "}, "content": SPM_SPACE}
    prefix = {"type": "Prepend", "prepend": SPM_SPACE}
    if v.flag("remove_extra_whitespaces", False):
        steps += [{"type": "Replace", "pattern": {"Regex": " +"}, "content": " "},
                  {"type": "Strip", "strip_left": True, "strip_right": True}, space, prefix]
    else:
        steps += [space] + ([prefix] if v.flag("add_space_prefix", True) else [])
    add_bos = v.flag("add_bos_token", False) and "bos" in v.ids
    add_eos = v.flag("add_eos_token", True) and "eos" in v.ids
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens(v),
        "normalizer": {"type": "Sequence", "normalizers": steps}, "pre_tokenizer": None,
        "post_processor": post_processor(v, add_bos, add_eos),
        "decoder": {"type": "Metaspace", "replacement": SPM_SPACE, "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": v.ids["unk"], "byte_fallback": BYTE in v.types,
                  "vocab": [[t, s] for t, s in zip(v.tokens, v.scores, strict=True)]},
    }
    files: dict[str, Any] = {"tokenizer.json": tj,
                             "tokenizer_config.json": tokenizer_config(v, add_bos, add_eos, max_length)}
    merge, dummy = v.flag("remove_extra_whitespaces", False), v.flag("add_space_prefix", True)
    # llama.cpp puts "▁" before the first word when merging spaces even without add_space_prefix;
    # SentencePiece does not: tokenizer.model only where the two agree
    if dummy or not merge:
        try:
            files["tokenizer.model"] = spm_model_bytes(v, dummy, unigram=True, charsmap=blob,
                                                       remove_extra_whitespaces=merge)
        except UnsupportedError:
            pass
    return files
