"""A checkpoint's tokenizer files -> the GGUF ``tokenizer.*`` metadata llama.cpp needs: the reader
that fits the files (bpe, sentencepiece, tiktoken) makes the vocabulary; the special tokens and
the chat template are added here.

Facts (key names, token types, llama.cpp's expectations): gguf-py's constants.py and vocab.py,
llama.cpp's src/llama-vocab.cpp.
"""
from __future__ import annotations

from typing import Any

from ...errors import FormatError, UnsupportedError
from ...formats.gguf_write import KV, VT, kv
from ...sources.base import Source
from .bpe import bpe_vocab
from .gemma4 import gemma4_vocab, is_gemma4
from .pretokenizer import check_pre_name, is_sentencepiece_style
from .sentencepiece import apply_added_tokens, hf_spm_vocab, parse_sentencepiece, spm_vocab
from .tiktoken import tiktoken_vocab
from .unigram import is_t5_style, t5_vocab
from .vocab import Vocab, added_tokens, read_json
from .wordpiece import is_wordpiece, normalizer_kvs, wordpiece_vocab

_SPECIAL_KINDS = ("bos", "eos", "unk", "pad")
_KEY_OF_KIND = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
                "pad": "padding_token_id", "sep": "seperator_token_id", "cls": "cls_token_id",
                "mask": "mask_token_id"}
_BERT_KINDS = ("sep", "cls", "mask")    # written for WordPiece vocabularies (gguf-py's spelling "seperator")


def has_tokenizer(source: Source) -> bool:
    """Whether the checkpoint carries a tokenizer ckptkit can read."""
    files = source.files()
    return any(name in files for name in ("tokenizer.json", "tokenizer.model", "tiktoken.model"))


def tokenizer_kvs(source: Source, config: dict | None, vocab_size: int,
                  pre_override: str | None = None) -> list[KV]:
    """The ``tokenizer.*`` KVs for a model with ``vocab_size`` embedding rows."""
    files = source.files()
    if config is None and "config.json" in files:
        config = read_json(source, "config.json")
    tok_config = read_json(source, "tokenizer_config.json") if "tokenizer_config.json" in files else {}
    if not isinstance(tok_config, dict):
        raise FormatError("not a JSON object", "tokenizer_config.json")
    if config is not None and not isinstance(config, dict):
        raise FormatError("not a JSON object", "config.json")
    if pre_override is not None:
        check_pre_name(pre_override)
    tj = read_json(source, "tokenizer.json") if "tokenizer.json" in files else None
    if tj is not None and not isinstance(tj, dict):
        raise FormatError("not a JSON object", "tokenizer.json")
    spm = None
    if "tokenizer.model" in files:
        data = source.read_file("tokenizer.model")
        if data[:1] == b"\x0a":  # field 1, length-delimited: a SentencePiece ModelProto
            spm = parse_sentencepiece(data, "tokenizer.model")

    extra: list[KV] = []       # keys of the tokenizer model's own (t5: the normaliser)
    if tj is not None and is_wordpiece(tj):
        vocab = wordpiece_vocab(tj, vocab_size)
    elif tj is not None and is_t5_style(tj):
        vocab, extra = t5_vocab(tj, vocab_size)
        apply_added_tokens(vocab, source, tj, tok_config, vocab_size)
    elif tj is not None and spm is None and is_gemma4(tj, config):
        vocab = gemma4_vocab(tj, vocab_size)
        apply_added_tokens(vocab, source, tj, tok_config, vocab_size)
    elif tj is not None and not is_sentencepiece_style(tj):
        vocab = bpe_vocab(tj, config, vocab_size, pre_override)
    elif spm is not None:
        vocab = spm_vocab(spm, vocab_size)
        apply_added_tokens(vocab, source, tj, tok_config, vocab_size)
    elif tj is not None:
        vocab = hf_spm_vocab(tj, vocab_size)
        apply_added_tokens(vocab, source, tj, tok_config, vocab_size)
    elif "tiktoken.model" in files:
        vocab = tiktoken_vocab(source, tok_config, vocab_size, pre_override, config)
    else:
        raise UnsupportedError("no tokenizer.json, SentencePiece tokenizer.model or tiktoken.model "
                               "found", source.label)
    if pre_override is not None and vocab.model == "gpt2":
        vocab.pre = pre_override

    out = [kv("tokenizer.ggml.model", vocab.model), kv("tokenizer.ggml.pre", vocab.pre),
           kv("tokenizer.ggml.tokens", vocab.tokens, VT.ARRAY, VT.STRING)]
    if vocab.scores is not None:
        out.append(kv("tokenizer.ggml.scores", vocab.scores, VT.ARRAY, VT.FLOAT32))
    out.append(kv("tokenizer.ggml.token_type", vocab.types, VT.ARRAY, VT.INT32))
    if vocab.merges is not None:
        out.append(kv("tokenizer.ggml.merges", vocab.merges, VT.ARRAY, VT.STRING))
    if vocab.add_space_prefix is not None:
        out.append(kv("tokenizer.ggml.add_space_prefix", vocab.add_space_prefix))
    if vocab.model == "bert" and tj is not None:
        out += normalizer_kvs(tj)
    out += extra

    ids, adds = special_tokens(source, tj, tok_config, config, vocab)
    if vocab.model == "bert" and "cls" in ids:
        ids.setdefault("bos", ids["cls"])       # llama.cpp's WordPiece starts a sequence with BOS
    for kind in _SPECIAL_KINDS + (_BERT_KINDS if vocab.model == "bert" else ()):
        if kind in ids:
            out.append(kv(f"tokenizer.ggml.{_KEY_OF_KIND[kind]}", ids[kind], VT.UINT32))
    for kind in ("bos", "eos"):
        if kind in adds:
            out.append(kv(f"tokenizer.ggml.add_{kind}_token", adds[kind]))
    out += chat_template_kvs(source, tok_config)
    return out


# ---- special tokens and chat template ----------------------------------------------------------

def _content(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and isinstance(entry.get("content"), str):
        return entry["content"]
    return None


def special_tokens(source: Source, tj: dict | None, tok_config: dict, config: dict | None,
                   vocab: Vocab) -> tuple[dict[str, int], dict[str, bool]]:
    """({kind: token id}, {"bos"/"eos": add it?}) from, in order of trust: tokenizer_config.json,
    special_tokens_map.json, the tokenizer's post-processor, config.json,
    generation_config.json, the tokenizer file itself."""
    files = source.files()
    stmap = read_json(source, "special_tokens_map.json") if "special_tokens_map.json" in files else {}
    gen = read_json(source, "generation_config.json") if "generation_config.json" in files else {}
    lookup: dict[str, int] = {}
    for i, t in enumerate(vocab.tokens):
        lookup.setdefault(t, i)
    for a in added_tokens(tj):
        lookup[a["content"]] = a["id"]

    ids: dict[str, int] = {}
    names = {k: f"{k}_token" for k in _SPECIAL_KINDS + _BERT_KINDS}
    for kind, name in names.items():
        for src in (tok_config, stmap):
            text = _content(src.get(name)) if isinstance(src, dict) else None
            if text is not None and text in lookup:
                ids[kind] = lookup[text]
                break

    adds: dict[str, bool] = {}
    for kind in ("bos", "eos"):
        if isinstance(tok_config.get(f"add_{kind}_token"), bool):
            adds[kind] = tok_config[f"add_{kind}_token"]
    first, last, says = _post_processor(tj)
    if says:
        for kind, tok in (("bos", first), ("eos", last)):
            if tok is not None and kind not in ids and tok in lookup:
                ids[kind] = lookup[tok]
            if kind not in adds:
                adds[kind] = tok is not None and kind in ids and lookup.get(tok) == ids[kind]

    for cfg in (config or {}, (config or {}).get("text_config") or {}, gen or {}):
        if not isinstance(cfg, dict):
            continue
        for kind in _SPECIAL_KINDS:
            v = cfg.get(f"{kind}_token_id")
            if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
                v = v[0]
            if kind not in ids and isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(vocab.tokens):
                ids[kind] = v
    for kind, i in vocab.specials.items():
        ids.setdefault(kind, i)
    return ids, adds


def _post_processor(tj: dict | None) -> tuple[str | None, str | None, bool]:
    """(token put first, token put last, whether the post-processor says anything) for a
    single sequence, from TemplateProcessing / RobertaProcessing / ByteLevel."""
    pp = (tj or {}).get("post_processor")
    if not isinstance(pp, dict):
        return None, None, False
    procs = pp.get("processors") if pp.get("type") == "Sequence" else [pp]
    first = last = None
    says = False
    for p in procs or []:
        if not isinstance(p, dict):
            continue
        if p.get("type") == "ByteLevel":
            says = True
        elif p.get("type") == "RobertaProcessing":
            says = True
            cls, sep = p.get("cls"), p.get("sep")
            first = cls[0] if isinstance(cls, list) and cls else first
            last = sep[0] if isinstance(sep, list) and sep else last
        elif p.get("type") == "TemplateProcessing":
            says = True
            single = p.get("single")
            single = [_special_id(x) for x in single] if isinstance(single, list) else []
            if single:
                first = single[0]
            if len(single) > 1:
                last = single[-1]
    return first, last, says


def _special_id(piece: Any) -> str | None:
    """The token of a TemplateProcessing item {"SpecialToken": {"id": ...}}, else None."""
    st = piece.get("SpecialToken") if isinstance(piece, dict) else None
    tid = st.get("id") if isinstance(st, dict) else None
    return tid if isinstance(tid, str) else None


def chat_template_kvs(source: Source, tok_config: dict) -> list[KV]:
    """``tokenizer.chat_template`` (and named extra templates) from tokenizer_config.json,
    chat_template.jinja or chat_template.json."""
    files = source.files()
    tmpl = tok_config.get("chat_template")
    if tmpl is None and "chat_template.jinja" in files:
        try:
            tmpl = source.read_file("chat_template.jinja").decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("not UTF-8", "chat_template.jinja") from None
    if tmpl is None and "chat_template.json" in files:
        tmpl = (read_json(source, "chat_template.json") or {}).get("chat_template")
    if tmpl is None:
        return []
    if isinstance(tmpl, str):
        return [kv("tokenizer.chat_template", tmpl)]
    if isinstance(tmpl, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                      and isinstance(t.get("template"), str) for t in tmpl):
        out: list[KV] = []
        names: list[str] = []
        for t in tmpl:
            if t["name"] == "default":
                out.insert(0, kv("tokenizer.chat_template", t["template"]))
            else:
                out.append(kv(f"tokenizer.chat_template.{t['name']}", t["template"]))
                names.append(t["name"])
        if names:
            out.append(kv("tokenizer.chat_templates", names, VT.ARRAY, VT.STRING))
        return out
    raise FormatError("chat_template is neither a string nor a list of {name, template}",
                      "tokenizer_config.json")
