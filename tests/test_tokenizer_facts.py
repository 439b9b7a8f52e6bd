"""The tokenizer fact (tokenizer files, GGUF metadata, vocabulary-only GGUF, the Hub) and
validate's tokenizer findings, each failing on a broken copy and absent on the good one."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import gguf
import pytest

import llama_sdist
from ckptkit import api
from ckptkit.conversion import convert_to_gguf
from ckptkit.conversion.tokenizer import tokenizer_kvs
from ckptkit.formats.gguf_write import kv, write_gguf
from ckptkit.infer import infer
from ckptkit.sources.local import LocalSource
from ckptkit.validate import CODES, validate
from ckptkit.validate.tokenizer import template_error

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tiny-llama"
TOKENIZER_CODES = {c for c in CODES if c.startswith("tokenizer.")}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckptkit", *args], capture_output=True, text=True)


def tokenizer_fact(spec: str):
    return infer(api.inspect(spec)).facts["tokenizer"]


def edit(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d, indent=1))


@pytest.fixture
def model(tmp_path) -> Path:
    d = tmp_path / "tiny-llama"
    shutil.copytree(EXAMPLE, d)
    return d


@pytest.fixture(scope="module")
def hf_tokenizer():
    """transformers' reading of the example's tokenizer: the reference for the facts."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(EXAMPLE))


def _vocab_only(path: Path, arch: bool = True) -> Path:
    """A weightless GGUF holding the example's vocabulary, as llama.cpp's ggml-vocab-*.gguf
    files are (architecture keys, tokenizer keys, no tensors)."""
    kvs = tokenizer_kvs(LocalSource(EXAMPLE), None, 384)
    head = [kv("general.architecture", "llama"), kv("llama.context_length", 256),
            kv("llama.embedding_length", 4096), kv("llama.block_count", 32)] if arch else []
    write_gguf(path, head + kvs, [], iter(()))
    return path


# ---- facts ----------------------------------------------------------------------------------------

def test_facts_from_tokenizer_files_agree_with_transformers(hf_tokenizer):
    f = tokenizer_fact(str(EXAMPLE))
    v = f.value
    assert f.source == "config"
    assert v["model"] == "BPE" and v["pre"] == "gpt-2"   # a plain ByteLevel pre-tokenizer
    assert v["vocab_size"] == len(hf_tokenizer)
    assert v["bos_token_id"] == hf_tokenizer.bos_token_id
    assert v["eos_token_id"] == hf_tokenizer.eos_token_id
    assert v["pad_token_id"] == hf_tokenizer.pad_token_id
    assert "unk_token_id" not in v and hf_tokenizer.unk_token_id is None
    assert v["chat_template"] is True and hf_tokenizer.chat_template
    assert "tokenizer.json:model.type = BPE" in f.evidence
    assert "tokenizer_config.json:chat_template" in f.evidence


def _trained(kind: str):
    """A small WordPiece or Unigram tokenizer.json, trained here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    text = [f"the {w} of {n} tokens, said the {w}er" for n in range(50) for w in ("cat", "dog", "owl")]
    if kind == "WordPiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[UNK]", "[CLS]", "[SEP]"])
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=["<unk>", "<s>", "</s>"],
                                          unk_token="<unk>")
    tok.train_from_iterator(text, trainer)
    return tok


@pytest.mark.parametrize("kind", ["bpe", "spm", "WordPiece", "Unigram"])
def test_model_kind_and_pre_as_the_converter_names_them(model, tokenizer_dir, kind):
    from tokenizers import Tokenizer
    if kind in ("bpe", "spm"):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tokenizer_dir(kind) / name, model / name)
        tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    else:
        tok = _trained(kind)
        tok.save(str(model / "tokenizer.json"))
    v = tokenizer_fact(str(model)).value
    assert v["vocab_size"] == tok.get_vocab_size(with_added_tokens=True)
    if kind in ("bpe", "spm"):   # the GGUF converter's names are the reference
        kvs = {k.key: k.value for k in tokenizer_kvs(LocalSource(model), None, v["vocab_size"])}
        assert v["pre"] == kvs["tokenizer.ggml.pre"]
        assert (v["model"], kvs["tokenizer.ggml.model"]) == \
               (("BPE", "gpt2") if kind == "bpe" else ("SentencePiece-BPE", "llama"))
    else:
        assert v["model"] == kind
        assert v["pre"] == ("default" if kind == "Unigram" else None)


def test_facts_fall_back_to_config_ids_and_see_a_jinja_template(model):
    tc = json.loads((model / "tokenizer_config.json").read_text())
    (model / "chat_template.jinja").write_text(tc.pop("chat_template"))
    for k in ("bos_token", "eos_token", "pad_token"):
        tc.pop(k)
    (model / "tokenizer_config.json").write_text(json.dumps(tc))
    edit(model / "config.json", lambda c: c.update(eos_token_id=[2, 4]))
    f = tokenizer_fact(str(model))
    assert f.value["bos_token_id"] == 1 and f.value["eos_token_id"] == 2
    assert "config.json:eos_token_id = 2" in f.evidence
    assert f.value["chat_template"] is True and "chat_template.jinja" in f.evidence


def test_no_tokenizer_files_no_fact(model):
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (model / name).unlink()
    assert tokenizer_fact(str(model)).value is None
    r = cli("inspect", str(model))
    assert r.returncode == 0 and "\n  tokenizer " not in r.stdout


def test_facts_from_the_gguf_ckptkit_writes(tmp_path):
    out = tmp_path / "tiny.gguf"
    convert_to_gguf(str(EXAMPLE), out)
    g, hf = tokenizer_fact(str(out)), tokenizer_fact(str(EXAMPLE))
    assert g.source == "gguf" and g.value["model"] == "gpt2"
    # the same tokenizer, however it is stored
    assert {k: x for k, x in g.value.items() if k != "model"} == \
           {k: x for k, x in hf.value.items() if k != "model"}
    meta = gguf.GGUFReader(str(out))   # gguf-py's reading of the same keys
    assert len(meta.fields["tokenizer.ggml.tokens"].data) == g.value["vocab_size"]
    assert meta.fields["tokenizer.ggml.eos_token_id"].contents() == g.value["eos_token_id"]
    assert meta.fields["tokenizer.ggml.pre"].contents() == g.value["pre"]


@pytest.mark.parametrize("arch", [True, False], ids=["with-arch-keys", "tokenizer-keys-only"])
def test_vocab_only_gguf_shows_its_tokenizer(tmp_path, arch):
    path = _vocab_only(tmp_path / "ggml-vocab-tiny.gguf", arch)
    f = tokenizer_fact(str(path))
    assert f.value == {"model": "gpt2", "pre": "gpt-2", "vocab_size": 384, "bos_token_id": 1,
                       "eos_token_id": 2, "pad_token_id": 0, "chat_template": True}
    r = cli("inspect", str(path))
    assert r.returncode == 0, r.stderr
    arch_part = r.stdout[r.stdout.index("\narchitecture"):]
    lines = {ln.split()[0]: ln for ln in arch_part.splitlines() if ln.startswith("  ")}
    assert "tokenizer" in lines and "gpt2 (byte-level BPE), pre gpt-2, 384 tokens" in lines["tokenizer"]
    assert "bos 1, eos 2, pad 0; chat template" in lines["tokenizer"]
    for gone in ("hidden", "vocab", "norm", "attention", "ffn", "layers"):
        assert gone not in lines, r.stdout
    assert "None" not in r.stdout and "?" not in r.stdout
    rep = json.loads(cli("inspect", str(path), "--json").stdout)
    assert rep["facts"]["tokenizer"]["value"] == f.value
    # nothing to audit but the vocabulary: its block_count describes no weights
    v = validate(str(path))
    assert v.findings == [], [x.message for x in v.findings]


VOCAB_CACHE = llama_sdist.CACHE / f"llama-cpp-vocab-{llama_sdist.VERSION}"


@pytest.fixture(scope="module")
def llama_cpp_vocabs() -> dict[str, Path]:
    """llama.cpp's own vocabulary-only GGUFs (models/ggml-vocab-*.gguf of the sdist), extracted
    into the test cache once."""
    if not list(VOCAB_CACHE.glob("ggml-vocab-*.gguf")):
        tar = llama_sdist.archive()
        staging = Path(tempfile.mkdtemp(prefix="vocab-", dir=VOCAB_CACHE.parent))  # same filesystem
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                name = m.name.rsplit("/", 1)[-1]
                f = tf.extractfile(m) if "/models/" in m.name else None
                if f is not None and name.startswith("ggml-vocab-") and name.endswith(".gguf"):
                    (staging / name).write_bytes(f.read())
        try:
            os.rename(staging, VOCAB_CACHE)   # atomic: concurrent runs race safely
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return {p.name: p for p in VOCAB_CACHE.glob("ggml-vocab-*.gguf")}


@pytest.mark.parametrize("name, model, pre, n, bos, eos, template", [
    ("ggml-vocab-llama-bpe.gguf", "gpt2", "llama-bpe", 128256, 128000, 128001, False),
    ("ggml-vocab-llama-spm.gguf", "llama", "default", 32000, 1, 2, False),
    ("ggml-vocab-qwen2.gguf", "gpt2", "qwen2", 151936, 151643, 151643, True),
    ("ggml-vocab-bert-bge.gguf", "bert", "bert-bge", 30522, None, None, False),
])
def test_llama_cpp_vocab_files(llama_cpp_vocabs, name, model, pre, n, bos, eos, template):
    path = llama_cpp_vocabs.get(name)
    if path is None:
        pytest.skip(f"{name} is not in this sdist")
    meta = gguf.GGUFReader(str(path))
    assert len(meta.tensors) == 0
    v = tokenizer_fact(str(path)).value
    assert (v["model"], v["pre"], v["vocab_size"], v["bos_token_id"], v["eos_token_id"],
            v["chat_template"]) == (model, pre, n, bos, eos, template)
    assert len(meta.fields["tokenizer.ggml.tokens"].data) == n     # gguf-py agrees
    # real chat templates (Qwen2's) parse; nothing else is there to audit
    assert validate(str(path)).findings == []
    r = cli("inspect", str(path))
    assert r.returncode == 0 and f"{n:,} tokens" in r.stdout and "hidden" not in r.stdout


def test_facts_from_the_hub_equal_the_local_ones(hub, hf_cache):
    hub.add_repo_from_dir("tok/tiny-llama", EXAMPLE)
    local, remote = tokenizer_fact(str(EXAMPLE)), tokenizer_fact("tok/tiny-llama")
    assert remote.value == local.value and remote.evidence == local.evidence
    got = {r.path.rsplit("/", 1)[-1] for r in hub.requests}
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json"} <= got
    r = cli("inspect", "tok/tiny-llama")
    assert r.returncode == 0, r.stderr
    assert "tokenizer    BPE, pre gpt-2, 384 tokens; bos 1, eos 2, pad 0; chat template" in r.stdout


# ---- validate ---------------------------------------------------------------------------------------

def tokenizer_findings(spec: str) -> list:
    return [f for f in validate(spec).findings if f.code in TOKENIZER_CODES]


def test_good_example_has_no_tokenizer_findings():
    assert tokenizer_findings(str(EXAMPLE)) == []


def test_eos_id_at_the_embedding_rows(model):
    edit(model / "generation_config.json", lambda c: c.update(eos_token_id=[2, 384]))
    (f,) = tokenizer_findings(str(model))
    assert (f.code, f.level, f.key, f.file) == ("tokenizer.id_beyond_embedding", "error",
                                                "generation_config.json:eos_token_id",
                                                "generation_config.json")
    assert "id 384" in f.message and "384 embedding rows" in f.message


def test_bos_absent_from_the_vocabulary(model):
    # the <|begin_of_text|> token taken out: config.json's id 1 and tokenizer_config's text
    # now name nothing the tokenizer holds
    def drop_bos(t: dict) -> None:
        t["added_tokens"] = [a for a in t["added_tokens"] if a["id"] != 1]
        del t["model"]["vocab"]["<|begin_of_text|>"]
        t["post_processor"] = None
    edit(model / "tokenizer.json", drop_bos)
    fs = tokenizer_findings(str(model))
    assert {(f.code, f.key) for f in fs} == {
        ("tokenizer.special_not_in_vocab", "config.json:bos_token_id"),
        ("tokenizer.special_not_in_vocab", "generation_config.json:bos_token_id"),
        ("tokenizer.special_not_in_vocab", "tokenizer_config.json:bos_token")}
    assert all(f.level == "error" for f in fs)
    assert any("'<|begin_of_text|>'" in f.message for f in fs)


def test_added_token_beyond_the_embedding(model):
    extra = {"id": 390, "content": "<|tool|>", "single_word": False, "lstrip": False,
             "rstrip": False, "normalized": False, "special": True}
    edit(model / "tokenizer.json", lambda t: t["added_tokens"].append(extra))
    (f,) = tokenizer_findings(str(model))
    assert (f.code, f.file) == ("tokenizer.id_beyond_embedding", "tokenizer.json")
    assert "'<|tool|>'" in f.message and "id 390" in f.message
    r = cli("validate", str(model))
    assert r.returncode == 1 and "tokenizer.id_beyond_embedding" in r.stdout


@pytest.mark.parametrize("template, where", [
    ("{% for m in messages %}{{ m['content'] }}", "tokenizer_config.json:chat_template"),
    ("{{ messages[0]['content'] | no_such_filter }}", "tokenizer_config.json:chat_template"),
])
def test_chat_template_that_does_not_parse(model, template, where):
    pytest.importorskip("jinja2")
    edit(model / "tokenizer_config.json", lambda c: c.update(chat_template=template))
    (f,) = tokenizer_findings(str(model))
    assert (f.code, f.level, f.key, f.file) == ("tokenizer.chat_template", "error", where,
                                                "tokenizer_config.json")
    assert "line 1" in f.message


def test_chat_template_file_and_transformers_tags(model):
    pytest.importorskip("jinja2")
    # transformers' own extensions parse: loop controls and {% generation %}
    ok = ("{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
          "{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}")
    assert template_error(ok) is None
    (model / "chat_template.jinja").write_text("{% if messages %}\n{{ messages[0] }\n{% endif %}")
    (f,) = tokenizer_findings(str(model))
    assert (f.code, f.file) == ("tokenizer.chat_template", "chat_template.jinja")
    assert "line 2" in f.message


@pytest.mark.parametrize("text, why", [("{not json", "not valid JSON"), ("[1, 2]", "not a JSON object")])
def test_unreadable_tokenizer_file_is_a_finding_not_a_crash(model, text, why):
    (model / "tokenizer_config.json").write_text(text)
    assert cli("inspect", str(model)).returncode == 0
    (f,) = tokenizer_findings(str(model))
    assert (f.code, f.file) == ("tokenizer.unreadable", "tokenizer_config.json") and why in f.message


def _set_u32(path: Path, key: str, value: int) -> None:
    """Overwrite one uint32 KV in place (as gguf-py's gguf_set_metadata does)."""
    r = gguf.GGUFReader(str(path), "r+")
    field = r.fields[key]
    field.parts[field.data[0]][0] = value
    del r


def test_gguf_special_ids_beyond_the_embedding_or_the_tokens(tmp_path):
    out = tmp_path / "tiny.gguf"
    convert_to_gguf(str(EXAMPLE), out)
    vocab = _vocab_only(tmp_path / "vocab.gguf")
    assert tokenizer_findings(str(out)) == [] and tokenizer_findings(str(vocab)) == []
    _set_u32(out, "tokenizer.ggml.eos_token_id", 384)      # the embedding has rows 0..383
    assert tokenizer_fact(str(out)).value["eos_token_id"] == 384
    (f,) = tokenizer_findings(str(out))
    assert (f.code, f.key) == ("tokenizer.id_beyond_embedding", "tokenizer.ggml.eos_token_id")
    _set_u32(vocab, "tokenizer.ggml.bos_token_id", 500)    # no embedding; 384 tokens
    (f,) = tokenizer_findings(str(vocab))
    assert (f.code, f.key) == ("tokenizer.special_not_in_vocab", "tokenizer.ggml.bos_token_id")
    assert "0..383" in f.message


def test_codes_are_documented():
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    for code in TOKENIZER_CODES:
        assert f"| `{code}` | {CODES[code][0]} |" in readme, code
