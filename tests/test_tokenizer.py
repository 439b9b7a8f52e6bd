"""Tokenizer files -> GGUF tokenizer metadata (ckptkit.conversion.tokenizer).

Small real tokenizers are trained here with the `tokenizers` library (and `sentencepiece` when
installed), written as checkpoint folders, and converted; every KV is checked against the
trained tokenizer itself.
"""
from __future__ import annotations

import base64
import json
import struct
from hashlib import sha256
from pathlib import Path

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import llama_child
from ckptkit.conversion.tokenizer import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    bytes_to_token,
    has_tokenizer,
    identify_pre,
    parse_sentencepiece,
    replay_merges,
    tokenizer_kvs,
)
from ckptkit.errors import FormatError, UnsupportedError
from ckptkit.formats.gguf_write import VT
from ckptkit.sources.local import LocalSource

LLAMA3_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2_RE = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
KIMI_RE = "|".join([
    r"[\p{Han}]+",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])

SAMPLE = ("Hello world! I've been told it's 12345 times faster, isn't it?\n"
          "    def f(x):\n        return x**2  # squares\n"
          "Ünïcödé naïve café — 3.14159 and 2024-06-01; URLs like https://example.com/a?b=c\n"
          "我想在apple工作1314151天 — ДАННЫЕ и данные\t\ttabs  and   spaces\n\n")
CHAT_TEMPLATE = "{% for m in messages %}<|start|>{{ m['role'] }}\n{{ m['content'] }}<|end|>{% endfor %}"
# the text llama.cpp's reference converter encodes and hashes to name a pre-tokenizer
CHKTXT = ("\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 3 33 333 3333 33333 3.3 3..3 "
          "កាន់តែពិសេសអាច ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......"
          "!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea?")


def corpus(seed: int) -> list[str]:
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "tokenizer", "llama",
             "model", "weights", "Hello", "World", "don't", "we're", "it's", "café", "naïve", "данные",
             "我想", "工作", "天", "def", "return", "print", "numbers", "12345", "2024", "3.14159"]
    lines = []
    for i in range(400):
        k = (i * 7 + seed * 13) % len(words)
        w = [words[(k + j * (seed + 3)) % len(words)] for j in range(8 + i % 5)]
        lines.append(" ".join(w) + ("\n" if i % 3 else "  \t" + str(i * (seed + 1))) + "!?.,"[i % 4])
    return lines + [SAMPLE]


def train_bpe(pre, vocab_size=420, seed=0, normalizer=None) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=False))
    tok.pre_tokenizer = pre
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=["<|begin|>", "<|end_of_text|>", "<|start|>", "<|end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(seed), trainer)
    return tok


def split_pre(regex: str):
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def write_checkpoint(path: Path, tok: Tokenizer | None, tok_config: dict | None = None,
                     config: dict | None = None, extra: dict[str, bytes | str | dict] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if tok is not None:
        tok.save(str(path / "tokenizer.json"))
    for name, obj in (("tokenizer_config.json", tok_config), ("config.json", config)):
        if obj is not None:
            (path / name).write_text(json.dumps(obj))
    for name, data in (extra or {}).items():
        if isinstance(data, dict):
            data = json.dumps(data)
        (path / name).write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def as_dict(kvs) -> dict:
    out = {}
    for k in kvs:
        assert k.key not in out
        out[k.key] = k
    return out


def values(kvs) -> dict:
    return {k.key: k.value for k in kvs}


@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory):
    tok = train_bpe(split_pre(LLAMA3_RE))
    bos = tok.token_to_id("<|begin|>")
    tok.post_processor = processors.TemplateProcessing(single="<|begin|> $A", pair="<|begin|> $A $B",
                                                       special_tokens=[("<|begin|>", bos)])
    tok.add_tokens(["<think>"])  # an added token that is not special
    return write_checkpoint(tmp_path_factory.mktemp("llama3"), tok,
                            {"bos_token": "<|begin|>", "eos_token": {"content": "<|end_of_text|>"},
                             "chat_template": CHAT_TEMPLATE},
                            {"model_type": "llama", "vocab_size": tok.get_vocab_size() + 7})


# ---- byte-level BPE ---------------------------------------------------------------------------

def test_llama3_style_bpe_every_kv(llama3_dir):
    tok = Tokenizer.from_file(str(llama3_dir / "tokenizer.json"))
    n = tok.get_vocab_size()
    kvs = tokenizer_kvs(LocalSource(llama3_dir), None, n + 7)
    d, v = as_dict(kvs), values(kvs)
    assert v["tokenizer.ggml.model"] == "gpt2"
    assert v["tokenizer.ggml.pre"] == "llama-bpe"
    tokens = v["tokenizer.ggml.tokens"]
    assert len(tokens) == n + 7
    assert tokens[:n] == [tok.id_to_token(i) for i in range(n)]
    assert tokens[n:] == [f"[PAD{i}]" for i in range(n, n + 7)]
    types = v["tokenizer.ggml.token_type"]
    specials = {tok.token_to_id(t) for t in ("<|begin|>", "<|end_of_text|>", "<|start|>", "<|end|>")}
    think = tok.token_to_id("<think>")
    for i, t in enumerate(types):
        want = UNUSED if i >= n else CONTROL if i in specials else USER_DEFINED if i == think else NORMAL
        assert t == want, (i, tokens[i])
    merges = json.loads((llama3_dir / "tokenizer.json").read_text())["model"]["merges"]
    assert v["tokenizer.ggml.merges"] == [" ".join(m) for m in merges]
    assert v["tokenizer.ggml.bos_token_id"] == tok.token_to_id("<|begin|>")
    assert v["tokenizer.ggml.eos_token_id"] == tok.token_to_id("<|end_of_text|>")
    assert v["tokenizer.ggml.add_bos_token"] is True  # from the TemplateProcessing
    assert v["tokenizer.ggml.add_eos_token"] is False
    assert v["tokenizer.chat_template"] == CHAT_TEMPLATE
    assert d["tokenizer.ggml.tokens"].item_type == VT.STRING
    assert d["tokenizer.ggml.token_type"].item_type == VT.INT32
    assert d["tokenizer.ggml.bos_token_id"].type == VT.UINT32
    assert "tokenizer.ggml.scores" not in v
    assert has_tokenizer(LocalSource(llama3_dir))


def test_merges_in_string_form_are_kept(tmp_path, llama3_dir):
    tj = json.loads((llama3_dir / "tokenizer.json").read_text())
    pairs = tj["model"]["merges"]
    tj["model"]["merges"] = [" ".join(m) for m in pairs]  # tokenizers < 0.20 spelling
    d = write_checkpoint(tmp_path / "old", None, extra={"tokenizer.json": tj})
    v = values(tokenizer_kvs(LocalSource(d), None, 0))
    assert v["tokenizer.ggml.merges"] == [" ".join(m) for m in pairs]
    assert len(v["tokenizer.ggml.tokens"]) == len(tj["model"]["vocab"]) + 1  # + <think>


def test_qwen2_and_gpt2_and_smollm_definitions(tmp_path):
    qwen = train_bpe(split_pre(QWEN2_RE), normalizer=normalizers.NFC())
    qwen.post_processor = processors.ByteLevel(trim_offsets=False)
    d = write_checkpoint(tmp_path / "qwen", qwen, {"eos_token": "<|end|>", "pad_token": "<|end_of_text|>",
                                                  "bos_token": None},
                         {"model_type": "qwen3", "bos_token_id": qwen.token_to_id("<|begin|>")})
    v = values(tokenizer_kvs(LocalSource(d), None, qwen.get_vocab_size()))
    assert v["tokenizer.ggml.pre"] == "qwen2"
    assert v["tokenizer.ggml.add_bos_token"] is False and v["tokenizer.ggml.add_eos_token"] is False
    assert v["tokenizer.ggml.eos_token_id"] == qwen.token_to_id("<|end|>")
    assert v["tokenizer.ggml.padding_token_id"] == qwen.token_to_id("<|end_of_text|>")
    assert v["tokenizer.ggml.bos_token_id"] == qwen.token_to_id("<|begin|>")  # from config.json

    gpt2 = train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=False))
    d = write_checkpoint(tmp_path / "gpt2", gpt2)
    assert values(tokenizer_kvs(LocalSource(d), None, 0))["tokenizer.ggml.pre"] == "gpt-2"

    smol = train_bpe(pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                              pre_tokenizers.ByteLevel(add_prefix_space=False)]))
    d = write_checkpoint(tmp_path / "smol", smol)
    assert values(tokenizer_kvs(LocalSource(d), None, 0))["tokenizer.ggml.pre"] == "smollm"


def test_same_regex_named_by_model_type(llama3_dir):
    tj = json.loads((llama3_dir / "tokenizer.json").read_text())
    assert identify_pre(tj, {"model_type": "llama"}) == "llama-bpe"
    assert identify_pre(tj, {"model_type": "smollm3"}) == "llama-bpe"
    assert identify_pre(tj, {"model_type": "olmo2"}) == "dbrx"
    assert identify_pre(tj, {"model_type": "glm4_moe"}) == "glm4"
    assert identify_pre(tj, {"text_config": {"model_type": "glm4"}}) == "glm4"


def test_retrained_vocabulary_is_identified_where_a_token_hash_would_not_be(tmp_path):
    """Two vocabularies trained on different text with Llama 3's pre-tokenizer: their token ids
    for the reference converter's check text differ (so its hash cannot name both), yet both
    are identified from the definition."""
    a = train_bpe(split_pre(LLAMA3_RE), vocab_size=420, seed=0)
    b = train_bpe(split_pre(LLAMA3_RE), vocab_size=380, seed=5)
    ha = sha256(str(a.encode(CHKTXT).ids).encode()).hexdigest()
    hb = sha256(str(b.encode(CHKTXT).ids).encode()).hexdigest()
    assert ha != hb
    for name, tok in (("a", a), ("b", b)):
        d = write_checkpoint(tmp_path / name, tok)
        assert values(tokenizer_kvs(LocalSource(d), None, 0))["tokenizer.ggml.pre"] == "llama-bpe"


def test_unknown_regex_is_refused_and_pre_overrides(tmp_path):
    odd = r"\p{L}+|\p{N}{1,5}|[^\s\p{L}\p{N}]+|\s+"
    tok = train_bpe(split_pre(odd))
    d = write_checkpoint(tmp_path / "odd", tok)
    with pytest.raises(UnsupportedError) as e:
        tokenizer_kvs(LocalSource(d), None, 0)
    assert "--pre" in str(e.value) and r"\p{N}{1,5}" in str(e.value)
    v = values(tokenizer_kvs(LocalSource(d), None, 0, pre_override="qwen2"))
    assert v["tokenizer.ggml.pre"] == "qwen2"
    with pytest.raises(UnsupportedError, match="no-such-pre"):
        tokenizer_kvs(LocalSource(d), None, 0, pre_override="no-such-pre")


def test_vocab_larger_than_model_is_an_error(llama3_dir):
    with pytest.raises(FormatError, match="embedding rows"):
        tokenizer_kvs(LocalSource(llama3_dir), None, 100)


def test_tokenizer_config_flags_and_jinja_template(tmp_path, llama3_dir):
    tj = json.loads((llama3_dir / "tokenizer.json").read_text())
    d = write_checkpoint(tmp_path / "t", None, {"add_bos_token": False, "add_eos_token": True,
                                                "eos_token": "<|end|>"},
                         extra={"tokenizer.json": tj, "chat_template.jinja": "{{ messages }}"})
    v = values(tokenizer_kvs(LocalSource(d), None, 0))
    assert v["tokenizer.ggml.add_bos_token"] is False and v["tokenizer.ggml.add_eos_token"] is True
    assert v["tokenizer.chat_template"] == "{{ messages }}"
    # no bos_token in tokenizer_config: the post-processor's first token is taken
    assert tj["added_tokens"][0]["content"] == "<|begin|>"
    assert v["tokenizer.ggml.bos_token_id"] == tj["added_tokens"][0]["id"]


# ---- SentencePiece-style ------------------------------------------------------------------------

def test_unigram_tokenizer_json(tmp_path):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=300, show_progress=False, unk_token="<unk>",
                                      special_tokens=["<unk>", "<s>", "</s>"])
    tok.train_from_iterator(corpus(1), trainer)
    tok.add_tokens(["[extra]"])
    d = write_checkpoint(tmp_path / "uni", tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    tj = json.loads((d / "tokenizer.json").read_text())
    v = values(tokenizer_kvs(LocalSource(d), None, tok.get_vocab_size() + 2))
    n = len(tj["model"]["vocab"])
    assert v["tokenizer.ggml.model"] == "llama" and v["tokenizer.ggml.pre"] == "default"
    assert v["tokenizer.ggml.tokens"][:n] == [p for p, _ in tj["model"]["vocab"]]
    assert v["tokenizer.ggml.scores"][:n] == [s for _, s in tj["model"]["vocab"]]
    extra = tok.token_to_id("[extra]")
    assert v["tokenizer.ggml.tokens"][extra] == "[extra]"
    types = v["tokenizer.ggml.token_type"]
    assert types[tok.token_to_id("<unk>")] == UNKNOWN
    assert types[tok.token_to_id("<s>")] == CONTROL and types[tok.token_to_id("</s>")] == CONTROL
    assert types[extra] == USER_DEFINED
    assert types[-2:] == [UNUSED, UNUSED] and len(types) == tok.get_vocab_size() + 2
    assert v["tokenizer.ggml.bos_token_id"] == tok.token_to_id("<s>")
    assert v["tokenizer.ggml.unknown_token_id"] == tok.token_to_id("<unk>")
    assert v["tokenizer.ggml.add_space_prefix"] is True


@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece", reason="sentencepiece is not installed (test-only)")
    d = tmp_path_factory.mktemp("spm")
    (d / "corpus.txt").write_text("\n".join(corpus(2)))
    spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "tokenizer"),
                                   vocab_size=400, model_type="bpe", byte_fallback=True,
                                   user_defined_symbols=["<tool>"], control_symbols=["<ctl>"],
                                   # Llama 2's settings: raw text, spaces kept
                                   normalization_rule_name="identity", remove_extra_whitespaces=False,
                                   minloglevel=2)
    (d / "corpus.txt").unlink()
    (d / "tokenizer.vocab").unlink()
    return d


def test_sentencepiece_model_parsed_without_the_package(spm_dir):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    m = parse_sentencepiece((spm_dir / "tokenizer.model").read_bytes())
    assert len(m.pieces) == sp.vocab_size()
    for i, (piece, score, typ) in enumerate(m.pieces):
        assert piece == sp.id_to_piece(i)
        assert score == pytest.approx(sp.get_score(i))
        want = (UNKNOWN if sp.is_unknown(i) else CONTROL if sp.is_control(i) else BYTE if sp.is_byte(i)
                else UNUSED if sp.is_unused(i) else None)
        if want is not None:
            assert typ == want, (i, piece)
    assert m.pieces[sp.piece_to_id("<tool>")][2] == USER_DEFINED
    assert m.model_type == 2 and m.add_dummy_prefix is True
    assert m.special_ids == {"unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}

    v = values(tokenizer_kvs(LocalSource(spm_dir), None, sp.vocab_size() + 3))
    assert v["tokenizer.ggml.model"] == "llama"
    assert v["tokenizer.ggml.tokens"][:sp.vocab_size()] == [sp.id_to_piece(i) for i in range(sp.vocab_size())]
    assert v["tokenizer.ggml.tokens"][-1] == f"[PAD{sp.vocab_size() + 2}]"
    assert v["tokenizer.ggml.bos_token_id"] == sp.bos_id() and v["tokenizer.ggml.eos_token_id"] == sp.eos_id()
    assert v["tokenizer.ggml.unknown_token_id"] == sp.unk_id()
    assert "tokenizer.ggml.merges" not in v


def test_hostile_sentencepiece_protobufs():
    piece = b"\x0a\x03abc" + b"\x15" + struct.pack("<f", -1.5) + b"\x18\x03"
    good = b"\x0a" + bytes([len(piece)]) + piece
    m = parse_sentencepiece(good)
    assert m.pieces == [("abc", -1.5, CONTROL)]
    for bad in (good[:-2],                       # truncated
                b"\x0a\x05\x0a\x03ab",           # string runs past its message
                b"\x0a\x02\x1b\x00",             # group wire type
                b"\x0a" + b"\xff" * 11,          # endless varint
                b"\x0a\x03\x0a\x01\xff",         # piece not UTF-8
                b"\x0a\x02\x18\x09",             # piece without text
                b"\x12\x00"):                    # no pieces
        with pytest.raises(FormatError):
            parse_sentencepiece(bad)


# ---- tiktoken (Kimi K2) -----------------------------------------------------------------------

def test_tiktoken_ranks_replay_the_trained_merges(tmp_path):
    tok = train_bpe(split_pre(KIMI_RE), vocab_size=400)
    tj = json.loads(tok.to_str())
    byte_of = {c: b for b, c in ((b, bytes_to_token(bytes([b]))) for b in range(256))}
    inv = {i: t for t, i in tj["model"]["vocab"].items()}
    specials = {a["id"]: a["content"] for a in tj["added_tokens"]}
    # a tiktoken file holds byte tokens with ranks; specials live in tokenizer_config
    n_special = len(specials)
    lines = [base64.b64encode(bytes(byte_of[c] for c in inv[i])).decode() + f" {i - n_special}"
             for i in sorted(inv) if i not in specials]
    ranks = {base64.b64decode(l.split()[0]): int(l.split()[1]) for l in lines}
    got = replay_merges(ranks)
    assert got == [" ".join(m) for m in tj["model"]["merges"]]

    n = len(lines)
    dec = {str(n + k): {"content": c, "special": True} for k, c in enumerate(specials.values())}
    d = write_checkpoint(tmp_path / "kimi", None,
                         {"added_tokens_decoder": dec, "bos_token": "<|begin|>", "eos_token": "<|end|>",
                          "auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]}},
                         extra={"tiktoken.model": "\n".join(lines) + "\n"})
    v = values(tokenizer_kvs(LocalSource(d), None, n + n_special + 4))
    assert v["tokenizer.ggml.model"] == "gpt2" and v["tokenizer.ggml.pre"] == "kimi-k2"
    assert v["tokenizer.ggml.tokens"][:n] == [inv[i + n_special] for i in range(n)]
    assert v["tokenizer.ggml.tokens"][n:n + n_special] == list(specials.values())
    assert set(v["tokenizer.ggml.token_type"][n:n + n_special]) == {CONTROL}
    assert v["tokenizer.ggml.bos_token_id"] == n and v["tokenizer.ggml.eos_token_id"] == n + 3
    assert v["tokenizer.ggml.merges"] == got


def test_tiktoken_split_regex_read_from_the_checkpoints_code(tmp_path):
    """The pat_str of the tokenizer code shipped in the folder is read with ast (never run), so a
    tiktoken checkpoint that is not Kimi's is named from its own regex."""
    lines = [base64.b64encode(bytes([b])).decode() + f" {b}" for b in range(256)]
    code = "import tiktoken\nclass T:\n    pat_str = " + repr(LLAMA3_RE) + "\n"
    d = write_checkpoint(tmp_path / "tt", None, {"bos_token": None},
                         extra={"tiktoken.model": "\n".join(lines) + "\n", "tokenization_x.py": code})
    v = values(tokenizer_kvs(LocalSource(d), None, 256))
    assert v["tokenizer.ggml.pre"] == "llama-bpe"
    # the same regex in a GLM-4 checkpoint (THUDM/glm-4-9b-chat ships tiktoken): config.json's
    # model type picks llama.cpp's name for it
    v = values(tokenizer_kvs(LocalSource(d), {"model_type": "chatglm", "architectures": ["ChatGLMModel"]}, 256))
    assert v["tokenizer.ggml.pre"] == "chatglm-bpe"


def test_no_tokenizer(tmp_path):
    d = write_checkpoint(tmp_path / "none", None, config={"model_type": "llama"})
    assert not has_tokenizer(LocalSource(d))
    with pytest.raises(UnsupportedError):
        tokenizer_kvs(LocalSource(d), None, 10)


# ---- the proof: llama.cpp tokenizes like the tokenizers library ----------------------------------

# llama.cpp runs in a child process (llama_child): one per vocabulary, all its texts at once
needs_llama_cpp = pytest.mark.skipif(not llama_child.installed(), reason=llama_child.SKIP_REASON)


@needs_llama_cpp
@pytest.mark.parametrize("kind", ["llama-bpe", "qwen2", "gpt-2", "smollm", "deepseek-v3", "gpt-4o", "tekken"])
def test_llama_cpp_tokenizes_like_tokenizers(tmp_path, kind):
    import tomllib

    from ckptkit.conversion.tokenizer import PRETOKENIZERS_TOML
    from ckptkit.formats.gguf_write import kv, write_gguf
    table = tomllib.loads(PRETOKENIZERS_TOML.read_text())
    entry = next(e for e in table["pretokenizer"] if e["name"] == kind)
    steps = []
    for s in entry["steps"]:
        if s["type"] == "Split":
            steps.append(pre_tokenizers.Split(Regex(s["regex"]), behavior="isolated", invert=False))
        elif s["type"] == "ByteLevel":
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=s["use_regex"]))
        else:
            steps.append(pre_tokenizers.Digits(individual_digits=s["individual_digits"]))
    tok = train_bpe(pre_tokenizers.Sequence(steps), vocab_size=600)
    d = write_checkpoint(tmp_path / "ck", tok, {"bos_token": "<|begin|>", "eos_token": "<|end_of_text|>",
                                                "add_bos_token": False})
    kvs = tokenizer_kvs(LocalSource(d), None, tok.get_vocab_size())
    assert values(kvs)["tokenizer.ggml.pre"] == kind
    arch = [kv("general.architecture", "llama"), kv("llama.context_length", 64),
            kv("llama.embedding_length", 8), kv("llama.block_count", 1),
            kv("llama.feed_forward_length", 16), kv("llama.attention.head_count", 2),
            kv("llama.attention.head_count_kv", 2), kv("llama.rope.dimension_count", 4),
            kv("llama.attention.layer_norm_rms_epsilon", 1e-5)]
    out = tmp_path / "vocab.gguf"
    write_gguf(out, arch + kvs, [], iter(()))
    texts = [SAMPLE, CHKTXT, "plain words only", " leading space and 1234567 digits"]
    for text, got in zip(texts, llama_child.tokenize(out, texts), strict=True):
        assert got == tok.encode(text, add_special_tokens=False).ids, text


def _vocab_only_gguf(tmp_path, kvs) -> Path:
    """A weightless llama GGUF with this vocabulary, for llama.cpp's vocab-only load."""
    from ckptkit.formats.gguf_write import kv, write_gguf
    arch = [kv("general.architecture", "llama"), kv("llama.context_length", 64),
            kv("llama.embedding_length", 8), kv("llama.block_count", 1),
            kv("llama.feed_forward_length", 16), kv("llama.attention.head_count", 2),
            kv("llama.attention.head_count_kv", 2), kv("llama.rope.dimension_count", 4),
            kv("llama.attention.layer_norm_rms_epsilon", 1e-5)]
    out = tmp_path / "vocab.gguf"
    write_gguf(out, arch + kvs, [], iter(()))
    return out


@needs_llama_cpp
def test_llama_cpp_tokenizes_like_sentencepiece(tmp_path, spm_dir):
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "tokenizer.model"))
    out = _vocab_only_gguf(tmp_path, tokenizer_kvs(LocalSource(spm_dir), None, sp.vocab_size()))
    # (text after a user-defined piece is left out: llama.cpp prefixes it with a space, by design)
    texts = [SAMPLE.replace("\t", " "), "plain words only", "the <tool>", "Ωmega ☃ unseen"]
    for text, got in zip(texts, llama_child.tokenize(out, texts, parse_special=True), strict=True):
        assert got == sp.encode(text), text


@needs_llama_cpp
def test_llama_cpp_tokenizes_kimi_tiktoken_like_tokenizers(tmp_path):
    tok = train_bpe(split_pre(KIMI_RE), vocab_size=500)
    tj = json.loads(tok.to_str())
    byte_of = {bytes_to_token(bytes([b])): b for b in range(256)}
    specials = {a["id"] for a in tj["added_tokens"]}
    normal = sorted(i for i in tj["model"]["vocab"].values() if i not in specials)
    inv = {i: t for t, i in tj["model"]["vocab"].items()}
    lines = [base64.b64encode(bytes(byte_of[c] for c in inv[i])).decode() + f" {r}" for r, i in enumerate(normal)]
    d = write_checkpoint(tmp_path / "kimi", None,
                         {"auto_map": {"AutoTokenizer": ["tokenization_kimi.TikTokenTokenizer", None]}},
                         extra={"tiktoken.model": "\n".join(lines)})
    out = _vocab_only_gguf(tmp_path, tokenizer_kvs(LocalSource(d), None, len(normal)))
    texts = [SAMPLE, CHKTXT, "我想在apple工作 mixed汉字Text"]
    for text, got in zip(texts, llama_child.tokenize(out, texts), strict=True):
        assert got == [normal.index(i) for i in tok.encode(text, add_special_tokens=False).ids], text


def spm_as_tokenizer_json(model_file: Path) -> Tokenizer:
    """A Llama-2-style tokenizer.json (byte-fallback BPE, "▁" normalizer) from a SentencePiece
    BPE model: merges ordered by the merged piece's rank, as HF's converter orders them."""
    pieces = parse_sentencepiece(model_file.read_bytes()).pieces
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    merges = []
    for p, _, typ in pieces:
        if typ != NORMAL or len(p) < 2:
            continue
        splits = [(p[:k], p[k:]) for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab]
        merges += sorted(splits, key=lambda ab: (vocab[ab[0]], vocab[ab[1]]))
    tok = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<ctl>"])
    return tok


@needs_llama_cpp
def test_llama_cpp_tokenizes_llama2_style_tokenizer_json_like_tokenizers(tmp_path, spm_dir):
    """No tokenizer.model: the scores llama.cpp's SPM tokenizer needs are made from merge ranks."""
    tok = spm_as_tokenizer_json(spm_dir / "tokenizer.model")
    d = write_checkpoint(tmp_path / "hf", tok, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    kvs = tokenizer_kvs(LocalSource(d), None, tok.get_vocab_size())
    v = values(kvs)
    assert v["tokenizer.ggml.model"] == "llama" and v["tokenizer.ggml.add_space_prefix"] is True
    assert v["tokenizer.ggml.token_type"][tok.token_to_id("<0x41>")] == BYTE
    assert v["tokenizer.ggml.token_type"][tok.token_to_id("<unk>")] == UNKNOWN
    out = _vocab_only_gguf(tmp_path, kvs)
    texts = [SAMPLE.replace("\t", " "), "plain words only", "Ωmega ☃ unseen"]
    for text, got in zip(texts, llama_child.tokenize(out, texts), strict=True):
        assert got == tok.encode(text, add_special_tokens=False).ids, text


@pytest.mark.parametrize("mutate", [
    lambda j: j.update(post_processor={"type": "TemplateProcessing", "single": {"x": 1}}),
    lambda j: j.update(post_processor={"type": "TemplateProcessing", "single": [{"SpecialToken": 3}]}),
    lambda j: j["model"].update(merges=[["a", "b", "c"]]),
    lambda j: j["model"].update(merges="a b"),
    lambda j: j["model"]["vocab"].update({"zz": -1}),
    lambda j: j.update(added_tokens=[{"id": "1", "content": "x"}]),
    lambda j: j.update(pre_tokenizer={"type": "Sequence", "pretokenizers": 5}),
    lambda j: j.update(pre_tokenizer={"type": "Split", "pattern": {}, "behavior": "Isolated"}),
    lambda j: j.update(model={"type": "WordPiece", "vocab": {}}),
    lambda j: j.update(model=[]),
])
def test_malformed_tokenizer_json_gives_ckpt_errors(tmp_path, llama3_dir, mutate):
    from ckptkit.errors import CkptError
    tj = json.loads((llama3_dir / "tokenizer.json").read_text())
    mutate(tj)
    d = write_checkpoint(tmp_path / "bad", None, extra={"tokenizer.json": tj})
    try:
        tokenizer_kvs(LocalSource(d), None, 0)
    except CkptError:
        pass  # a clear, deliberate error; any other exception type fails the test
