"""A GGUF byte-level BPE vocabulary -> tokenizer.json and tokenizer_config.json."""
from __future__ import annotations

from typing import Any

from ... import mapdata


def pretokenizer_steps(pre: str) -> tuple[list[dict], str | None] | None:
    """tokenizer.json pre_tokenizer steps and normalizer of a pre-tokenizer named in
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
            else:
                steps.append({"type": "Digits", "individual_digits": st.individual_digits})
        return steps, (None if e.normalizer in (None, "none") else e.normalizer)
    return None


def tokenizer_files(meta: dict[str, Any], max_length: int | None) -> tuple[dict[str, Any], str | None]:
    """tokenizer.json and tokenizer_config.json for a GGUF byte-level BPE vocabulary, or ({}, why not)."""
    model = meta.get("tokenizer.ggml.model")
    if model is None or model == "none":
        return {}, None
    if model != "gpt2":
        return {}, f"tokenizer model {model!r} is not converted back (only byte-level BPE \"gpt2\" is)"
    tokens, merges = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.merges")
    types = meta.get("tokenizer.ggml.token_type") or []
    if not isinstance(tokens, list) or not isinstance(merges, list):
        return {}, "the GGUF BPE vocabulary lacks tokens or merges"
    pre = meta.get("tokenizer.ggml.pre", "default")
    found = pretokenizer_steps(pre)
    if found is None:
        return {}, f"pre-tokenizer {pre!r} has no tokenizer.json definition in mappings/pretokenizers.toml"
    steps, norm = found
    added = []
    for i, tok in enumerate(tokens):
        ty = types[i] if i < len(types) else 1
        if ty in (3, 4):   # CONTROL, USER_DEFINED
            added.append({"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": ty == 4, "special": ty == 3})
    pairs = []
    for m in merges:
        a, sep, b = str(m).partition(" ")
        if not sep:
            return {}, f"malformed merge {m!r}"
        pairs.append([a, b])

    def tok_of(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    bos, eos, pad, unk = tok_of("bos"), tok_of("eos"), tok_of("padding"), tok_of("unknown")
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False)) and bos is not None
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False)) and eos is not None
    post = None
    if add_bos or add_eos:
        def seq(x):
            return ([{"SpecialToken": {"id": bos, "type_id": 0}}] if add_bos else []) + \
                   [{"Sequence": {"id": x, "type_id": 0}}] + \
                   ([{"SpecialToken": {"id": eos, "type_id": 0}}] if add_eos else [])
        specials = {t: {"id": t, "ids": [tokens.index(t)], "tokens": [t]} for t in
                    ([bos] if add_bos else []) + ([eos] if add_eos else [])}
        post = {"type": "TemplateProcessing", "single": seq("A"), "pair": seq("A") + seq("B"),
                "special_tokens": specials}
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": norm} if norm else None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": False, "vocab": {t: i for i, t in enumerate(tokens)}, "merges": pairs},
    }
    tc: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": add_bos,
                          "add_eos_token": add_eos, "clean_up_tokenization_spaces": False}
    for key, val in (("bos_token", bos), ("eos_token", eos), ("pad_token", pad), ("unk_token", unk)):
        if val is not None:
            tc[key] = val
    if max_length:
        tc["model_max_length"] = max_length
    if isinstance(meta.get("tokenizer.chat_template"), str):
        tc["chat_template"] = meta["tokenizer.chat_template"]
    return {"tokenizer.json": tj, "tokenizer_config.json": tc}, None
