"""A checkpoint claiming a known model (by repo id or _name_or_path) against its published facts."""
from __future__ import annotations

from ..catalogue import REQUIRED, compare_model, families, models
from ..index import TensorIndex
from ..infer import Inference
from .findings import Finding, finding


def check_catalogue(index: TensorIndex, inf: Inference, repo_id: str | None) -> list[Finding]:
    out: list[Finding] = []
    cfg = index.config or {}
    claims = {x.lower() for x in (repo_id, cfg.get("_name_or_path")) if isinstance(x, str) and x}
    fam = inf.family
    for m in models():
        if m.get("repo") and m["repo"].lower() in claims:
            _, differ = compare_model(m, inf.facts)
            if differ:
                detail = ", ".join(f"{k} {inf.value(k)} (published {m.get(k)})" for k in differ)
                out.append(finding("catalogue.model_mismatch", f"{m['repo']} is {m['name']}, but "
                                   f"this checkpoint differs in {detail}",
                                   file="config.json" if index.config else None))
            return out
    if not fam:
        return out
    by_config = fam["matched_by"].startswith(("config.json", "general.architecture"))
    if by_config and not fam.get("signature_ok", True):
        sig = families()[fam["family"]].get("signature", {})
        out.append(finding("catalogue.family_signature",
                           f"{fam['matched_by']} claims {fam['title']}, but the tensors lack its "
                           f"signature ({', '.join(f'{k} = {v}' for k, v in sig.items())})",
                           file="config.json" if index.config else None))
    closest, differ = fam.get("closest_model"), fam.get("differs_in") or []
    if closest and differ:
        m = next(x for x in models() if x["name"] == closest)
        if all(m.get(k) is not None and m.get(k) == inf.value(k) for k in REQUIRED):
            detail = ", ".join(f"{k} {inf.value(k)} (published {m.get(k)})" for k in differ)
            out.append(finding("catalogue.near_model",
                               f"{m['num_layers']} layers of width {m['hidden_size']} as in "
                               f"{closest}, but {detail}",
                               file="config.json" if index.config else None))
    return out
