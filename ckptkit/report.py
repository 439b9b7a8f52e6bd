"""The machine-readable report of `inspect --json`: plain dicts, stable keys.

Keys `family`, `facts`, `evidence` and `findings` are filled by inference and validation."""
from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from .index import CENSUS, FILE_SCAN, TENSOR_ROWS, TensorIndex, TensorInfo, file_census

if TYPE_CHECKING:
    from .infer import Inference

#: The ``schema_version`` of every JSON report (inspect, validate and diff ``--json``, and the
#: API's ``to_json()``/``report()``): raised when a key is removed or changes meaning; new keys
#: may appear without a change.
SCHEMA_VERSION = 1


def index_report(index: TensorIndex, with_tensors: bool = True) -> dict[str, Any]:
    """The report's keys that come from the index alone (inference fills the rest)."""
    by_dtype = index.parameters_by_dtype()
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source": index.source,
        "format": index.format,
        "files": [{"name": f.name, "size": f.size} for f in index.files],
        "total_bytes": index.total_bytes,
        "parameters": {"total": sum(by_dtype.values())},
        "dtypes": by_dtype,
        "tensor_count": len(index.tensors),
        "family": None,
        "facts": {},
        "evidence": {},
        "findings": [],
    }
    if with_tensors:
        report["tensors"] = [t._asdict() for t in index.tensors.values()]
    return report


def inspect_report(index: TensorIndex, inference: Inference | None = None) -> dict[str, Any]:
    """`inspect --json`'s report: the index with the inferred family and facts (``inference``
    when already computed for ``index``)."""
    from .infer import infer
    report = index_report(index)
    report.update((inference or infer(index)).to_json())
    return report


def inspect_report_json(index: TensorIndex, inference: Inference | None = None) -> str:
    """``json.dumps(inspect_report(index, inference))``, the same text."""
    return b"".join(inspect_report_parts(index, inference)).decode()


def inspect_report_parts(index: TensorIndex, inference: Inference | None = None) -> list[bytes]:
    """``inspect_report_json``'s text as UTF-8 (ASCII: JSON escapes the rest) in parts that join
    to it, so that 17 MB of it (DeepSeek-V3) is written out without being copied: the tensor list,
    most of it, is written by ``tensors_json``, by a forked child (forked.py) while this process
    infers when it can."""
    from . import forked
    from .infer import infer
    rows = index.pieces(TENSOR_ROWS)
    child = (forked.start(lambda: tensors_json(index.tensors.values()).encode())
             if inference is None and rows is None else None)
    report = index_report(index, with_tensors=False)
    marker = f"tensors-{secrets.token_hex(16)}"     # no other value of the report can be this
    report["tensors"] = marker                        # where index_report puts the list
    report.update((inference or infer(index)).to_json())
    text = json.dumps(report)
    at = text.index(f'"{marker}"')
    if rows is not None:    # made as the headers were read: "[" + ", ".join(rows of each file) + "]"
        listed = [b"["]
        for i, piece in enumerate(filter(None, rows)):   # a file with no tensors has no rows
            listed += [b", ", piece] if i else [piece]
        listed.append(b"]")
    else:
        made = child.result() if child is not None else None
        listed = [made if made is not None else tensors_json(index.tensors.values()).encode()]
    return [text[:at].encode(), *listed, text[at + len(marker) + 2:].encode()]


def tensor_rows(tensors: list[TensorInfo]) -> bytes:
    """``tensors_json(tensors)`` without its brackets, as UTF-8: one file's piece of the list,
    joined to the others' by ", " (header_reads.py makes them as it reads the headers)."""
    return tensors_json(tensors)[1:-1].encode()


def file_scan(tensors: list[TensorInfo]) -> bytes:
    """Inference's scan of one file's tensors (infer.scan.file_scan)."""
    from .infer.scan import file_scan
    return file_scan(tensors)


#: What `inspect --json` has made of each file's tensors as the headers are read, on the cores
#: that read them (TensorIndex.per_file): the report's rows, inference's scan of
#: the file, and the census the report's parameter counts come from.
PER_FILE = {TENSOR_ROWS: tensor_rows, FILE_SCAN: file_scan, CENSUS: file_census}


def tensors_json(tensors: Iterable[TensorInfo]) -> str:
    """``json.dumps([t._asdict() for t in tensors])``, the same text, about three times faster: the
    few distinct dtypes, shapes and files are encoded once, each name by json's own C escaper."""
    known: dict[Any, str] = {}
    rows = []
    for t in tensors:
        name, dtype, shape, file, offset, nbytes = t
        d, s, f = known.get(dtype), known.get(shape), known.get(file)
        if d is None or s is None or f is None or type(offset) is not int or type(nbytes) is not int \
                or type(name) is not str:
            rows.append(json.dumps(t._asdict()))      # anything unusual: as json itself writes it
            if type(dtype) is str and type(file) is str and type(shape) is tuple \
                    and all(type(x) is int for x in shape):
                known[dtype], known[shape], known[file] = json.dumps(dtype), json.dumps(list(shape)), json.dumps(file)
            continue
        rows.append(f'{{"name": {encode_basestring_ascii(name)}, "dtype": {d}, "shape": {s}, '
                    f'"file": {f}, "offset": {offset}, "nbytes": {nbytes}}}')
    return "[" + ", ".join(rows) + "]"
