"""Every entry of mappings/pretokenizers.toml is a definition llama.cpp tokenizes exactly as the
`tokenizers` library does.

Per entry: a small byte-level BPE is trained with the entry's pre-tokenizer and normalizer (so
its merges are the ones that family's trainer would make), converted to a vocabulary-only GGUF by
ckptkit, named by identify_pre(), and tokenized by llama.cpp (child processes, a few for all
entries) under the entry's name; every text must give the ids the `tokenizers` library gives.
The definitions of the families whose real vocabularies llama.cpp ships with test vectors
(models/ggml-vocab-*.gguf with .inp/.out) are also checked against those vectors.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from tokenizers import Tokenizer, decoders, trainers
from tokenizers import pre_tokenizers as hf_pre

import llama_child
import llama_sdist
from ckptkit import mapdata
from ckptkit.conversion.tokenizer import identify_pre, tokenizer_kvs
from ckptkit.conversion.tokenizer.to_hf import pretokenizer_steps
from ckptkit.errors import UnsupportedError
from ckptkit.formats.gguf_write import kv, write_gguf
from ckptkit.sources.local import LocalSource

ENTRIES = {e.name: e for e in mapdata.pretokenizers().entries}
ORDER = list(ENTRIES)
# every definition in the table: each entry's steps, and its other spellings ("also") as "name~also1"
VARIANTS = {**{n: (e, e.steps) for n, e in ENTRIES.items()},
            **{f"{n}~also{j + 1}": (e, alt) for n, e in ENTRIES.items() for j, alt in enumerate(e.also)}}

# one text per trait a pre-tokenizer treats differently (all NFC: llama.cpp applies no normalizer)
TEXTS = {
    "english": "Hello world! I've been told it's true; DON'T panic, we'RE fine. They'll say 'Yes'.",
    "digits": "1 22 333 4444 55555 1234567 3.14159 1,234,567.89 2024-06-01 v1.2.3 0x1F ½ ²",
    "code": "def f(x):\n    return x**2  # square\n\nif (a<=b && c!=d) { s += \"str\"; }\r\n"
            "camelCase XMLHttpRequest snake_case __init__ a->b ::std::vec<int> $HOME ~/x |y| `z` ^w",
    "spaces": "  lead\ttab\t\ttabs   three    four\n\n\nnewlines \n \n trailing   \n\r\n  ",
    "scripts": "Ünïcödé naïve café — ДАННЫЕ и данные, Ελληνικά, عربي نص, 한국어 문장, ひらがなカタカナ",
    "marks": "हिन्दी भाषा, ไทยภาษา, বাংলা",      # letters followed by combining marks (Mn/Mc)
    "cjk": "我想在apple工作1314151天。中文，標點！",
    "fullwidth": "ＡＢＣ ａｂｃ １２３！？（全角）「引用」、句読点。…",
    "punct": "!!!???... ------====== ''''``````\"\"\"\" ((([[[{{{}}}]]]))) @#%&*+=<>/\\ …“quotes”",
    "ignore_merges": " zqxj",     # one pre-token everywhere; a vocabulary entry no merge makes (UNMERGED)
    "mixed": "🚀 (normal) 😶\u200d🌫️ Résumé: 3x faster ✓ «ok» ¿qué? ¡sí! it's 5'11\" ok\n"
             "<sentinel:12> IMGIMGABZ end",
}

# llama.cpp's own regexes approximate some tokenizer.json regexes (src/llama-vocab.cpp): texts on
# which that approximation gives other ids than the `tokenizers` library are expected failures
O200K = ("llama.cpp's o200k regex (GPT4O, TEKKEN: ((?=[\\p{L}])([^a-z]))) leaves \\p{M} out of its letter "
         "classes, so a combining mark ends a word the tokenizer.json regex continues")
KNOWN: dict[tuple[str, str], str] = {
    **{(n, "marks"): O200K for n in ("gpt-4o", "llama4", "minimax-m2", "kanana2", "talkie", "tekken")},
    ("kimi-k2", "marks"): "llama.cpp's custom Kimi K2 splitter leaves \\p{M} out of its letter classes",
    **{(n, "cjk"): "llama.cpp runs \\d{1,3}(?=(?:\\d{3})*\\b) with std::regex, whose \\b is ASCII: digits "
                   "before a CJK letter are cut where Oniguruma sees no word boundary"
       for n in ("tiny_aya", "cohere2moe")},
}


UNMERGED = "Ġzqxj"       # " zqxj" in the byte-level alphabet


def corpus() -> list[str]:
    base = [t for k, t in TEXTS.items() if k != "ignore_merges"]
    words = " ".join(base).split()
    lines = [" ".join(words[(i * 7) % len(words):(i * 7) % len(words) + 9]) for i in range(300)]
    return base * 3 + lines


def pre_json(entry, steps=None) -> dict:
    return {"type": "Sequence", "pretokenizers": [st.tokenizer_json() for st in steps or entry.steps]}


def normalizer_json(entry) -> dict | None:
    return None if entry.normalizer in (None, "none") else {"type": entry.normalizer}


def train(entry, steps=None) -> Tokenizer:
    """A byte-level BPE trained with the entry's definition, ignore_merges as the entry says."""
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
          "normalizer": normalizer_json(entry), "pre_tokenizer": pre_json(entry, steps), "post_processor": None,
          "decoder": None, "model": {"type": "BPE", "vocab": {}, "merges": []}}
    tok = Tokenizer.from_str(json.dumps(tj))
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, show_progress=False, special_tokens=["<|begin|>", "<|end|>"],
                                  initial_alphabet=hf_pre.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    out = json.loads(tok.to_str())
    out["model"]["ignore_merges"] = entry.ignore_merges
    vocab = out["model"]["vocab"]
    assert UNMERGED not in vocab
    vocab[UNMERGED] = max(vocab.values()) + 1
    return Tokenizer.from_str(json.dumps(out))


def config_for(entry) -> dict:
    hint = sorted(entry.hints)[0] if entry.hints else "llama"
    return {"model_type": hint} if hint[:1].islower() else {"architectures": [hint]}


def same_definition(a, b) -> bool:
    return a.steps == b.steps and (a.normalizer or "none") == (b.normalizer or "none")


def expected_name(entry) -> str:
    """The name identify_pre gives this entry's definition: its own, unless an earlier entry has
    the same definition and this one has no hints ("named only from GGUF" in the table)."""
    if entry.hints:
        return entry.name
    same = [e for e in ENTRIES.values() if e.steps == entry.steps or entry.steps in e.also]
    norm = entry.normalizer or "none"
    return next((e.name for e in same if e.normalizer == norm), same[0].name)


ARCH = [kv("general.architecture", "llama"), kv("llama.context_length", 64), kv("llama.embedding_length", 8),
        kv("llama.block_count", 1), kv("llama.feed_forward_length", 16), kv("llama.attention.head_count", 2),
        kv("llama.attention.head_count_kv", 2), kv("llama.rope.dimension_count", 4),
        kv("llama.attention.layer_norm_rms_epsilon", 1e-5)]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, dict]:
    """Per definition: the trained tokenizer, ckptkit's name for it, and its vocab-only GGUF
    (named as the entry, whatever identify_pre says); its vocabulary also holds UNMERGED."""
    root = tmp_path_factory.mktemp("pretok")
    out = {}
    for name, (entry, steps) in VARIANTS.items():
        tok = train(entry, steps)
        d = root / name
        d.mkdir()
        tok.save(str(d / "tokenizer.json"))
        (d / "config.json").write_text(json.dumps(config_for(entry)))
        kvs = tokenizer_kvs(LocalSource(d), None, tok.get_vocab_size(), entry.name)
        gguf = d / "vocab.gguf"
        write_gguf(gguf, ARCH + kvs, [], iter(()))
        named = identify_pre(json.loads((d / "tokenizer.json").read_text()), config_for(entry))
        out[name] = {"tok": tok, "gguf": gguf, "named": named}
    return out


# ---- llama.cpp, batched: a few child processes for all entries --------------------------------

CHILD = r"""
import json, sys, traceback
sys.path.insert(0, sys.argv[1])
from llama_worker import open_model
req = json.loads(open(sys.argv[2]).read())
out = {}
for model, texts in req:
    print("pretok child: loading", model, file=sys.stderr, flush=True)
    try:
        llm = open_model(model, vocab_only=True)
        out[model] = {"ids": [llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) for t in texts]}
        llm.close()
    except Exception as e:
        out[model] = {"error": repr(e)}
open(sys.argv[3], "w").write(json.dumps(out))
"""


def tokenize_many(jobs: list[tuple[Path, list[str]]], batches: int = 2) -> dict[str, dict]:
    """llama.cpp's ids for each (vocab GGUF, texts), in ``batches`` child processes (tests/llama_worker's
    open_model: extra buffer types off, vocab only). A crash fails the test naming the last model."""
    llama_child.require()
    results: dict[str, dict] = {}
    env = dict(os.environ, GGML_NO_BACKTRACE="1")
    with tempfile.TemporaryDirectory(prefix="pretok-child-") as tmp:
        procs = []
        for b in range(batches):
            part = [(str(m), t) for m, t in jobs[b::batches]]
            req, res = Path(tmp) / f"req{b}.json", Path(tmp) / f"res{b}.json"
            req.write_text(json.dumps(part))
            procs.append((subprocess.Popen([sys.executable, "-c", CHILD, str(Path(__file__).parent), str(req),
                                            str(res)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                           env=env), res))
        for proc, res in procs:
            _, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                tail = [ln for ln in err.decode("utf-8", "replace").splitlines() if "pretok child" in ln][-1:]
                pytest.fail(f"llama.cpp child died ({llama_child.describe_exit(proc.returncode)}) after {tail}",
                            pytrace=False)
            results.update(json.loads(res.read_text()))
    return results


@pytest.fixture(scope="module")
def llama_ids(built) -> dict[str, dict]:
    texts = list(TEXTS.values())
    got = tokenize_many([(b["gguf"], texts) for b in built.values()])
    return {name: got[str(b["gguf"])] for name, b in built.items()}


# ---- per entry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_entry_is_identified_from_its_definition(built, variant):
    entry = VARIANTS[variant][0]
    assert built[variant]["named"] == expected_name(entry)
    if built[variant]["named"] != entry.name:   # an alias: same definition, llama.cpp tokenizes it alike
        assert same_definition(ENTRIES[built[variant]["named"]], entry)


@pytest.mark.skipif(not llama_child.installed(), reason=llama_child.SKIP_REASON)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_llama_cpp_tokenizes_entry_like_tokenizers(built, llama_ids, variant):
    name = VARIANTS[variant][0].name
    got = llama_ids[variant]
    assert "error" not in got, f"llama.cpp refused pre-tokenizer {name!r}: {got.get('error')}"
    tok = built[variant]["tok"]
    wrong, known = [], []
    for (key, text), ids in zip(TEXTS.items(), got["ids"], strict=True):
        want = tok.encode(text, add_special_tokens=False).ids
        if ids != want:
            (known if (name, key) in KNOWN else wrong).append((key, _first_diff(tok, ids, want)))
    assert not wrong, f"{variant}: llama.cpp differs from tokenizers on {wrong}"
    # the entry's ignore_merges is llama.cpp's for its name: a vocabulary entry no merge makes is one
    # token exactly when it is set
    one = got["ids"][list(TEXTS).index("ignore_merges")] == [tok.token_to_id(UNMERGED)]
    assert one == VARIANTS[variant][0].ignore_merges
    if known:
        pytest.xfail("; ".join(f"{k}: {KNOWN[(name, k)]}" for k, _ in known))


def _first_diff(tok: Tokenizer, got: list[int], want: list[int]) -> str:
    i = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    show = lambda ids: [tok.id_to_token(t) for t in ids[max(0, i - 2): i + 4]]  # noqa: E731
    return f"at token {i}: llama.cpp {show(got)} vs tokenizers {show(want)}"


@pytest.mark.parametrize("name", ORDER)
def test_gguf_to_hf_definition_is_identified_back(name):
    entry = ENTRIES[name]
    found = pretokenizer_steps(name)
    assert found is not None
    steps, norm, ignore_merges = found
    assert ignore_merges == entry.ignore_merges
    tj = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": steps},
          "normalizer": {"type": norm} if norm else None}
    assert identify_pre(tj, config_for(entry)) == expected_name(entry)
    # and the `tokenizers` library accepts the rebuilt definition
    Tokenizer.from_str(json.dumps({"version": "1.0", "added_tokens": [], "normalizer": tj["normalizer"],
                                   "pre_tokenizer": tj["pre_tokenizer"], "model": {"type": "BPE", "vocab": {},
                                                                                   "merges": []}}))


def test_every_byte_level_name_llama_cpp_accepts_has_an_entry():
    # not byte-level BPE (SentencePiece-style over raw UTF-8, whitespace) or a custom llama.cpp splitter
    missing = mapdata.pretokenizers().accepted - set(ENTRIES)
    assert missing == {"gemma4", "granite-embed-multi-311m", "sarvam-moe", "whitespace", "afmoe"}


def test_deepseek_llm_is_no_longer_refused_and_unknown_definitions_still_are():
    tj = {"pre_tokenizer": pre_json(ENTRIES["deepseek-llm"]), "normalizer": None}
    assert identify_pre(tj, {"model_type": "deepseek_v2"}) == "deepseek-llm"
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[\n]"
    with pytest.raises(UnsupportedError, match="unknown BPE pre-tokenizer.*--pre"):
        identify_pre(tj)


def test_either_spelling_of_digits_and_byte_level_regex_matches():
    gpt2_split = {"type": "Split", "pattern": {"Regex": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"},
                  "behavior": "Isolated", "invert": False}
    spelled = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{N}"}, "behavior": "Isolated", "invert": False},
        gpt2_split, {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    assert identify_pre({"pre_tokenizer": spelled}, {"model_type": "starcoder2"}) == "starcoder"
    text = TEXTS["digits"] + TEXTS["english"]
    seq = Tokenizer.from_str(json.dumps({"version": "1.0", "added_tokens": [], "pre_tokenizer": spelled,
                                         "model": {"type": "BPE", "vocab": {}, "merges": []}}))
    ref = Tokenizer.from_str(json.dumps({"version": "1.0", "added_tokens": [],
                                         "pre_tokenizer": pre_json(ENTRIES["starcoder"]),
                                         "model": {"type": "BPE", "vocab": {}, "merges": []}}))
    assert seq.pre_tokenizer.pre_tokenize_str(text) == ref.pre_tokenizer.pre_tokenize_str(text)


# ---- llama.cpp's test vectors: the definitions of its shipped vocabularies ----------------------

VECTORS = llama_sdist.CACHE / f"llama-cpp-vocab-vectors-{llama_sdist.VERSION}"


@pytest.fixture(scope="module")
def vectors_dir() -> Path:
    """models/ggml-vocab-*.gguf with their .inp/.out from the llama-cpp-python sdist, extracted once."""
    if not list(VECTORS.glob("*.gguf.out")):
        tar = llama_sdist.archive()
        staging = Path(tempfile.mkdtemp(prefix="vectors-", dir=VECTORS.parent))
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                name = m.name.rsplit("/", 1)[-1]
                f = tf.extractfile(m) if "/models/ggml-vocab-" in m.name else None
                if f is not None:
                    (staging / name).write_bytes(f.read())
        try:
            os.rename(staging, VECTORS)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return VECTORS


@pytest.mark.parametrize("name", ["deepseek-llm", "deepseek-coder", "falcon", "gpt-2", "llama-bpe", "mpt", "qwen2",
                                  "qwen35", "refact", "starcoder", "command-r"])
def test_definition_reproduces_llama_cpp_test_vectors(vectors_dir, name):
    from ckptkit.formats.gguf import read_gguf_header
    from ckptkit.sources.local import LocalSource
    path = vectors_dir / f"ggml-vocab-{name}.gguf"
    if not path.exists():
        pytest.skip(f"{path.name} is not in this sdist")
    # the vocabulary as stored (ckptkit's header reader: gguf-py's takes 5-10 x longer on these)
    meta = read_gguf_header(LocalSource(path), path.name).metadata
    assert meta["tokenizer.ggml.pre"] == name
    entry = ENTRIES[name]
    tokens = meta["tokenizer.ggml.tokens"]
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": ty == 4, "special": ty == 3}
             for i, (t, ty) in enumerate(zip(tokens, meta["tokenizer.ggml.token_type"], strict=True)) if ty in (3, 4)]
    tok = Tokenizer.from_str(json.dumps({
        "version": "1.0", "added_tokens": added, "normalizer": normalizer_json(entry), "pre_tokenizer": pre_json(entry),
        "model": {"type": "BPE", "ignore_merges": entry.ignore_merges, "vocab": {t: i for i, t in enumerate(tokens)},
                  "merges": [m.split(" ", 1) for m in meta["tokenizer.ggml.merges"]]}}))
    inp = (vectors_dir / f"{path.name}.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
    out = (vectors_dir / f"{path.name}.out").read_text().split("\n")[:len(inp)]
    assert len(inp) > 40
    for text, line in zip(inp, out, strict=True):
        assert tok.encode(text, add_special_tokens=False).ids == [int(x) for x in line.split()], text
