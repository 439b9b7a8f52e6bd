"""``tokenizer.*``: a tokenizer that does not fit its model. Token ids (special ones included) at
or beyond the embedding rows index past the matrix; BOS/EOS ids or texts the vocabulary does not
hold cannot be encoded or decoded; a chat template that does not parse fails every chat request;
a tokenizer file that cannot be read at all is reported instead of skipped."""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..index import TensorIndex, Unreadable
from ..infer import Inference
from ..infer.tokenizer import (
    GGUF_SPECIAL_KEYS,
    added_tokens,
    chat_templates,
    config_specials,
    is_id,
    model_vocab,
    named_specials,
    token_id,
    vocab_ids,
)
from .findings import Finding, finding

_MUST_EXIST = ("bos", "eos")   # the specials a vocabulary has to hold for generation to work


def check_tokenizer(index: TensorIndex, inf: Inference) -> list[Finding]:
    files = index.tokenizer_files
    out = [finding("tokenizer.unreadable", f"{name}: {u.message}", file=name)
           for name, u in files.items() if isinstance(u, Unreadable)]
    rows = embedding_rows(inf)
    if index.format == "gguf":
        out += _gguf_ids(index.metadata, rows)
    else:
        out += _file_ids(files, index.config, rows)
    for where, text in chat_templates(files, index.metadata if index.format == "gguf" else None).items():
        err = template_error(text)
        if err is not None:
            name, _, key = where.partition(":")
            out.append(finding("tokenizer.chat_template", f"{where}: the chat template does not "
                               f"parse: {err}", file=name if key or name.endswith(".jinja") else None,
                               key=where))
    return out


def embedding_rows(inf: Inference) -> int | None:
    """The rows of the input embedding, when the tensors tell (not a config's claim)."""
    f = inf.facts.get("vocab_size")
    return f.value if f is not None and f.source == "tensors" and is_id(f.value) else None


def _beyond(what: str, i: int, rows: int, **where: Any) -> Finding:
    return finding("tokenizer.id_beyond_embedding",
                   f"{what} has id {i}, at or beyond the {rows:,} embedding rows (ids 0..{rows - 1})",
                   **where)


def _file_ids(files: dict[str, Any], config: dict | None, rows: int | None) -> list[Finding]:
    out: list[Finding] = []
    vocab = model_vocab(files)
    if rows is not None and vocab:
        over = sorted(i for i in vocab.values() if i >= rows)
        if over:
            out.append(finding("tokenizer.id_beyond_embedding",
                               f"tokenizer.json's vocabulary has {len(over):,} token id(s) at or "
                               f"beyond the {rows:,} embedding rows (up to {over[-1]})",
                               file="tokenizer.json", key="tokenizer.json:model.vocab"))
    seen: set[int] = set()
    for i, text, where in added_tokens(files):
        if rows is not None and i >= rows and i not in seen:
            seen.add(i)
            out.append(_beyond(f"{where.split(':')[0]}: added token {text!r}", i, rows,
                               file=where.split(":")[0], key=where))
    have = vocab_ids(files)
    for kind, i, where in config_specials(files, config):
        if rows is not None and i >= rows:
            out.append(_beyond(where, i, rows, file=where.split(":")[0], key=where))
        elif have is not None and kind in _MUST_EXIST and i not in have:
            out.append(finding("tokenizer.special_not_in_vocab",
                               f"{where} = {i}, an id the tokenizer has no token for",
                               file=where.split(":")[0], key=where))
    if have is not None:
        for kind, text, where in named_specials(files):
            if kind in _MUST_EXIST and token_id(files, text) is None:
                out.append(finding("tokenizer.special_not_in_vocab",
                                   f"{where} = {text!r}, a token the vocabulary does not hold",
                                   file=where.split(":")[0], key=where))
    return out


def _gguf_ids(meta: dict, rows: int | None) -> list[Finding]:
    out: list[Finding] = []
    tokens = meta.get("tokenizer.ggml.tokens")
    n = len(tokens) if isinstance(tokens, list) else None
    if rows is not None and n is not None and n > rows:
        out.append(finding("tokenizer.id_beyond_embedding",
                           f"tokenizer.ggml.tokens holds {n:,} tokens, more than the {rows:,} "
                           f"embedding rows", key="tokenizer.ggml.tokens"))
    for key, i in meta.items():
        if not (key.startswith("tokenizer.ggml.") and key.endswith("_token_id") and is_id(i)):
            continue
        if rows is not None and i >= rows:
            out.append(_beyond(key, i, rows, key=key))
        elif n is not None and key in (GGUF_SPECIAL_KEYS[k] for k in _MUST_EXIST) and not 0 <= i < n:
            out.append(finding("tokenizer.special_not_in_vocab",
                               f"{key} = {i}, but tokenizer.ggml.tokens holds ids 0..{n - 1} only",
                               key=key))
    return out


# ---- chat templates -----------------------------------------------------------------------------

def template_error(text: str) -> str | None:
    """Why a Jinja chat template does not compile the way transformers compiles it (sandboxed,
    with loop controls and the ``{% generation %}`` tag), or None."""
    import jinja2  # imported here: only templates need it
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols", _generation_tag()])
    try:
        env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        return f"line {e.lineno}: {e.message}"
    except (RecursionError, MemoryError):
        return "nested too deeply to compile"
    return None


@lru_cache(maxsize=1)
def _generation_tag() -> type:
    """transformers' ``{% generation %}...{% endgeneration %}`` marks assistant text for
    masks; for parsing, its body is plain template."""
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.parser import Parser

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser: Parser) -> list[nodes.Node]:
            next(parser.stream)
            return list(parser.parse_statements(("name:endgeneration",), drop_needle=True))

    return Generation

