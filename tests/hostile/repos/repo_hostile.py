"""Hostile checkpoint folders, built at test time.

``REPOS`` maps a case name to (builder, error class name, regex for the message, file the
error must name). A builder takes an empty folder and fills it; ``outside`` is a sibling
folder the case may link to. ``build(name, root)`` makes ``root/<name>`` and returns it.
``PICKLE_MARKER``: the pickles here create this file if anyone ever unpickles them.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

INDEX = "model.safetensors.index.json"
SHARD = "model-00001-of-00001.safetensors"


def st_file(names=("a",), n: int = 4) -> bytes:
    """A valid safetensors file: each name an F32 vector of ``n`` elements."""
    hdr, off = {}, 0
    for name in names:
        hdr[name] = {"dtype": "F32", "shape": [n], "data_offsets": [off, off + 4 * n]}
        off += 4 * n
    js = json.dumps(hdr).encode()
    return struct.pack("<Q", len(js)) + js + bytes(off)


def config(**kw) -> bytes:
    base = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4,
            "num_hidden_layers": 1, "num_attention_heads": 1, "vocab_size": 4}
    return json.dumps(base | kw).encode()


def _write(d: Path, files: dict[str, bytes | str]) -> None:
    for name, blob in files.items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(blob.encode() if isinstance(blob, str) else blob)


def indexed(weight_map: object, extra: dict | None = None, shards: dict | None = None):
    """A repo whose index holds ``weight_map`` and whose shards are ``shards`` (default: one)."""
    def build(d: Path, outside: Path) -> None:
        _write(d, {INDEX: json.dumps({"metadata": {}, "weight_map": weight_map} | (extra or {})),
                   **(shards if shards is not None else {SHARD: st_file()})})
    return build


def files(**named: bytes | str):
    """A repo of the given files (keyword names with '__' for '.', e.g. config__json)."""
    def build(d: Path, outside: Path) -> None:
        _write(d, {k.replace("__", "."): v for k, v in named.items()})
    return build


class _Trap:
    """Unpickling this creates PICKLE_MARKER: proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def pickles(*names: str):
    def build(d: Path, outside: Path) -> None:
        for n in names:
            (d / n).write_bytes(pickle.dumps(_Trap(pickle_marker(d))))
        (d / "config.json").write_bytes(config())
    return build


def pickle_marker(repo: Path) -> Path:
    return repo.parent / "UNPICKLED-MARKER"


def symlinked(link: str, target: str, target_blob: bytes, extra: dict | None = None):
    """``link`` inside the repo points at ``outside/target`` (a real, valid file)."""
    def build(d: Path, outside: Path) -> None:
        outside.mkdir(exist_ok=True)
        (outside / target).write_bytes(target_blob)
        _write(d, extra or {})
        (d / link).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(outside / target, d / link)
    return build


def symlinked_dir():
    """A sub-folder that is a link out of the repo, named by the index."""
    def build(d: Path, outside: Path) -> None:
        outside.mkdir(exist_ok=True)
        (outside / SHARD).write_bytes(st_file())
        os.symlink(outside, d / "sub")
        _write(d, {INDEX: json.dumps({"weight_map": {"a": f"sub/{SHARD}"}})})
    return build


def fifo_shard():
    """A FIFO under a shard's name: reading it would block forever."""
    def build(d: Path, outside: Path) -> None:
        os.mkfifo(d / "model.safetensors")
    return build


def sparse_json(name: str, size: int, head: bytes = b'{"weight_map": {'):
    """A JSON file of ``size`` bytes that exists only as a sparse file (never read whole)."""
    def build(d: Path, outside: Path) -> None:
        with open(d / name, "wb") as f:
            f.write(head)
            f.truncate(size)
        (d / SHARD).write_bytes(st_file())
    return build


def million_entry_index(n: int = 1_000_000):
    """An index naming ``n`` tensors, all in one shard that holds just one of them."""
    def build(d: Path, outside: Path) -> None:
        wm = ",".join(f'"model.layers.{i}.w":"{SHARD}"' for i in range(n))
        _write(d, {INDEX: '{"weight_map":{' + wm + "}}", SHARD: st_file(["model.layers.0.w"])})
    return build


def deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


Builder = Callable[[Path, Path], None]

REPOS: dict[str, tuple[Builder, str, str, str]] = {
    # the shard index
    "index_traversal_dotdot": (indexed({"a": "../../etc/passwd"}), "UnsafeInputError", "outside the checkpoint", INDEX),
    "index_traversal_nested_dotdot": (indexed({"a": "sub/../../x.safetensors"}), "UnsafeInputError", "outside", INDEX),
    "index_traversal_absolute": (indexed({"a": "/etc/passwd"}), "UnsafeInputError", "outside the checkpoint", INDEX),
    "index_traversal_windows_drive": (indexed({"a": "C:\\Windows\\System32\\x.safetensors"}), "UnsafeInputError",
                                      "outside", INDEX),
    "index_traversal_windows_backslash": (indexed({"a": "..\\..\\x.safetensors"}), "UnsafeInputError", "outside", INDEX),
    "index_traversal_unc": (indexed({"a": "\\\\server\\share\\x.safetensors"}), "UnsafeInputError", "outside", INDEX),
    "index_missing_shard": (indexed({"a": SHARD, "b": "model-00002-of-00002.safetensors"}), "SourceError",
                            "model-00002-of-00002.safetensors.*missing", INDEX),
    "index_weight_map_list": (indexed([SHARD]), "FormatError", "weight_map", INDEX),
    "index_weight_map_string": (indexed(SHARD), "FormatError", "weight_map", INDEX),
    "index_weight_map_absent": (files(**{"model__safetensors__index__json": '{"metadata": {}}', SHARD: st_file()}),
                                "FormatError", "weight_map", INDEX),
    "index_is_array": (files(**{"model__safetensors__index__json": "[]", SHARD: st_file()}), "FormatError",
                       "weight_map", INDEX),
    "index_shard_not_string": (indexed({"a": 7}), "FormatError", "not a string", INDEX),
    "index_shard_empty_name": (indexed({"a": ""}), "FormatError", "not a string", INDEX),
    "index_invalid_json": (files(**{"model__safetensors__index__json": '{"weight_map": {"a": ', SHARD: st_file()}),
                           "FormatError", "not valid JSON", INDEX),
    "index_not_utf8": (files(**{"model__safetensors__index__json": b'{"weight_map": {"\xff": "x"}}', SHARD: st_file()}),
                       "FormatError", "not valid JSON", INDEX),
    "index_recursion_bomb": (files(**{"model__safetensors__index__json": '{"weight_map": ' + deep() + "}",
                                      SHARD: st_file()}), "FormatError", "nested too deeply", INDEX),
    "index_huge_sparse": (sparse_json(INDEX, 300_000_000), "FormatError", "too large", INDEX),
    "index_shard_is_hostile": (indexed({"a": SHARD}, shards={SHARD: struct.pack("<Q", 1 << 40) + b"{}"}),
                               "FormatError", "exceeds", SHARD),
    # config.json
    "config_is_array": (files(config__json="[1, 2]", model__safetensors=st_file()), "FormatError",
                        "not a JSON object", "config.json"),
    "config_is_string": (files(config__json='"llama"', model__safetensors=st_file()), "FormatError",
                         "not a JSON object", "config.json"),
    "config_invalid_json": (files(config__json="{'hidden_size': 4}", model__safetensors=st_file()), "FormatError",
                            "not valid JSON", "config.json"),
    "config_recursion_bomb": (files(config__json='{"a": ' + deep() + "}", model__safetensors=st_file()),
                              "FormatError", "nested too deeply", "config.json"),
    "config_huge_sparse": (sparse_json("config.json", 250_000_000, b"{"), "FormatError", "too large", "config.json"),
    # pickles: refused, never opened
    "pickle_only_bin": (pickles("pytorch_model.bin"), "UnsafeInputError", "never unpickles", ""),
    "pickle_only_pt_pth": (pickles("model.pt", "consolidated.00.pth"), "UnsafeInputError", "never unpickles", ""),
    "pickle_sharded_bin": (pickles("pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
                                   "training_args.pkl"), "UnsafeInputError", "pickle", ""),
    # links out of the folder, special files
    "symlink_shard_out": (symlinked("model.safetensors", "secret.safetensors", st_file()), "UnsafeInputError",
                          "symlink leads out", "model.safetensors"),
    "symlink_config_to_outside": (symlinked("config.json", "passwd", b'{"a": 1}', {"model.safetensors": st_file()}),
                                  "UnsafeInputError", "symlink leads out", "config.json"),
    "symlink_index_out": (symlinked(INDEX, "index.json", json.dumps({"weight_map": {"a": SHARD}}).encode(),
                                    {SHARD: st_file()}), "UnsafeInputError", "symlink leads out", INDEX),
    "symlink_dir_out": (symlinked_dir(), "SourceError", "missing", INDEX),
    "fifo_shard": (fifo_shard(), "SourceError", "not a regular file", "model.safetensors"),
    "nothing_readable": (files(README__md="# hi", config__json=config()), "SourceError", "no .safetensors", ""),
    # two shards that both hold tensor 'a'
    "tensor_in_two_shards": (indexed({"a": "s1.safetensors", "b": "s2.safetensors"},
                                     shards={"s1.safetensors": st_file(["a"]), "s2.safetensors": st_file(["a"])}),
                             "FormatError", "'a' is in both s1.safetensors and s2.safetensors", ""),
}

# Valid (if odd) repos that must load, cheaply: name -> (builder, tensor count)
ODD_BUT_VALID: dict[str, tuple[Builder, int]] = {
    "config_billion_layers": (files(config__json=config(num_hidden_layers=10**9, num_experts=10**12,
                                                        sliding_window=4096, layer_types=None),
                                    model__safetensors=st_file()), 1),
    "config_absurd_values": (files(config__json=config(hidden_size=1e308, num_attention_heads=-3, vocab_size="many",
                                                       num_key_value_heads=0, head_dim=None,
                                                       num_hidden_layers=2**70, torch_dtype=["x"]),
                                   model__safetensors=st_file(["model.embed_tokens.weight"])), 1),
    "index_million_entries": (million_entry_index(), 1),
    "zero_size_tensor": (files(model__safetensors=st_file(["e"], n=0)), 1),
}


def build(name: str, root: Path) -> Path:
    """Build case ``name`` (hostile or odd-but-valid) at ``root/name``; returns the folder."""
    builder = REPOS[name][0] if name in REPOS else ODD_BUT_VALID[name][0]
    d = root / name
    d.mkdir(parents=True)
    builder(d, root / f"{name}.outside")
    return d
