"""Findings: every problem ``validate`` reports, with a stable code, a level and a message."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..catalogue import FamilyMatch
from ..report import SCHEMA_VERSION

LEVELS = ("warning", "error")          # in rising order

# code -> (level, what it means); the README lists these, tests refer to them by name
CODES: dict[str, tuple[str, str]] = {
    "config.implausible": ("error", "a size in config.json/GGUF metadata is not a believable number"),
    "config.num_layers": ("error", "layer count differs from the layers present"),
    "config.hidden_size": ("error", "model width differs from the embedding/norm width"),
    "config.vocab_size": ("error", "vocabulary size differs from the embedding rows"),
    "config.num_attention_heads": ("error", "query heads x head_dim differ from the attention width"),
    "config.num_key_value_heads": ("error", "kv heads x head_dim differ from the k/v projection width"),
    "config.head_dim": ("error", "head_dim differs from the per-head norm/sink shapes"),
    "config.intermediate_size": ("error", "dense FFN width differs from the FFN tensors"),
    "config.expert_intermediate_size": ("error", "expert FFN width differs from the expert tensors"),
    "config.shared_expert_intermediate_size": ("error", "shared-expert width differs from its tensors"),
    "config.num_experts": ("error", "routed-expert count differs from the experts present"),
    "config.num_experts_per_tok": ("error", "more experts per token than experts"),
    "config.num_shared_experts": ("error", "shared-expert count differs from the shared FFN width"),
    "config.dense_prefix": ("error", "first_k_dense_replace differs from the leading dense layers"),
    "config.moe_layers": ("error", "the layers config.json makes MoE differ from those with experts"),
    "config.kv_lora_rank": ("error", "MLA kv_lora_rank differs from the latent norm width"),
    "config.q_lora_rank": ("error", "MLA q_lora_rank differs from q_a_proj (or its absence)"),
    "config.mla_dims": ("error", "MLA rope/nope/v head sizes differ from the projection shapes"),
    "config.tie_word_embeddings": ("error", "tie_word_embeddings disagrees with a present/absent lm_head"),
    "config.tied_head_copy": ("warning", "tie_word_embeddings is true and lm_head is stored too, as "
                                         "a copy of the embedding that loaders ignore"),
    "config.attention_bias": ("error", "attention_bias disagrees with the bias tensors"),
    "config.mlp_bias": ("error", "mlp_bias disagrees with the bias tensors"),
    "config.mtp_layers": ("warning", "next-token-prediction layer count differs from the MTP tensors"),
    "config.layer_types": ("error", "layer_types has the wrong length or kinds"),
    "structure.layer_gap": ("error", "decoder layer numbers are not 0..L-1"),
    "structure.missing_tensor": ("error", "a layer lacks a tensor its kind needs"),
    "structure.unexpected_tensor": ("warning", "a tensor only a few layers of a kind hold"),
    "structure.shape_mismatch": ("error", "a tensor's shape differs from the same tensor in other layers"),
    "structure.dtype_mismatch": ("warning", "a tensor's dtype differs from the same tensor in other layers"),
    "structure.missing_expert": ("error", "per-expert tensors do not cover experts 0..E-1"),
    "structure.stray_expert": ("error", "a per-expert tensor numbered E or above"),
    "structure.expert_count": ("error", "stacked experts and router rows disagree"),
    "structure.duplicate": ("error", "two tensors play the same role in the same place"),
    "structure.unknown_tensor": ("warning", "a tensor no naming table knows"),
    "index.missing_shard": ("error", "the index names a shard that does not exist"),
    "index.missing_tensor": ("error", "weight_map names a tensor its shard does not hold"),
    "index.wrong_shard": ("error", "weight_map puts a tensor in another shard than the one holding it"),
    "index.unlisted_tensor": ("error", "a shard holds a tensor weight_map does not list"),
    "index.total_size": ("warning", "metadata.total_size differs from the tensors' bytes"),
    "index.stray_shard": ("warning", "a safetensors file in the folder that the index does not name"),
    "catalogue.model_mismatch": ("error", "the repo of a known model differs from its published facts"),
    "catalogue.near_model": ("warning", "same layers and width as a known model, but differs in some facts"),
    "catalogue.family_signature": ("warning", "the family config.json claims lacks its tensor signature"),
    "tokenizer.id_beyond_embedding": ("error", "a token id (vocabulary, added or special) at or beyond the "
                                               "embedding rows"),
    "tokenizer.special_not_in_vocab": ("error", "a BOS/EOS id or token the tokenizer's vocabulary does not hold"),
    "tokenizer.chat_template": ("error", "a chat template that does not parse (Jinja syntax)"),
    "tokenizer.unreadable": ("error", "a tokenizer file that is not valid JSON or UTF-8"),
    "policy.format": ("error", "checkpoint format not allowed by the policy"),
    "policy.dtype": ("error", "tensor dtype not allowed by the policy"),
    "policy.max_parameters": ("error", "more parameters than the policy allows"),
    "policy.config_missing": ("error", "no config.json though the policy requires one"),
    "policy.pickle": ("error", "pickle files in the repo though the policy forbids them"),
    "policy.remote_code": ("error", "config.json needs trust_remote_code (auto_map) though forbidden"),
    "policy.missing_file": ("error", "a file the policy requires is absent"),
    "truncated": ("warning", "more findings of one code than are listed"),
}
MAX_PER_CODE = 25


@dataclass
class Finding:
    code: str
    level: str
    message: str
    tensor: str | None = None
    key: str | None = None
    file: str | None = None

    def to_json(self) -> dict:
        d = {"code": self.code, "level": self.level, "message": self.message}
        for k in ("tensor", "key", "file"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d


def finding(code: str, message: str, **where: Any) -> Finding:
    return Finding(code, CODES[code][0], message, **where)


def cap(findings: list[Finding], limit: int = MAX_PER_CODE) -> list[Finding]:
    """At most ``limit`` findings per code (a 92k-tensor checkpoint can repeat one fault)."""
    seen: Counter = Counter()
    out = []
    for f in findings:
        seen[f.code] += 1
        if seen[f.code] <= limit:
            out.append(f)
    for code, n in seen.items():
        if n > limit:
            out.append(Finding("truncated", CODES[code][0],
                               f"{n - limit} more {code} findings not listed"))
    return out


@dataclass
class Validation:
    """The findings of one checkpoint, with what was checked."""
    source: str
    format: str | None
    findings: list[Finding]
    family: FamilyMatch | None = None
    tensors: int = 0
    files: int = 0
    seconds: float = 0.0              # CPU time spent reading and checking
    root: str | None = None           # local path of the checkpoint (for annotations)
    fail_on: str | None = None        # a policy's default for --fail-on

    def count(self, level: str) -> int:
        return sum(1 for f in self.findings if f.level == level)

    def failed(self, fail_on: str = "error") -> bool:
        floor = LEVELS.index(fail_on)
        return any(LEVELS.index(f.level) >= floor for f in self.findings)

    def to_json(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "source": self.source, "format": self.format,
                "family": self.family,
                "tensor_count": self.tensors, "file_count": self.files,
                "counts": {lv: self.count(lv) for lv in reversed(LEVELS)},
                "findings": [f.to_json() for f in self.findings]}
