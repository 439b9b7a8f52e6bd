"""tiktoken ranks (``tiktoken.model``, Kimi K2) -> ``tokenizer.ggml.model = "gpt2"`` with merges replayed
from the ranks; the split regex comes from the checkpoint's tokenizer code, read, never run."""
from __future__ import annotations

import ast
import base64
import binascii
from functools import lru_cache

from ...errors import CkptError, FormatError, UnsupportedError
from ...sources.base import Source
from .pretokenizer import code_module_names, identify_pre, split_regex
from .vocab import CONTROL, NORMAL, UNUSED, Vocab, table_size


@lru_cache(maxsize=1)
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map: printable Latin-1 bytes stand for
    themselves, the other 68 bytes take the characters from U+0100 on, in byte order."""
    keep = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(0x100 + extra)
            extra += 1
    return out


def bytes_to_token(b: bytes) -> str:
    m = _byte_to_unicode()
    return "".join(m[x] for x in b)


def parse_tiktoken(data: bytes, where: str = "tiktoken.model") -> dict[bytes, int]:
    """``base64-token rank`` lines -> {token bytes: rank}."""
    ranks: dict[bytes, int] = {}
    for no, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise FormatError(f"line {no} is not 'base64 rank'", where)
        try:
            tok = base64.b64decode(parts[0], validate=True)
        except (binascii.Error, ValueError):
            raise FormatError(f"line {no}: bad base64", where) from None
        ranks[tok] = int(parts[1])
    if not ranks:
        raise FormatError("no tokens", where)
    return ranks


def replay_merges(ranks: dict[bytes, int]) -> list[str]:
    """BPE merges implied by tiktoken ranks: each multi-byte token is rebuilt from its bytes
    with lower-ranked merges only; the last two parts are its merge."""
    out: list[tuple[int, str]] = []
    for tok, rank in ranks.items():
        if len(tok) < 2:
            continue
        parts = [tok[i:i + 1] for i in range(len(tok))]
        while len(parts) > 2:
            best, best_i = None, -1
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < rank and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) == 2:
            out.append((rank, bytes_to_token(parts[0]) + " " + bytes_to_token(parts[1])))
    out.sort()
    return [m for _, m in out]


def _code_pattern(source: Source, tok_config: dict) -> str | None:
    """The ``pat_str`` a tiktoken checkpoint's tokenizer code defines, read with ``ast`` (never
    executed): a string literal or ``"|".join([...literals...])``."""
    for path in sorted(p for p in source.files() if p.endswith(".py") and "/" not in p):
        try:
            tree = ast.parse(source.read_file(path).decode("utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, CkptError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(isinstance(t, (ast.Name, ast.Attribute)) and
                                                    getattr(t, "id", getattr(t, "attr", "")) == "pat_str"
                                                    for t in node.targets):
                pattern = _pattern_literal(node.value)
                if pattern is not None:
                    return pattern
    return None


def _literal_str(node: ast.expr) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _pattern_literal(v: ast.expr) -> str | None:
    """A string literal, or ``"sep".join([...string literals...])``; None for anything else."""
    if isinstance(v, ast.Call) and isinstance(v.func, ast.Attribute) and v.func.attr == "join" \
            and len(v.args) == 1 and isinstance(v.args[0], (ast.List, ast.Tuple)):
        sep = _literal_str(v.func.value)
        parts = [p for p in map(_literal_str, v.args[0].elts) if p is not None]
        return sep.join(parts) if sep is not None and len(parts) == len(v.args[0].elts) else None
    return _literal_str(v)


def tiktoken_vocab(source: Source, tok_config: dict, vocab_size: int, pre_override: str | None,
                   config: dict | None = None) -> Vocab:
    """A tiktoken checkpoint's vocabulary; its pre-tokenizer named from the split regex its code
    holds, with config.json's model type as the tie-break between names of one regex."""
    ranks = parse_tiktoken(source.read_file("tiktoken.model"))
    n = max(ranks.values()) + 1
    dec = tok_config.get("added_tokens_decoder") or {}
    specials = {int(i): d["content"] for i, d in dec.items()
                if str(i).isdigit() and isinstance(d, dict) and isinstance(d.get("content"), str)}
    size = table_size(max([n - 1, *specials]) + 1, vocab_size, "tiktoken.model")
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [UNUSED] * size
    for tok, r in ranks.items():
        tokens[r], types[r] = bytes_to_token(tok), NORMAL
    for i, text in specials.items():
        tokens[i], types[i] = text, CONTROL
    if pre_override is not None:
        pre = pre_override
    else:
        pat = _code_pattern(source, tok_config)
        if pat is None:
            # the tokenizer code is not in the checkpoint, only auto_map names it: known modules
            # map to table entries (mappings/pretokenizers.toml code_modules)
            auto = repr(tok_config.get("auto_map"))
            known = code_module_names(auto)
            pat = split_regex(known[0]) if known else None
        if pat is None:
            raise UnsupportedError("tiktoken tokenizer whose split regex ckptkit cannot find (no "
                                   "pat_str in the checkpoint's tokenizer code); pass --pre NAME",
                                   "tiktoken.model")
        pre = identify_pre({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pat}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "use_regex": False, "add_prefix_space": False}]}}, config)
    return Vocab("gpt2", pre, tokens, types, merges=replay_merges(ranks))
