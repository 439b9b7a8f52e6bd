"""File and repo names mean the same wherever ckptkit reads them: pickle files (local folders,
Hub listings, the pickle-only refusal, the policy), split-GGUF part names (reader, writer, the
spec of one part) and Hub repo ids (the spec parser and the command-line router)."""
from __future__ import annotations

from pathlib import Path

import pytest

import modelgen
from ckptkit import api
from ckptkit.errors import UnsafeInputError
from ckptkit.formats.gguf import split_gguf_parts
from ckptkit.formats.gguf_write import split_name
from ckptkit.sources.files import PICKLE_SUFFIXES, is_pickle, parse_split_gguf, split_gguf_name
from ckptkit.sources.hub import looks_like_repo_id
from ckptkit.sources.local import LocalSource
from ckptkit.validate import validate
from ckptkit.validate.policy import Policy

FORBID = Policy(path="ci.toml", forbid_pickle=True)


def pickle_findings(v) -> list[str]:
    return sorted(f.file for f in v.findings if f.code == "policy.pickle")


# ---- pickles ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["model.pickle", "weights.PKL", "pytorch_model.bin", "sub/extra.pth"])
def test_local_pickle_is_listed_and_forbidden(name, tiny_model, tmp_path):
    path = modelgen.copy_model(tiny_model("llama", tokenizer=False), tmp_path / "m")
    (path / name).parent.mkdir(exist_ok=True)
    (path / name).write_bytes(b"\x80\x04not really a pickle")      # never opened
    assert name in LocalSource(path).files()
    assert pickle_findings(validate(str(path), policy=FORBID)) == [name]
    assert pickle_findings(validate(str(path), policy=Policy())) == []


def test_hub_pickle_is_forbidden(tiny_model, tmp_path, hub, hf_cache):
    path = modelgen.copy_model(tiny_model("llama", tokenizer=False), tmp_path / "m")
    (path / "model.pickle").write_bytes(b"\x80\x04not really a pickle")
    hub.add_repo_from_dir("vocab/pickled", path)
    assert pickle_findings(validate("vocab/pickled", policy=FORBID)) == ["model.pickle"]


def test_pickle_only_folder_and_repo_are_refused(tmp_path, hub, hf_cache):
    (tmp_path / "model.pickle").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeInputError, match=r"only pickle files \(model.pickle\).*never unpickles"):
        api.inspect(str(tmp_path))
    hub.add_repo("vocab/pickle-only", {"model.pickle": b"\x80\x04junk", "config.json": b"{}"})
    with pytest.raises(UnsafeInputError, match="never unpickles"):
        api.inspect("vocab/pickle-only")


def test_pickle_names():
    assert all(is_pickle("x" + s) and is_pickle("X" + s.upper()) for s in PICKLE_SUFFIXES)
    assert not any(is_pickle(n) for n in ("model.safetensors", "x.gguf", "tokenizer.model", "bin", "a.pickles"))


# ---- split GGUF names ---------------------------------------------------------------------------------

def test_split_names_written_are_the_names_read(tmp_path):
    written = [split_name(tmp_path / "Model-Q8_0.gguf", i, 3).name for i in (1, 2, 3)]
    assert written == [split_gguf_name("Model-Q8_0", i, 3) for i in (1, 2, 3)]
    assert written[0] == "Model-Q8_0-00001-of-00003.gguf"
    assert [parse_split_gguf(n) for n in written] == [("Model-Q8_0", i, 3) for i in (1, 2, 3)]
    assert split_gguf_parts([written[2], "other.gguf", written[0], written[1]]) == [written, ["other.gguf"]]
    for not_split in ("m-1-of-3.gguf", "m-00001-of-00003.safetensors", "m-00001-00003.gguf"):
        assert parse_split_gguf(not_split) is None


def test_one_split_part_opens_its_set(tmp_path):
    for i in (1, 2):
        (tmp_path / split_gguf_name("a", i, 2)).write_bytes(b"")
    (tmp_path / split_gguf_name("b", 1, 1)).write_bytes(b"")
    (tmp_path / "a.gguf").write_bytes(b"")
    with api.open_source(str(tmp_path / split_gguf_name("a", 2, 2))) as src:
        assert sorted(src.files()) == [split_gguf_name("a", 1, 2), split_gguf_name("a", 2, 2)]


# ---- Hub repo ids -------------------------------------------------------------------------------------

class _Routed(Exception):
    pass


def _routes_to_hub(spec: str, monkeypatch) -> bool:
    """Whether ``api.open_source`` sends ``spec`` to the Hub (without any request)."""
    def hub(*a, **k):
        raise _Routed
    monkeypatch.setattr(api, "_hub", hub)
    try:
        api.open_source(spec)
    except _Routed:
        return True
    except Exception:
        return False
    return False


@pytest.mark.parametrize("spec,is_repo", [
    ("org/name", True), ("org/name@v1.0", True), ("org/name@refs/pr/3", True),
    ("Org-1/Name_2.5", True), ("hf://org/name/sub", True), ("org/na--me", True),  # refused later, with the reason
    ("a/b.gguf", False), ("a/b.safetensors", False), ("org/config.json", False),
    ("../x", False), ("org/../x", False), ("org/name/extra", False), ("org/.hidden", False),
    ("-org/name", False), ("not a repo", False), ("/abs/path", False),
    # canonical single-name repos are Hub ids; a single name shaped like a file stays local
    ("gpt2", True), ("bert-base-uncased", True), ("gpt2@v1", True), ("name", True),
    ("model.safetensors", False), ("weights.bin", False), ("w.pt", False), ("gpt2.", False),
])
def test_repo_id_one_parser(spec, is_repo, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert looks_like_repo_id(spec) is is_repo
    assert _routes_to_hub(spec, monkeypatch) is is_repo


def test_existing_path_is_not_a_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    Path("org/name").mkdir(parents=True)
    assert not looks_like_repo_id("org/name") and not _routes_to_hub("org/name", monkeypatch)
