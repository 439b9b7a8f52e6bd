"""The catalogue of known architectures (``mappings/families/*.toml``) and models
(``mappings/models.toml``), and matching inferred facts against it."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Required, TypedDict

from . import mapdata
from .mapdata import CatalogueFamily, KnownModel

# facts compared against a model's published numbers to name the model
MODEL_KEYS = ("num_layers", "hidden_size", "vocab_size", "num_attention_heads",
              "num_key_value_heads", "head_dim", "intermediate_size", "expert_intermediate_size",
              "num_experts", "num_shared_experts", "dense_prefix_layers", "kv_lora_rank",
              "q_lora_rank")
# a model is named only when these agree
REQUIRED = ("num_layers", "hidden_size")
# ... and a nearest model (no exact one) only when it differs in at most this many facts: a
# fine-tune with another vocabulary or a variant with wider FFNs is near, a 2-layer test model
# of the same family is not
NEAR_DIFFERENCES = 2


class FamilyMatch(TypedDict, total=False):
    """What match_family found: the family, the model when one is named, and why."""
    family: Required[str]
    title: Required[str]
    model: Required[str | None]         # a known model whose dimensions all agree
    matched_by: Required[str]           # "config.json:...", "general.architecture = ...", "tensor signature"
    signature_ok: Required[bool]
    closest_model: str                  # when no model agrees: a near one (``is_near``) ...
    differs_in: list[str]               # ... and the facts it differs in
    also_fits: list[str]                # other families the tensors fit (no claim made)


def families() -> Mapping[str, CatalogueFamily]:
    """Family name -> its catalogue entry (also readable as a mapping of the file's keys)."""
    return mapdata.catalogue_families()


def models() -> tuple[KnownModel, ...]:
    """Known models in file order (each also readable as a mapping of its facts)."""
    return mapdata.known_models()


def _fact(facts: dict, key: str) -> Any:
    f = facts.get(key)
    return getattr(f, "value", f)


def _holds(value: Any, cond: Any) -> bool:
    if cond == "present":
        return value not in (None, [], 0, False)
    if cond == "absent":
        return value in (None, [], 0, False)
    if isinstance(cond, list):
        return value in cond
    return value == cond


def signature_matches(fam: CatalogueFamily, facts: dict) -> bool:
    return all(_holds(_fact(facts, k), c) for k, c in fam.signature.items())


def compare_model(model: KnownModel, facts: dict) -> tuple[int, list[str]]:
    """(number of agreeing keys, keys that differ) between a model row and facts."""
    agree, differ = 0, []
    for k in MODEL_KEYS:
        want, got = model.get(k), _fact(facts, k)
        if want is None or got is None:
            continue
        if want == got:
            agree += 1
        else:
            differ.append(k)
    mtp = model.mtp_layers
    if mtp is not None and _fact(facts, "mtp_layers") not in (None, mtp) and \
            _fact(facts, "mtp_layers") != 0:
        differ.append("mtp_layers")
    return agree, differ


def find_model(family: str | None, facts: dict) -> tuple[KnownModel | None, KnownModel | None, list[str]]:
    """(exact model, closest model, keys the closest differs in) among a family's models."""
    best, best_diff, best_score = None, [], float("-inf")
    for m in models():
        if family is not None and m.family != family:
            continue
        agree, differ = compare_model(m, facts)
        if any(_fact(facts, k) is not None and m.get(k) is not None and _fact(facts, k) != m[k]
               for k in REQUIRED):
            score = agree - 10 * len(differ) - 100
        else:
            score = agree - 10 * len(differ)
        if score > best_score:
            best, best_diff, best_score = m, differ, score
    exact = best if best is not None and not best_diff and all(
        _fact(facts, k) is not None and best.get(k) == _fact(facts, k) for k in REQUIRED) else None
    return exact, best, best_diff


def is_near(model: KnownModel, facts: dict, differ: list[str]) -> bool:
    """Near enough to name: the same layers and width, and at most NEAR_DIFFERENCES other facts
    apart."""
    same = all(_fact(facts, k) is not None and model.get(k) == _fact(facts, k) for k in REQUIRED)
    return same and len(differ) <= NEAR_DIFFERENCES


def _claimed(config: dict | None, gguf: dict | None) -> tuple[str, str] | None:
    """(family, why) named by config.json (model_type, then architectures) or GGUF metadata;
    several families joined by "|" when the claim fits more than one."""
    fams = families()
    if isinstance(config, dict):
        types = [config.get("model_type")]
        text = config.get("text_config")
        if isinstance(text, dict):
            types.append(text.get("model_type"))
        for t in types:
            for name, fam in fams.items():
                if t and t in fam.model_types:
                    return name, f"config.json:model_type = {t}"
        for arch in config.get("architectures") or []:
            for name, fam in fams.items():
                if arch in fam.hf_architectures:
                    return name, f"config.json:architectures = {arch}"
    if isinstance(gguf, dict):
        arch = gguf.get("general.architecture")
        hits = [n for n, f in fams.items() if f.gguf_arch == arch]
        if len(hits) == 1:
            return hits[0], f"general.architecture = {arch}"
        if hits:
            return "|".join(hits), f"general.architecture = {arch}"
    return None


def match_family(facts: dict, config: dict | None = None,
                 gguf_metadata: dict | None = None) -> FamilyMatch | None:
    """Name the family (and, when the dimensions agree, the known model) of a checkpoint.

    ``facts`` maps fact keys to Fact objects or plain values. Config/GGUF claims decide the
    family when present; otherwise the family whose tensor signature fits, preferring one
    with a model of the same dimensions."""
    fams = families()
    claim = _claimed(config, gguf_metadata)
    candidates: list[str]
    if claim and "|" not in claim[0]:
        candidates, why = [claim[0]], claim[1]
    else:
        pool = claim[0].split("|") if claim else list(fams)
        candidates = [n for n in pool if signature_matches(fams[n], facts)]
        if not candidates:
            return None
        why = claim[1] if claim else "tensor signature"
    ranked = []
    for name in candidates:
        exact, closest, differ = find_model(name, facts)
        specificity = len(fams[name].signature)
        ranked.append((exact is not None, specificity, name, exact, closest, differ))
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    _, _, name, exact, closest, differ = ranked[0]
    fam = fams[name]
    out: FamilyMatch = {"family": name, "title": fam.title, "model": exact.name if exact else None,
           "matched_by": why, "signature_ok": signature_matches(fam, facts)}
    if exact is None and closest is not None and is_near(closest, facts, differ):
        out["closest_model"] = closest.name
        out["differs_in"] = differ
    if len(ranked) > 1 and not claim:
        out["also_fits"] = [r[2] for r in ranked[1:]]
    return out


def catalogue_rows(family: str | None = None) -> list[dict]:
    """One row per known model, for ``ckptkit catalogue`` and ``compare``."""
    fams = families()
    rows = []
    for m in models():
        if family and m.family != family:
            continue
        fam = fams.get(m.family)
        experts = m.num_experts
        rows.append({
            "model": m.name,
            "family": fam.title if fam else m.family,
            "weights": m.weights,
            "repo": m.repo,
            "layers": m.num_layers,
            "hidden": m.hidden_size,
            "attention": m.attention,
            "heads": m.num_attention_heads,
            "kv_heads": m.num_key_value_heads,
            "head_dim": m.head_dim,
            "vocab": m.vocab_size,
            "experts": f"{m.num_experts_per_tok}/{experts}" if experts else None,
            "shared_experts": m.num_shared_experts,
            "dense_prefix": m.dense_prefix_layers,
            "context": m.context_length,
            "params_total_b": m.params_total,
            "params_active_b": m.params_active if m.params_active is not None else m.params_total,
            "params_active_counts_embedding": m.params_active_counts_embedding is not False,
            "source": m.source,
        })
    return rows


def known_names(names: Iterable[str], family: str) -> int:
    """How many of ``names`` match the family's identifying name patterns."""
    pats = families()[family].patterns()
    return sum(1 for n in names if any(p.search(n) for p in pats))
