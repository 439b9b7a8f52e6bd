"""GGUF -> HF and GGUF -> ckpt from the Hub go through the read-ahead like HF -> GGUF: the GGUF
reader's stream declares every range it reads (StreamTensor.reads), so each byte is fetched once
in a few large ranges, the file is checked against the Hub's sha256, and a flipped byte fails
in one line with nothing written."""
from __future__ import annotations

import math

import pytest

import ckptkit
from ckptkit.api import load_index, open_source
from ckptkit.conversion import convert_to_hf, stream
from ckptkit.sources.base import WrappedSource
from ckptkit.sources.digest import ChecksumError
from test_ckpt_layout import raw_tensors
from test_hub_stream import _spans

# families whose GGUF -> HF plans hold every kind of piece: plain, rotary-permuted, 1-D norms
# with offsets, stacked experts split, MLA kv_b re-fused (a join), Conv1D transposed, MXFP4
READ_FAMILIES = ["llama", "qwen3_moe", "deepseek_v2", "gemma3_text", "gpt2", "gpt_oss", "qwen3_next"]


class Recording(WrappedSource):
    def __init__(self, inner):
        super().__init__(inner)
        self.reads: list[tuple[str, int, int]] = []

    def read(self, path, offset, length):
        self.reads.append((path, offset, length))
        return super().read(path, offset, length)


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
@pytest.mark.parametrize("family", READ_FAMILIES)
def test_gguf_stream_declares_exactly_the_reads_it_makes(family, outtype, tiny_model, tmp_path, monkeypatch):
    """Each GGUF tensor's ``reads`` are the reads its chunks make, in order (chunks small, so a
    tensor takes several reads), so the read-ahead's plan is the conversion's reads."""
    gg = tmp_path / "m.gguf"
    ckptkit.convert(tiny_model(family), gg, outtype=outtype)
    monkeypatch.setattr(stream, "CHUNK_BYTES", 4096)
    with open_source(str(gg)) as source:
        s = stream.gguf_stream(source, load_index(source), "f32")
        several = 0
        for t in s.tensors:
            rec = Recording(source)
            data = b"".join(t.chunks(rec))
            assert t.reads is not None and list(t.reads) == rec.reads, t.name
            assert len(data) == 4 * math.prod(t.shape)
            several += len(t.reads) > 1
        assert several


def _gguf_on_hub(tiny_model, hub, tmp_path, family="llama", outtype="f16", repo="gguf/llama"):
    d = tmp_path / "repo"
    d.mkdir()
    gg = d / "model.gguf"
    ckptkit.convert(tiny_model(family), gg, outtype=outtype)
    hub.add_repo_from_dir(repo, d)
    with open_source(str(gg)) as source:
        data_start = load_index(source).files[0].header_bytes
    return gg, data_start


@pytest.mark.parametrize("to", ["hf", "ckpt"])
def test_gguf_from_the_hub_fetches_each_byte_once_in_few_requests(to, tiny_model, hub, hf_cache, tmp_path,
                                                                  monkeypatch):
    from ckptkit.formats import gguf
    # the header's first read (1 MB) would hold this whole tiny file: make it a header's size
    monkeypatch.setattr(gguf.read_gguf_header, "__defaults__", (4096,))
    gg, lo = _gguf_on_hub(tiny_model, hub, tmp_path, outtype="f32", repo="gguf/llama32")
    local, remote = tmp_path / "local", tmp_path / "remote"
    ckptkit.convert(gg, local, to=to)
    hub.reset_stats()
    ckptkit.convert("gguf/llama32", remote, to=to)
    assert raw_tensors(remote) == raw_tensors(local)
    hi = gg.stat().st_size
    spans = [(max(a, lo), min(b, hi)) for a, b in _spans(hub, "model.gguf") if min(b, hi) > max(a, lo)]
    pos = lo
    for a, b in sorted(spans):
        assert a <= pos, f"bytes {pos}-{a} never fetched"
        pos = max(pos, b)
    assert pos == hi
    assert sum(b - a for a, b in spans) <= 1.02 * (hi - lo), _spans(hub, "model.gguf")
    # the header (a few growing reads) and the tensor data in ranges of up to 8 MB, not one
    # request per tensor chunk (the model has 21 tensors)
    n = len(_spans(hub, "model.gguf"))
    assert n <= 4 + (hi - lo) // (8 << 20), _spans(hub, "model.gguf")


def test_gguf_to_hf_from_the_hub_reads_through_the_read_ahead(tiny_model, hub, hf_cache, tmp_path, monkeypatch):
    """With small read-ahead ranges, the GGUF's tensor data comes in ranges of that size, each
    once: the conversion's reads are served from the plan, not fetched one chunk at a time."""
    import ckptkit.sources.readahead as readahead
    from ckptkit.formats import gguf
    monkeypatch.setattr(gguf.read_gguf_header, "__defaults__", (4096,))
    gg, lo = _gguf_on_hub(tiny_model, hub, tmp_path, "qwen3_moe", "f32", "gguf/moe")
    local = _local_hf(gg, tmp_path)
    chunk = 64 << 10
    monkeypatch.setattr(readahead, "CHUNK", chunk)
    hub.reset_stats()
    res = convert_to_hf("gguf/moe", tmp_path / "out")
    assert res.plan is not None and res.plan.tensors
    spans = _spans(hub, "model.gguf")
    data = [(a, b) for a, b in spans if b > lo]
    hi = gg.stat().st_size
    assert sum(min(b, hi) - max(a, lo) for a, b in data) <= 1.02 * (hi - lo) + chunk
    assert len(data) <= (hi - lo) // chunk + 8, (len(data), (hi - lo) // chunk)
    assert raw_tensors(tmp_path / "out") == raw_tensors(local)


def _local_hf(gg, tmp_path):
    out = tmp_path / "local-hf"
    if not out.exists():
        convert_to_hf(str(gg), out)
    return out


@pytest.mark.parametrize("to", ["hf", "ckpt"])
def test_a_flipped_byte_of_a_hub_gguf_fails_in_one_line_and_writes_nothing(to, tiny_model, hub, hf_cache, tmp_path):
    from click.testing import CliRunner

    from ckptkit.cli import main
    _, lo = _gguf_on_hub(tiny_model, hub, tmp_path)
    hub.fail("model.gguf", "corrupt", after_bytes=lo + 77, times=None)
    out = tmp_path / "o" / "folder"
    out.parent.mkdir()
    with pytest.raises(ChecksumError) as e:
        ckptkit.convert("gguf/llama", out, to=to)
    assert "model.gguf" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in out.parent.iterdir()) == []
    r = CliRunner().invoke(main, ["convert", "gguf/llama", str(out), "--to", to, "--no-progress"])
    assert r.exit_code != 0 and "model.gguf" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in out.parent.iterdir()) == []
    hub.clear_faults()
    ckptkit.convert("gguf/llama", out, to=to)
    assert (out / ("manifest.json" if to == "ckpt" else "config.json")).is_file()


def test_gguf_to_gguf_from_the_hub_fetches_once_and_checks(tiny_model, hub, hf_cache, tmp_path, monkeypatch):
    """GGUF -> GGUF from the Hub: the GGUF's tensor data comes through the read-ahead, each byte
    once, equal to the local conversion; a flipped byte is caught (retried once, then one line)."""
    from ckptkit.formats import gguf
    monkeypatch.setattr(gguf.read_gguf_header, "__defaults__", (4096,))
    gg, lo = _gguf_on_hub(tiny_model, hub, tmp_path, "qwen3_moe", "f32", "gguf/moe32")
    local, remote = tmp_path / "local.gguf", tmp_path / "o" / "remote.gguf"
    remote.parent.mkdir()
    ckptkit.convert(gg, local, outtype="q8_0")
    hub.reset_stats()
    ckptkit.convert("gguf/moe32", remote, outtype="q8_0")
    from test_all_directions import _tensors
    assert _tensors(remote) == _tensors(local)    # (general.name differs: the repo's, the file's)
    hi = gg.stat().st_size
    data = [(max(a, lo), min(b, hi)) for a, b in _spans(hub, "model.gguf") if min(b, hi) > max(a, lo)]
    assert sum(b - a for a, b in data) <= 1.02 * (hi - lo) and len(data) <= 4, data
    hub.fail("model.gguf", "corrupt", after_bytes=lo + 99, times=None)
    remote.unlink()
    with pytest.raises(ChecksumError) as e:
        ckptkit.convert("gguf/moe32", remote, outtype="q8_0")
    assert "model.gguf" in str(e.value) and "twice" in str(e.value) and "\n" not in str(e.value)
    assert sorted(p.name for p in remote.parent.iterdir()) == []


def test_gguf_to_hf_progress_shows_bytes_fetched(tiny_model, hub, hf_cache, tmp_path, monkeypatch):
    """GGUF -> HF from the Hub tells the bytes fetched as well as written: every byte of the
    file's tensor data, counted as it arrives (the read-ahead fetches the file whole)."""
    fetched: list[int] = []
    written: list[int] = []
    gg, lo = _gguf_on_hub(tiny_model, hub, tmp_path, "llama", "f32", "gguf/progress")
    convert_to_hf("gguf/progress", tmp_path / "out", on_fetched=fetched.append, on_bytes=written.append)
    assert lo < sum(fetched) <= gg.stat().st_size and sum(written) > 0


def test_gguf_to_hf_cli_progress_on_a_terminal(tiny_model, hub, hf_cache, tmp_path):
    import os
    import re

    from test_hub_stream import _cli_stderr
    gg, _ = _gguf_on_hub(tiny_model, hub, tmp_path, "llama", "f32", "gguf/tty")
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache)}
    shown = _cli_stderr(["convert", "gguf/tty", str(tmp_path / "tty"), "--to", "hf"], env, tty=True)
    assert re.search(r"fetched [\d.]+[kMGT]?B at [\d.]+[kMGT]?B/s", shown), shown
    quiet = _cli_stderr(["convert", "gguf/tty", str(tmp_path / "pipe"), "--to", "hf"], env, tty=False)
    assert "fetched" not in quiet and "wrote" in quiet


@pytest.mark.parametrize("to", ["hf", "ckpt"])
def test_a_byte_flipped_once_is_fetched_again(to, tiny_model, hub, hf_cache, tmp_path):
    """One corrupted response: caught by the hash, the conversion fetches once more and the
    output equals the local conversion, as HF -> GGUF does."""
    gg, lo = _gguf_on_hub(tiny_model, hub, tmp_path, "llama", "f32", "gguf/once")
    local, remote = tmp_path / "local", tmp_path / "remote"
    ckptkit.convert(gg, local, to=to)
    hub.reset_stats()
    ckptkit.convert("gguf/once", tmp_path / "clean", to=to)
    listings = hub.count("GET", "/api/models/gguf/once")
    fault = hub.fail("model.gguf", "corrupt", after_bytes=lo + 33)
    hub.reset_stats()
    ckptkit.convert("gguf/once", remote, to=to)
    assert fault.hits == 1 and hub.count("GET", "/api/models/gguf/once") == listings + 1  # once more
    assert raw_tensors(remote) == raw_tensors(local)
