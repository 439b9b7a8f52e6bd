"""Architecture inference: facts about a checkpoint, each with its source and evidence.

``infer(index)`` reads names and shapes from a TensorIndex (config.json and GGUF metadata only
where the tensors cannot tell) and returns an ``Inference``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..catalogue import FamilyMatch
from ..index import TensorIndex, bulk
from .attention import infer_attention
from .embeddings import ignored_head, infer_embeddings
from .fact import Fact, Hints
from .moe import infer_moe
from .names import NameInfo, canonical_name, canonicalize, parse_name
from .norms import infer_norms
from .params import infer_params
from .quant import infer_quant
from .scan import Scan, scan
from .tokenizer import infer_tokenizer

FACT_KEYS = (
    "num_layers", "hidden_size", "vocab_size", "intermediate_size", "tied_embeddings",
    "attention_bias", "mlp_bias", "attention", "num_attention_heads", "num_key_value_heads",
    "head_dim", "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim",
    "v_head_dim", "num_experts", "num_shared_experts", "expert_intermediate_size",
    "dense_prefix_layers", "moe_layers", "num_experts_per_tok", "router_bias",
    "attention_sinks", "qk_norm", "norm_placement", "norm_kind", "positional", "mtp_layers",
    "linear_attention_layers", "linear_attention_state", "sliding_window",
    "chunked_attention", "quantization", "parameters",
    "kv_cache_bytes_per_token", "tokenizer",
)

__all__ = ["infer", "Inference", "Fact", "FACT_KEYS", "canonical_name", "canonicalize",
           "parse_name", "NameInfo", "scan", "Scan"]


@dataclass
class Inference:
    facts: dict[str, Fact]
    family: FamilyMatch | None = None
    scan: Scan | None = field(default=None, repr=False)

    def value(self, key: str) -> Any:
        f = self.facts.get(key)
        return None if f is None else f.value

    def to_json(self) -> dict:
        return {"family": self.family,
                "facts": {k: f.to_json() for k, f in self.facts.items()}}


def load_tables() -> None:
    """Load the mapping tables inference reads (``api.warm_up`` does it while headers download)."""
    from .. import mapdata
    mapdata.roles()
    mapdata.config_keys()
    mapdata.catalogue_families()
    mapdata.known_models()


def infer(index: TensorIndex, match: bool = True) -> Inference:
    """All facts of issue 3 for ``index``; ``match`` also names the catalogue family/model."""
    h = Hints(index.config, index.metadata, index.format)
    with bulk():
        s = scan(index)
    facts: dict[str, Fact] = {}
    facts.update(infer_embeddings(s, h))
    facts.update(infer_attention(s, h))
    facts.update(infer_moe(s, h, facts["hidden_size"].value))
    facts.update(infer_norms(s))
    facts["quantization"] = infer_quant(index, s, h)
    facts["tokenizer"] = infer_tokenizer(index.tokenizer_files, index.config, index.metadata, index.format)
    k = facts["num_experts_per_tok"]
    head = ignored_head(s, h)
    facts["parameters"] = infer_params(s, facts["num_experts"].value, k.value, k.source,
                                       head[0] if head else None)
    ordered = {key: facts[key] for key in FACT_KEYS if key in facts}
    result = Inference(ordered, None, s)
    if match:
        from ..catalogue import match_family
        result.family = match_family(ordered, index.config, index.metadata
                                     if index.format == "gguf" else None)
    return result
