"""The machine-readable report of `inspect --json`: plain dicts, stable keys.

Keys `family`, `facts`, `evidence` and `findings` are filled by inference and validation."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .index import TensorIndex

if TYPE_CHECKING:
    from .infer import Inference

#: The ``schema_version`` of every JSON report (inspect, validate and diff ``--json``, and the
#: API's ``to_json()``/``report()``): raised when a key is removed or changes meaning; new keys
#: may appear without a change.
SCHEMA_VERSION = 1


def index_report(index: TensorIndex, with_tensors: bool = True) -> dict[str, Any]:
    """The report's keys that come from the index alone (inference fills the rest)."""
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "source": index.source,
        "format": index.format,
        "files": [{"name": f.name, "size": f.size} for f in index.files],
        "total_bytes": index.total_bytes,
        "parameters": {"total": index.total_parameters},
        "dtypes": index.parameters_by_dtype(),
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
