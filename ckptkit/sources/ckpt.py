"""Reading a uniform-layout (``--to ckpt``) folder: its manifest.json, checked, and the folder
presented as the Hugging Face checkpoint it stands for.

The shards hold canonical names (ckptkit/conversion/canonical.py); the manifest gives each one
its Hugging Face name and the original config.json. ``ckpt_index`` is the tensor index under
those HF names, pointing at the canonical tensors' bytes, so everything that reads an HF
checkpoint (inspect, validate, diff, HF -> GGUF, the HF writer) reads a ckpt folder unchanged."""
from __future__ import annotations

from typing import Any

from ..errors import FormatError, UnsupportedError
from ..index import TOKENIZER_FILES, FileInfo, TensorIndex, TensorInfo
from .base import Source

MANIFEST = "manifest.json"
FORMAT = "ckptkit-ckpt"
VERSION = 1
# the __metadata__ key holding a model's name, for GGUF general.name (as the source's folder gave it)
NAME_KEY = "ckpt.model_name"


def is_ckpt(source: Source) -> bool:
    """Whether a source is a ckpt folder: a top-level manifest.json, and (when the folder also
    holds a config.json, e.g. copied there by hand) one that says it is ckptkit's."""
    files = source.files()
    if MANIFEST not in files:
        return False
    if "config.json" not in files and "params.json" not in files:
        return True
    from ..api import read_json
    try:
        doc = read_json(source, MANIFEST)
    except FormatError:
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def _fail(msg: str) -> FormatError:
    return FormatError(msg, MANIFEST)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)


def check_manifest(doc: Any) -> dict[str, Any]:
    """The manifest, after checking every field readers rely on (one-line errors)."""
    if not isinstance(doc, dict):
        raise _fail("not a JSON object")
    if doc.get("format") != FORMAT:
        raise _fail(f"format is {doc.get('format')!r}, not {FORMAT!r}: not a ckptkit uniform-layout folder")
    ver = doc.get("format_version")
    if not isinstance(ver, int) or isinstance(ver, bool):
        raise _fail("format_version is not an integer")
    if ver > VERSION:
        raise UnsupportedError(f"format_version {ver} is newer than this ckptkit reads ({VERSION}); upgrade ckptkit",
                               MANIFEST)
    if not isinstance(doc.get("config"), dict):
        raise _fail("config (the original config.json) is missing or not an object")
    tensors = doc.get("tensors")
    if not isinstance(tensors, list):
        raise _fail("tensors is missing or not a list")
    seen: set[str] = set()
    hf: set[str] = set()
    stacks: dict[str, list[int]] = {}      # HF name -> the rows of its experts (hf_stack)
    for i, t in enumerate(tensors):
        if not isinstance(t, dict):
            raise _fail(f"tensors[{i}] is not an object")
        if "hf_name" not in t:          # named from the family (conversion/canonical.py)
            _name_from_family(t, i, doc["config"])
        for key in ("name", "hf_name", "dtype", "file"):
            if not isinstance(t.get(key), str) or not t[key]:
                raise _fail(f"tensors[{i}].{key} is missing or not a string")
        if not _int_list(t.get("shape")):
            raise _fail(f"tensors[{i}].shape is not a list of non-negative integers")
        n = t.get("stacked_experts")
        if n is not None and (not _int_list([n]) or not n or not t["shape"] or t["shape"][0] != n
                              or "{expert}" not in t["hf_name"]):
            raise _fail(f"tensors[{i}].stacked_experts must be the first dimension, with {{expert}} in hf_name")
        if n is None and "{expert}" in t["hf_name"]:
            raise _fail(f"tensors[{i}].hf_name is a template ({{expert}}) without stacked_experts")
        if t["name"] in seen:
            raise _fail(f"tensors[{i}]: {t['name']} is listed twice")
        seen.add(t["name"])
        if "hf_stack" in t:
            st = t["hf_stack"]
            if (n is not None or not isinstance(st, list) or len(st) != 2 or not _int_list(st[:1])
                    or not (st[1] is None or (_int_list([st[1]]) and st[0] < st[1]))):
                raise _fail(f"tensors[{i}].hf_stack must be [expert, experts] (expert e of the HF tensor "
                            "hf_name [experts, ...])")
            stacks.setdefault(t["hf_name"], []).append(i)
            continue
        names = hf_names(t)
        if any(h in hf for h in names):
            raise _fail(f"tensors[{i}]: {t['name']} (or its HF name {t['hf_name']}) is listed twice")
        hf.update(names)
    for name, rows in stacks.items():
        _check_stack(name, [tensors[i] for i in rows], name in hf)
    return doc


def _name_from_family(t: dict[str, Any], i: int, config: dict[str, Any]) -> None:
    """A row's hf_name from its canonical name and the family; an expert whose HF name has no
    expert number is one of the experts that HF tensor stacks (hf_stack, counted later)."""
    from ..conversion.canonical import hf_name_for, parse_canonical
    if not isinstance(t.get("name"), str):
        raise _fail(f"tensors[{i}].name is missing or not a string")
    try:
        c = parse_canonical(t["name"])
        t["hf_name"], unstacked = hf_name_for(c, config, "stacked_experts" in t)
    except FormatError as e:
        raise _fail(e.message) from None
    if unstacked and "hf_stack" not in t:
        t["hf_stack"] = [c.expert, None]


def _check_stack(name: str, rows: list[dict[str, Any]], twice: bool) -> None:
    """The rows of one HF tensor's experts: experts 0..n-1, each once, one dtype and shape."""
    n = len(rows)
    ids = sorted(t["hf_stack"][0] for t in rows)
    first = rows[0]
    if twice or ids != list(range(n)) or any(t["hf_stack"][1] not in (None, n) for t in rows):
        raise _fail(f"the experts of {name} (hf_stack) are not 0..{n - 1}, each once, of one stack of {n}")
    if any((t["dtype"], t["shape"]) != (first["dtype"], first["shape"]) for t in rows):
        raise _fail(f"the experts of {name} (hf_stack) differ in dtype or shape")
    for t in rows:
        t["hf_stack"] = [t["hf_stack"][0], n]


def hf_names(t: dict[str, Any]) -> list[str]:
    """The HF tensors of a manifest row: one, or one per expert of a stacked row."""
    n = t.get("stacked_experts")
    return [t["hf_name"]] if n is None else [t["hf_name"].replace("{expert}", str(e)) for e in range(n)]


def read_manifest(source: Source) -> dict[str, Any]:
    from ..api import read_json
    return check_manifest(read_json(source, MANIFEST))


def ckpt_index(source: Source, tokenizer: bool = False) -> TensorIndex:
    """The folder's tensors under their HF names (manifest order), config.json from the
    manifest; each tensor checked against its shard's header."""
    from ..api import _read_tokenizer_file
    from ..formats import safetensors as st
    manifest = read_manifest(source)
    have = source.files()
    shards = sorted({t["file"] for t in manifest["tensors"]})
    for f in shards:
        if "/" in f or ".." in f or f not in have:
            raise _fail(f"names shard {f!r}, which the folder does not hold")
    raws = source.map(lambda p: st.fetch_header(source, p), shards)
    stored: dict[str, TensorInfo] = {}
    files, metadata = [], {}
    for path, (raw, n, size) in zip(shards, raws, strict=True):
        header = st.parse_header(raw, n, path, size)
        files.append(FileInfo(path, size, "safetensors", header.data_start))
        metadata.update(header.metadata)
        stored.update((t.name, t) for t in header.tensors)
    tensors: dict[str, TensorInfo] = {}
    stacks: dict[str, list[TensorInfo]] = {}
    for t in manifest["tensors"]:
        s = stored.get(t["name"])
        if s is None or s.file != t["file"]:
            raise _fail(f"{t['name']} is not in {t['file']}")
        if s.dtype != t["dtype"] or list(s.shape) != t["shape"]:
            raise _fail(f"{t['name']}: the manifest says {t['dtype']}{t['shape']}, "
                        f"{t['file']} holds {s.dtype}{list(s.shape)}")
        if "hf_stack" in t:                     # expert e of a stacked HF tensor: joined below
            parts = stacks.setdefault(t["hf_name"], [s] * t["hf_stack"][1])
            parts[t["hf_stack"][0]] = s
            tensors.setdefault(t["hf_name"], s)
            continue
        names = hf_names(t)
        per = s.nbytes // len(names)
        shape = s.shape if len(names) == 1 and "stacked_experts" not in t else s.shape[1:]
        for e, h in enumerate(names):           # a stacked row: each expert's bytes are contiguous
            tensors[h] = s._replace(name=h, shape=shape, offset=s.offset + e * per, nbytes=per)
    joins = {}
    for h, parts in stacks.items():
        tensors[h], join = _restacked(h, parts)
        if join is not None:
            joins[join.file] = join
    if joins:
        from ..tp_slices import attach
        attach(source, joins)
    unlisted = set(stored) - {t["name"] for t in manifest["tensors"]}
    if unlisted:
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        raise _fail(f"does not list {sorted(unlisted)[0]}{more}, which its shards hold")
    name = (manifest.get("source") or {}).get("name")
    if isinstance(name, str):
        metadata[NAME_KEY] = name
    tok = {p: _read_tokenizer_file(source, p) for p in TOKENIZER_FILES if tokenizer and p in have}
    return TensorIndex("safetensors", files, tensors, manifest["config"], None, metadata, source.label, tok, joins)


def _restacked(name: str, parts: list[TensorInfo]) -> tuple[TensorInfo, Any]:
    """The HF tensor [n, ...] of n experts stored one by one (``--experts split`` of a stacked
    source): their bytes where they lie back to back in one shard (as the writer puts them);
    else a virtual tensor joined along the first axis from wherever they are (tp_slices.Join)."""
    from ..tp_slices import Join
    first = parts[0]
    shape = (len(parts), *first.shape)
    if all(p.file == first.file and p.offset == first.offset + e * first.nbytes for e, p in enumerate(parts)):
        return first._replace(name=name, shape=shape, nbytes=first.nbytes * len(parts)), None
    join = Join(name, 0, tuple(p._replace(shape=(1, *p.shape)) for p in parts), first.dtype, shape)
    return join.info(), join


def canonical_names(manifest: dict[str, Any]) -> dict[str, str]:
    """HF name -> canonical name (with ``[expert]`` in a stacked tensor; for an HF tensor stacking
    experts stored one by one, expert 0's name with ``{expert}`` for its number), from a checked
    manifest."""
    out: dict[str, str] = {}
    for t in manifest["tensors"]:
        if "hf_stack" in t:
            if t["hf_stack"][0] == 0:
                stem, _, part = t["name"].rpartition(".0.")
                out[t["hf_name"]] = f"{stem}.{{expert}}.{part}" if stem else t["name"]
            continue
        names = hf_names(t)
        out.update((h, t["name"] if "stacked_experts" not in t else f"{t['name']}[{e}]") for e, h in enumerate(names))
    return out
