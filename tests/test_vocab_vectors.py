"""Tokenizers both ways, proven on llama.cpp's own test vectors (models/ggml-vocab-*.gguf with
.inp/.out in the llama-cpp-python sdist; .out holds what the original Hugging Face tokenizer gives,
``encode(text, add_special_tokens=False)``, read as tests/test-tokenizer-0.cpp reads them):

- GGUF -> HF: ckptkit's tokenizer.json, loaded with ``tokenizers``, gives every expected id list
  (and SentencePiece's own library, loading the rebuilt tokenizer.model, too);
- back with --vocab-only: llama.cpp (vocab_only, in a child) gives them again;
- nomic-bert-moe's Unigram, which has no .out: llama.cpp on the original file is the reference;
- the tiny fixtures' tokenizers: tokenizer.json -> GGUF -> tokenizer.json tokenizes a multilingual
  text exactly as the original.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

import llama_child
import llama_sdist
from ckptkit import mapdata
from ckptkit.conversion import convert_to_gguf, convert_to_hf
from ckptkit.errors import UnsupportedError

VECTORS = llama_sdist.CACHE / f"llama-cpp-vocab-vectors-{llama_sdist.VERSION}"
SEP = "\n__ggml_vocab_test__\n"      # test-tokenizer-0.cpp's separator between test strings

# every vocabulary of the sdist with test vectors
NAMES = ["bert-bge", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4", "gpt-2", "llama-bpe",
         "llama-spm", "mpt", "phi-3", "qwen2", "qwen35", "refact", "starcoder"]

MULTILINGUAL = ("Hello world! Ünïcödé café naïve résumé — 日本語のテキスト、中文字符，한국어 문장, русский текст, "
                "العربية, हिन्दी, ελληνικά 🙂🚀\n"
                "digits 0 12 345 6789 3.14159 1,000,000 2024-06-01\n"
                "def f(x):\n\treturn x**2  # comment\n    if a != b: {'k': [1, 2]}  // <tag attr=\"v\">\n"
                "whitespace runs:   \t\t  \n\n\n   end  \r\n"
                "full-width: ＡＢＣ１２３！？ ＨＥＬＬＯ　ｗｏｒｌｄ")


@pytest.fixture(scope="module")
def vectors() -> Path:
    """The vocabularies and their .inp/.out, extracted from the sdist into the test cache once."""
    if not list(VECTORS.glob("ggml-vocab-*.gguf.out")):
        tar = llama_sdist.archive()
        staging = Path(tempfile.mkdtemp(prefix="vectors-", dir=VECTORS.parent))
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                name = m.name.rsplit("/", 1)[-1]
                f = tf.extractfile(m) if "/vendor/llama.cpp/models/" in m.name else None
                if f is not None and name.startswith("ggml-vocab-") and name.endswith((".gguf", ".inp", ".out")):
                    (staging / name).write_bytes(f.read())
        try:
            os.rename(staging, VECTORS)     # atomic: concurrent runs race safely
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return VECTORS


def read_vectors(gguf: Path) -> tuple[list[str], list[list[int]]]:
    """(texts, ids) as test-tokenizer-0.cpp reads them: texts split at the separator line (the
    file ends with one), one line of space-separated ids per text."""
    raw = Path(f"{gguf}.inp").read_bytes().decode("utf-8")
    texts, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    ids = [[int(x) for x in line.split()] for line in Path(f"{gguf}.out").read_text().splitlines()]
    assert len(texts) == len(ids) > 20
    return texts, ids


@pytest.fixture(scope="module")
def hf_folder(vectors, tmp_path_factory):
    """GGUF -> HF once per vocabulary: ``hf_folder(name) -> (gguf, folder)``."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in done:
            gguf = vectors / f"ggml-vocab-{name}.gguf"
            if not gguf.exists():
                pytest.skip(f"{gguf.name} is not in this sdist")
            _skip_unknown_pre(gguf)
            out = tmp_path_factory.mktemp("vocab") / name
            res = convert_to_hf(str(gguf), out)
            assert res.plan is None and "tokenizer.json" in res.files, res.notes
            done[name] = (gguf, out)
        return done[name]
    return get


def _skip_unknown_pre(gguf: Path) -> None:
    # ckptkit's header reader: gguf-py's GGUFReader takes ~36 s on gemma-4's 262k-token file
    from ckptkit.formats.gguf import read_gguf_header
    from ckptkit.sources.local import LocalSource
    meta = read_gguf_header(LocalSource(gguf), gguf.name).metadata
    model, pre = meta["tokenizer.ggml.model"], meta.get("tokenizer.ggml.pre", "default")
    if model == "gpt2" and pre not in {e.name for e in mapdata.pretokenizers().entries}:
        pytest.skip(f"pre-tokenizer {pre!r} has no entry in mappings/pretokenizers.toml yet")


def _tokenize_once(gguf: Path, plain: list[str], with_special: list[str]) -> tuple[list, list]:
    """llama.cpp's ids for ``plain`` texts and for ``with_special`` ones with BOS/EOS, in one child."""
    ids = llama_child.run("tokenize", gguf, texts=plain + with_special, parse_special=False,
                          add_special=[False] * len(plain) + [True] * len(with_special))[0]["ids"]
    return ids[:len(plain)], ids[len(plain):]


def _mismatches(texts, want, got) -> list[str]:
    return [f"{t!r}: want {w} got {g}" for t, w, g in zip(texts, want, got, strict=True) if w != g]


@pytest.mark.parametrize("name", NAMES)
def test_gguf_to_hf_tokenizer_gives_the_test_vectors(hf_folder, name):
    from tokenizers import Tokenizer
    gguf, out = hf_folder(name)
    texts, want = read_vectors(gguf)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    got = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
    bad = _mismatches(texts, want, got)
    assert not bad, f"{len(bad)}/{len(texts)} differ:\n" + "\n".join(bad[:5])
    if (out / "tokenizer.model").exists():     # SentencePiece's own library reads the rebuilt model alike
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
        bad = _mismatches(texts, want, [sp.encode(t) for t in texts])
        assert not bad, "tokenizer.model: " + "\n".join(bad[:5])


@pytest.mark.parametrize("name", NAMES)
def test_back_with_vocab_only_llama_cpp_gives_them_again(hf_folder, name, tmp_path):
    from tokenizers import Tokenizer
    llama_child.require()
    gguf, out = hf_folder(name)
    texts, want = read_vectors(gguf)
    back = tmp_path / "back.gguf"
    # a tokenizer-only folder names no architecture: llama.cpp tokenizes alike under any
    res = convert_to_gguf(str(out), back, vocab_only=True, family="llama")
    assert res.plan.tensors == [] and back.exists()
    # one child for the vocabulary: every test string, then three with BOS/EOS added (llama.cpp's
    # add_special), which must be what tokenizer.json's post-processor adds
    got, special = _tokenize_once(back, texts, texts[:3])
    bad = _mismatches(texts, want, got)
    assert not bad, f"{len(bad)}/{len(texts)} differ:\n" + "\n".join(bad[:5])
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert special == [e.ids for e in tok.encode_batch(texts[:3], add_special_tokens=True)]


def test_unigram_without_vectors_tokenizes_as_llama_cpp(vectors, tmp_path):
    """nomic-bert-moe's Unigram ("t5", a compiled SentencePiece normaliser) has no .out: llama.cpp on
    the original file is the reference, over every test string of the other vocabularies."""
    from tokenizers import Tokenizer
    llama_child.require()
    gguf = vectors / "ggml-vocab-nomic-bert-moe.gguf"
    if not gguf.exists():
        pytest.skip(f"{gguf.name} is not in this sdist")
    texts = list(dict.fromkeys(t for p in sorted(vectors.glob("*.gguf.inp")) for t in read_vectors(p.with_suffix(""))[0]))
    texts += [MULTILINGUAL, *MULTILINGUAL.splitlines(), "  lead and trail  ", "\t\ttabs\tand\u3000ideographic space"]
    want = llama_child.tokenize(gguf, texts)
    res = convert_to_hf(str(gguf), tmp_path / "hf")
    assert res.plan is None and "tokenizer.json" in res.files
    tok = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    bad = _mismatches(texts, want, [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)])
    assert not bad, f"{len(bad)}/{len(texts)} differ:\n" + "\n".join(bad[:5])
    import sentencepiece  # the rebuilt Unigram tokenizer.model, with the GGUF's normalisation map
    sp = sentencepiece.SentencePieceProcessor(model_file=str(tmp_path / "hf" / "tokenizer.model"))
    bad = _mismatches(texts, want, [sp.encode(t) for t in texts])
    assert not bad, "tokenizer.model: " + "\n".join(bad[:5])
    back = tmp_path / "back.gguf"
    convert_to_gguf(str(tmp_path / "hf"), back, vocab_only=True, family="llama")
    got, special = _tokenize_once(back, texts, texts[:3])
    bad = _mismatches(texts, want, got)
    assert not bad, "back: " + "\n".join(bad[:5])
    assert special == [e.ids for e in tok.encode_batch(texts[:3], add_special_tokens=True)]


def test_what_cannot_be_rebuilt_is_refused(tmp_path):
    """A tokenizer model with no Hugging Face counterpart here (RWKV's) is refused in one line, and
    a vocabulary-only file then writes nothing."""
    from ckptkit.formats.gguf_write import VT, kv, write_gguf
    path = tmp_path / "ggml-vocab-rwkv.gguf"
    write_gguf(path, [kv("general.architecture", "rwkv6"), kv("tokenizer.ggml.model", "rwkv"),
                      kv("tokenizer.ggml.tokens", ["a", "b"], VT.ARRAY, VT.STRING)], [], iter(()))
    with pytest.raises(UnsupportedError, match="tokenizer model 'rwkv' is not rebuilt"):
        convert_to_hf(str(path), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["bpe", "spm"])
def test_tiny_tokenizers_round_trip(tokenizer_dir, kind, tmp_path):
    """tokenizer.json -> GGUF (--vocab-only) -> tokenizer.json tokenizes like the original and like
    llama.cpp reading the GGUF; the tiny families all use one of these two tokenizers."""
    from tokenizers import Tokenizer
    src = tokenizer_dir(kind)
    gguf = tmp_path / "tok.gguf"
    convert_to_gguf(str(src), gguf, vocab_only=True, family="llama")
    res = convert_to_hf(str(gguf), tmp_path / "hf")
    assert res.plan is None and not res.notes, res.notes
    a = Tokenizer.from_file(str(src / "tokenizer.json"))
    b = Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json"))
    texts = [MULTILINGUAL, *MULTILINGUAL.splitlines()]
    got = [e.ids for e in b.encode_batch(texts, add_special_tokens=False)]
    for text, ids in zip(texts, got, strict=True):
        # the fixture's Metaspace(prepend_scheme="first") adds no dummy prefix to a text that starts
        # with a space; llama.cpp and SentencePiece always do, and the GGUF is read as they read it
        if kind == "bpe" or not text.startswith(" "):
            assert ids == a.encode(text, add_special_tokens=False).ids, text
            assert b.decode(ids) == a.decode(ids)
    assert b.encode(MULTILINGUAL).ids[0] == a.encode(MULTILINGUAL).ids[0] == 1     # BOS added alike
    if llama_child.installed():
        assert llama_child.tokenize(gguf, texts) == got


def test_cli_vocab_only_both_ways(vectors, tmp_path):
    """The command line: a vocabulary-only GGUF to a tokenizer folder, and back with --vocab-only
    (which refuses a folder of tokenizer files alone without --family, in one line)."""
    import subprocess
    import sys

    import gguf as gguf_py

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True)
    src = vectors / "ggml-vocab-llama-spm.gguf"
    if not src.exists():
        pytest.skip(f"{src.name} is not in this sdist")
    out = tmp_path / "tok"
    r = cli("convert", str(src), str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer.model", "tokenizer_config.json"]
    assert "tokenizer only" in r.stderr
    r = cli("convert", str(out), str(tmp_path / "x.gguf"), "--vocab-only")
    assert r.returncode != 0 and "--family" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("convert", str(out), str(tmp_path / "x.gguf"), "--vocab-only", "--family", "llama")
    assert r.returncode == 0, r.stderr
    back = gguf_py.GGUFReader(str(tmp_path / "x.gguf"))
    orig = gguf_py.GGUFReader(str(src))
    assert len(back.tensors) == 0 and back.fields["general.architecture"].contents() == "llama"
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores",
                "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token"):
        assert back.fields[key].contents() == orig.fields[key].contents(), key


def test_vocab_only_of_a_model_keeps_its_metadata(tiny_model, tmp_path):
    """--vocab-only on a model folder: the full conversion's header without the tensors."""
    import gguf as gguf_py
    src = tiny_model("llama")
    full, tok = tmp_path / "full.gguf", tmp_path / "tok.gguf"
    convert_to_gguf(str(src), full, outtype="f32")
    res = convert_to_gguf(str(src), tok, vocab_only=True)
    assert res.plan.tensors == []
    a, b = gguf_py.GGUFReader(str(full)), gguf_py.GGUFReader(str(tok))
    assert len(b.tensors) == 0
    want = {k: f.contents() for k, f in a.fields.items() if not k.startswith("GGUF.") and k != "general.file_type"}
    assert {k: f.contents() for k, f in b.fields.items() if not k.startswith("GGUF.")} == want
    if llama_child.installed():
        assert llama_child.tokenize(tok, [MULTILINGUAL]) == llama_child.tokenize(full, [MULTILINGUAL])
