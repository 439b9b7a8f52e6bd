"""GGUF byte-level BPE (``tokenizer.ggml.model = "gpt2"``) -> tokenizer.json: the pre-tokenizer
rebuilt from ``tokenizer.ggml.pre`` (mappings/pretokenizers.toml), the merges, ``ignore_merges``
where the family's tokenizer has it."""
from __future__ import annotations

from typing import Any

from ... import mapdata
from ...errors import UnsupportedError
from .to_hf_vocab import BPE_ADD_BOS_BY_DEFAULT, GGUFVocab, added_tokens, post_processor, tokenizer_config


def pretokenizer_steps(pre: str) -> tuple[list[dict], str | None, bool] | None:
    """tokenizer.json pre_tokenizer steps, normalizer and ignore_merges of a pre-tokenizer named in
    mappings/pretokenizers.toml."""
    for e in mapdata.pretokenizers().entries:
        if e.name != pre:
            continue
        steps: list[dict] = []
        for st in e.steps:
            if st.type == "Split":
                steps.append({"type": "Split", "pattern": {"Regex": st.regex},
                              "behavior": st.behavior, "invert": st.invert})
            elif st.type == "ByteLevel":
                steps.append({"type": "ByteLevel", "add_prefix_space": st.add_prefix_space,
                              "trim_offsets": True, "use_regex": st.use_regex})
            elif st.type == "Digits":
                steps.append({"type": "Digits", "individual_digits": st.individual_digits})
            elif st.type == "Punctuation":
                steps.append({"type": "Punctuation", "behavior": st.as_dict().get("behavior", "Isolated")})
            else:
                raise UnsupportedError(f"pre-tokenizer {pre!r}: a {st.type} step is not written back")
        norm = None if e.normalizer in (None, "none") else e.normalizer
        return steps, norm, bool(getattr(e, "ignore_merges", False))
    return None


def split_merges(merges: list[str]) -> list[list[str]]:
    """"a b" -> ["a", "b"], split as llama.cpp does: at the first space after the first character."""
    out = []
    for m in merges:
        k = m.find(" ", 1)
        if k < 0:
            raise UnsupportedError(f"malformed merge {m[:40]!r} (no space)")
        out.append([m[:k], m[k + 1:]])
    return out


def bpe_files(v: GGUFVocab, max_length: int | None) -> dict[str, Any]:
    if v.merges is None:
        raise UnsupportedError("the byte-level BPE vocabulary has no tokenizer.ggml.merges")
    found = pretokenizer_steps(v.pre)
    if found is None:
        raise UnsupportedError(f"pre-tokenizer {v.pre!r} has no tokenizer.json definition in "
                               f"mappings/pretokenizers.toml")
    steps, norm, ignore_merges = found
    add_bos = v.flag("add_bos_token", v.pre in BPE_ADD_BOS_BY_DEFAULT) and "bos" in v.ids
    add_eos = v.flag("add_eos_token", False) and "eos" in v.ids
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens(v),
        "normalizer": {"type": norm} if norm else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps},
        "post_processor": post_processor(v, add_bos, add_eos),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": ignore_merges, "vocab": {t: i for i, t in enumerate(v.tokens)},
                  "merges": split_merges(v.merges)},
    }
    return {"tokenizer.json": tj, "tokenizer_config.json": tokenizer_config(v, add_bos, add_eos, max_length)}
