"""`ckptkit validate`: audit a checkpoint for CI.

Every problem is a ``Finding`` with a stable ``code`` (see ``CODES``), a level (``error`` or
``warning``) and a message. Four groups of checks, each a small pure function of the tensor
index and its inferred facts:

- ``config.*``: config.json (or GGUF metadata) against what the tensors show;
- ``structure.*``: every layer holds the tensors its kind needs, in agreeing shapes, experts
  numbered 0..E-1, nothing stray or duplicated;
- ``index.*``: the shard index against the shards;
- ``catalogue.*``: a checkpoint claiming a known model against its published facts;
plus ``policy.*`` from a policy file (``ckptkit.policy``).
"""
from __future__ import annotations

import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from .index import TensorIndex, span_text
from .infer import Inference, infer
from .infer.fact import Hints
from .infer.moe import DENSE, SHARED, ffn_width
from .infer.names import NameInfo, canonicalize

MAPPINGS = Path(__file__).resolve().parents[1] / "mappings"
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


@dataclass
class Validation:
    source: str
    format: str | None
    findings: list[Finding]
    family: dict | None = None
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
        return {"source": self.source, "format": self.format, "family": self.family,
                "tensor_count": self.tensors, "file_count": self.files,
                "counts": {lv: self.count(lv) for lv in reversed(LEVELS)},
                "findings": [f.to_json() for f in self.findings]}


# ---- entry points ------------------------------------------------------------------------------

def validate(spec: str, revision: str | None = None, policy=None) -> Validation:
    """Open ``spec`` (folder, file or Hub repo), read its headers and run every check.

    Raises CkptError for input that cannot be read at all (exit 2 in the CLI)."""
    from .api import find_checkpoint_files, load_index, open_source, read_json
    t0 = time.process_time()
    with open_source(spec, revision) as source:
        files = source.files()
        fmt, _, index_file = find_checkpoint_files(source)
        root = spec if Path(spec).exists() else None      # local: annotations can name files
        if index_file:
            missing = missing_shards(read_json(source, index_file), index_file, files)
            if missing:      # the headers cannot all be read: report what is known and stop
                v = Validation(source.label, fmt, missing, files=len(files), root=root)
                v.seconds = time.process_time() - t0
                return v
        index = load_index(source)
        repo = getattr(source, "repo_id", None)
    v = validate_index(index, files=files, index_file=index_file, policy=policy, repo_id=repo)
    v.root = root
    v.seconds = time.process_time() - t0
    return v


def validate_index(index: TensorIndex, files: dict[str, int | None] | None = None,
                   index_file: str | None = None, policy=None, repo_id: str | None = None,
                   inference: Inference | None = None) -> Validation:
    """Every check on an already-read index. ``files`` is the source's file listing (for stray
    shards and policy checks); ``repo_id`` the Hub repo it came from (a claim of a model)."""
    inf = inference or infer(index)
    layout = Layout.of(index)
    out: list[Finding] = []
    out += check_config(index, inf, layout)
    out += check_structure(index, inf, layout)
    if index.shard_index is not None:
        out += check_shard_index(index, index_file or "model.safetensors.index.json", files)
    out += check_catalogue(index, inf, repo_id)
    if policy is not None:
        from .policy import check_policy
        out += check_policy(policy, index, inf, files)
        out = policy.adjust(out)
    return Validation(index.source, index.format, cap(out), inf.family, len(index.tensors),
                      len(index.files), fail_on=getattr(policy, "fail_on", None))


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


# ---- data ---------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _data() -> dict:
    with open(MAPPINGS / "validate.toml", "rb") as f:
        return tomllib.load(f)


class Claims:
    """What config.json or GGUF metadata says, by fact name (``mappings/validate.toml``)."""

    def __init__(self, index: TensorIndex):
        self.h = Hints(index.config, index.metadata, index.format)
        self.gguf = index.format == "gguf" and self.h.arch is not None
        self.file = "config.json" if index.config else (index.files[0].name if index.files else None)
        self.available = bool(index.config) or self.gguf

    def get(self, fact: str) -> tuple[Any, str | None]:
        """(value, key) for ``fact``; config.json first, GGUF metadata when there is no config."""
        spec = _data()["claims"][fact]
        if self.h.config:
            v, k = self.h.cfg(*spec["config"])
            if k is not None:
                return v, k
            # an explicit null (q_lora_rank: null) is a claim too
            for key in spec["config"]:
                for where, d in (("text_config.", self.h.text), ("", self.h.config)):
                    if key in d:
                        return None, f"config.json:{where}{key}"
            return None, None
        if self.gguf and spec["gguf"]:
            v, k = self.h.gguf(*spec["gguf"])
            if isinstance(v, list):          # per-layer arrays: the first nonzero entry
                v = next((x for x in v if x), None)
            return v, k
        return None, None

    def raw(self, key: str) -> tuple[Any, str | None]:
        v, k = self.h.cfg(key)
        return v, k


# ---- the layout: every tensor's role, per layer ------------------------------------------------

@dataclass
class LayerView:
    num: int
    roles: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # role -> names
    experts: dict[str, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))

    def has(self, role: str) -> bool:
        return role in self.roles or role in self.experts

    def kinds(self) -> tuple[str, str]:
        keys = set(self.roles) | set(self.experts)
        if any(r.startswith("attn_kv_a_mqa.") for r in keys):
            attn = "mla"
        elif any(r.startswith("ssm_") for r in keys):
            attn = "linear"
        elif any(r.startswith(("attn_q.", "attn_qkv.", "attn_k.", "attn_v.", "attn_output."))
                 for r in keys):
            attn = "attention"
        else:
            attn = "none"
        if any(r.startswith(("ffn_gate_inp.", "ffn_gate_exps.", "ffn_up_exps.", "ffn_down_exps.",
                             "ffn_gate_up_exps.")) for r in keys):
            ffn = "moe"
        elif any(r.startswith(("ffn_up.", "ffn_down.", "ffn_gate.", "ffn_gate_up.")) for r in keys):
            ffn = "dense"
        else:
            ffn = "none"
        return attn, ffn


@dataclass
class Layout:
    layers: dict[int, LayerView]
    mtp: dict[int, LayerView]
    globals: dict[str, list[str]]
    unknown: list[str]

    @classmethod
    def of(cls, index: TensorIndex) -> "Layout":
        infos: dict[str, NameInfo] = canonicalize(index.tensors)
        layers: dict[int, LayerView] = {}
        mtp_sep: dict[int, LayerView] = {}
        glob: dict[str, list[str]] = defaultdict(list)
        unknown = []
        for name, info in infos.items():
            if info.role is None:
                unknown.append(name)
                continue
            if info.role in ("vision", "buffer"):
                continue
            if info.layer is None:
                glob[("mtp." if info.mtp else "") + info.role].append(name)
                continue
            table = mtp_sep if (info.mtp and not info.role.startswith("nextn.")) else layers
            lv = table.get(info.layer)
            if lv is None:
                lv = table[info.layer] = LayerView(info.layer)
            if info.expert is not None:
                prev = lv.experts[info.role].get(info.expert)
                if prev is not None:
                    lv.roles.setdefault("dup:" + info.role, []).extend([prev, name])
                lv.experts[info.role][info.expert] = name
            else:
                lv.roles[info.role].append(name)
        # DeepSeek-style MTP modules are numbered layers holding nextn.* tensors
        mtp = {n: lv for n, lv in layers.items() if any(r.startswith("nextn.") for r in lv.roles)}
        for n in mtp:
            del layers[n]
        mtp.update({-1 - n: lv for n, lv in mtp_sep.items()})
        return cls(layers, mtp, dict(glob), unknown)


def _first(lv: LayerView, role: str) -> str | None:
    names = lv.roles.get(role)
    return names[0] if names else None


# ---- config.json / GGUF metadata vs tensors ------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_config(index: TensorIndex, inf: Inference, layout: Layout) -> list[Finding]:
    c = Claims(index)
    if not c.available:
        return []
    out: list[Finding] = []
    facts = inf.facts
    where = {"file": c.file}
    bad: set[str] = set()

    for fact, limit in _data()["limits"].items():
        v, k = c.get(fact)
        if k is None or v is None:
            continue
        if not _is_int(v) or v < 0 or v > limit:
            bad.add(fact)
            out.append(finding("config.implausible",
                               f"{k} = {v!r} is not a believable {fact.replace('_', ' ')} "
                               f"(expected a whole number from 0 to {limit:,})", key=k, **where))

    def val(fact: str) -> Any:
        f = facts.get(fact)
        return None if f is None else f.value

    def ev(fact: str) -> str:
        f = facts.get(fact)
        return f.evidence[0] if f is not None and f.evidence else "the tensors"

    def claim(fact: str) -> tuple[Any, str | None]:
        if fact in bad:
            return None, None
        return c.get(fact)

    def compare(fact: str, code: str, what: str, got: Any = None, evidence: str | None = None) -> None:
        v, k = claim(fact)
        got = val(fact) if got is None else got
        if k is None or v is None or got is None:
            return
        f = facts.get(fact)
        if evidence is None and f is not None and f.source != "tensors":
            return
        if v != got:
            out.append(finding(code, f"{k} = {v}, but the checkpoint has {got} {what} "
                                      f"({evidence or ev(fact)})", key=k, **where))

    # ---- sizes
    mtp_n = val("mtp_layers") or 0
    v, k = claim("num_layers")
    if k and v is not None and v != val("num_layers") and not (c.gguf and v == val("num_layers") + mtp_n):
        out.append(finding("config.num_layers",
                           f"{k} = {v}, but the checkpoint has {val('num_layers')} decoder layers "
                           f"({ev('num_layers')})", key=k, **where))
    compare("hidden_size", "config.hidden_size", "as model width")
    compare("vocab_size", "config.vocab_size", "vocabulary rows")

    out += _check_attention(c, inf, layout, index, claim, where)
    out += _check_ffn(c, inf, layout, claim, where)

    # ---- head, biases, MTP
    tied, k = claim("tied_embeddings")
    if k is not None and isinstance(tied, bool) and not c.gguf:
        head = layout.globals.get("output.weight")
        if tied and head:
            out.append(finding("config.tie_word_embeddings",
                               f"{k} = true, but the checkpoint has a separate output head "
                               f"{head[0]} (a loader would silently replace it by the embedding)",
                               key=k, tensor=head[0], **where))
        elif not tied and not head:
            out.append(finding("config.tie_word_embeddings",
                               f"{k} = false, but the checkpoint has no output head (lm_head): a "
                               "loader would initialise it at random", key=k, **where))
    for fact, code in (("attention_bias", "config.attention_bias"), ("mlp_bias", "config.mlp_bias")):
        v, k = claim(fact)
        got = val(fact)
        if isinstance(v, bool) and isinstance(got, bool) and v != got and layout.layers:
            # qwen2-style configs leave attention_bias out; only an explicit value is a claim
            out.append(finding(code, f"{k} = {str(v).lower()}, but the checkpoint "
                                     f"{'has' if got else 'has no'} such bias tensors ({ev(fact)})",
                               key=k, **where))
    v, k = claim("mtp_layers")
    if k is not None and _is_int(v) and v != mtp_n:
        out.append(finding("config.mtp_layers",
                           f"{k} = {v}, but the checkpoint holds {mtp_n} next-token-prediction "
                           f"layer(s)" + (" (stripped from this copy?)" if v > mtp_n else ""),
                           key=k, **where))

    types, tk = c.raw("layer_types") if index.config else (None, None)
    n_layers = val("num_layers")
    if isinstance(types, list) and n_layers:
        if len(types) != n_layers:
            out.append(finding("config.layer_types",
                               f"{tk} lists {len(types)} layers, but the checkpoint has {n_layers}",
                               key=tk, **where))
        else:
            lin = set(val("linear_attention_layers") or [])
            said = {i for i, t in enumerate(types) if t == "linear_attention"}
            if said != lin and (said or lin):
                out.append(finding("config.layer_types",
                                   f"{tk} makes layers {span_text(said)} linear attention, but the "
                                   f"linear-attention tensors are in layers {span_text(lin)}",
                                   key=tk, **where))
    return out


def _widths(layout: Layout, index: TensorIndex) -> dict[str, Any]:
    """Attention widths of the first standard-attention layer: o_proj input (heads*head_dim),
    k_proj output (kv_heads*head_dim) and fused qkv rows."""
    for num in sorted(layout.layers):
        lv = layout.layers[num]
        if lv.kinds()[0] != "attention":
            continue
        out: dict[str, Any] = {"layer": num}
        o = _first(lv, "attn_output.weight")
        if o is not None:
            shape = index.tensors[o].shape
            transposed = ".c_proj." in o          # GPT-2 Conv1D stores [in, out]
            if len(shape) == 2:
                out["q"] = (shape[0] if transposed else shape[1], o)
        kk = _first(lv, "attn_k.weight")
        if kk is not None:
            out["k"] = (index.tensors[kk].shape[0], kk)
        qkv = _first(lv, "attn_qkv.weight")
        if qkv is not None:
            shape = index.tensors[qkv].shape
            out["qkv"] = (shape[1] if ".c_attn." in qkv else shape[0], qkv)
        return out
    return {}


def _check_attention(c: Claims, inf: Inference, layout: Layout, index: TensorIndex, claim,
                     where) -> list[Finding]:
    out: list[Finding] = []
    f = inf.facts
    kind = f["attention"].value if "attention" in f else None
    if kind == "mla":
        rank, k = claim("kv_lora_rank")
        if k and rank is not None and rank != f["kv_lora_rank"].value:
            out.append(finding("config.kv_lora_rank", f"{k} = {rank}, but the latent is "
                               f"{f['kv_lora_rank'].value} wide ({f['kv_lora_rank'].evidence[0]})",
                               key=k, **where))
        qr, k = claim("q_lora_rank")
        got = f["q_lora_rank"].value
        if k and qr != got and not (c.gguf and qr is None):
            out.append(finding("config.q_lora_rank",
                               f"{k} = {qr if qr is not None else 'null'}, but "
                               + (f"q_a_proj compresses queries to {got}" if got else
                                  "the checkpoint has no q_a_proj (queries are not compressed)"),
                               key=k, **where))
        for dim in ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
            v, k = claim(dim)
            got = f[dim].value
            if k and v is not None and got is not None and f[dim].source == "tensors" and v != got:
                out.append(finding("config.mla_dims", f"{k} = {v}, but the projection shapes give "
                                   f"{got} ({'; '.join(f[dim].evidence[:3])})", key=k, **where))
        v, k = claim("num_attention_heads")
        got = f["num_attention_heads"].value
        if k and v is not None and got and f["num_attention_heads"].source == "tensors" and v != got:
            out.append(finding("config.num_attention_heads",
                               f"{k} = {v}, but the MLA projections hold {got} heads", key=k, **where))
        return out

    w = _widths(layout, index)
    if not w:
        return out
    heads, hk = claim("num_attention_heads")
    kv, kvk = claim("num_key_value_heads")
    hd_claim, hdk = claim("head_dim")
    hidden = f["hidden_size"].value
    hd_fact, heads_fact = f["head_dim"], f["num_attention_heads"]
    heads = heads if _is_int(heads) and heads > 0 else None
    kv = kv if _is_int(kv) and kv > 0 else None
    hd_from_heads = False
    if hd_fact.source == "tensors" and hd_fact.value:
        hd = hd_fact.value
        if hdk and _is_int(hd_claim) and hd_claim != hd:
            out.append(finding("config.head_dim", f"{hdk} = {hd_claim}, but the tensors give "
                               f"head_dim {hd} ({'; '.join(hd_fact.evidence[-1:])})", key=hdk, **where))
    elif _is_int(hd_claim) and hd_claim:
        hd = hd_claim
    elif heads and hidden and hidden % heads == 0:
        hd, hd_from_heads = hidden // heads, True
    else:
        hd = None
        if heads and hidden and hdk is None:
            out.append(finding("config.num_attention_heads",
                               f"{hk} = {heads} does not divide the model width {hidden}, and no "
                               "head_dim is given", key=hk, **where))
            return out
    hd_txt = f"head_dim {hd}" + (f" ({hidden}/{heads})" if hd_from_heads else "")
    heads_bad = False
    if heads and hd:
        q = w.get("q")
        if heads_fact.source == "tensors" and heads_fact.value and heads_fact.value != heads:
            heads_bad = True
            out.append(finding("config.num_attention_heads", f"{hk} = {heads}, but the checkpoint "
                               f"has {heads_fact.value} heads ({heads_fact.evidence[-1]})",
                               key=hk, **where))
        elif q and heads * hd != q[0]:
            heads_bad = True
            out.append(finding("config.num_attention_heads",
                               f"{hk} = {heads} x {hd_txt} = {heads * hd}, but {q[1]} takes "
                               f"{q[0]} inputs ({q[0] / hd:g} heads)", key=hk, tensor=q[1], **where))
    if kv and hd and not (heads_bad and hd_from_heads):
        k, qkv = w.get("k"), w.get("qkv")
        if k and kv * hd != k[0]:
            out.append(finding("config.num_key_value_heads",
                               f"{kvk} = {kv} x {hd_txt} = {kv * hd}, but {k[1]} has {k[0]} rows "
                               f"({k[0] / hd:g} kv heads)", key=kvk, tensor=k[1], **where))
        elif not k and qkv and heads and (heads + 2 * kv) * hd != qkv[0]:
            out.append(finding("config.num_key_value_heads",
                               f"{kvk} = {kv}: ({heads} + 2 x {kv}) x {hd_txt} = "
                               f"{(heads + 2 * kv) * hd}, but the fused {qkv[1]} has {qkv[0]} rows",
                               key=kvk, tensor=qkv[1], **where))
        elif heads and (kv > heads or heads % kv):
            out.append(finding("config.num_key_value_heads",
                               f"{kvk} = {kv} does not divide {hk} = {heads}", key=kvk, **where))
    return out


def _check_ffn(c: Claims, inf: Inference, layout: Layout, claim, where) -> list[Finding]:
    out: list[Finding] = []
    f = inf.facts
    n_layers = f["num_layers"].value or 0
    moe = list(f["moe_layers"].value or [])
    dense_w, ew = f["intermediate_size"].value, f["expert_intermediate_size"].value

    def mismatch(code: str, k: str, v: Any, got: Any, what: str, ev: str) -> None:
        out.append(finding(code, f"{k} = {v}, but {what} {got} ({ev})", key=k, **where))

    v, k = claim("intermediate_size")
    mlp_key = bool(k and k.endswith("intermediate_size_mlp"))
    if dense_w is not None and k and _is_int(v) and v != dense_w:
        mismatch("config.intermediate_size", k, v, dense_w, "the dense feed-forward width is",
                 f["intermediate_size"].evidence[0])
    v, k = claim("expert_intermediate_size")
    if k is None and moe and not c.gguf and (dense_w is None or mlp_key):
        v, k = c.raw("intermediate_size")       # Mixtral, gpt-oss, Llama 4: the expert width
    if ew is not None and k and _is_int(v) and v != ew:
        mismatch("config.expert_intermediate_size", k, v, ew, "the experts are",
                 f["expert_intermediate_size"].evidence[0] if f["expert_intermediate_size"].evidence
                 else "expert tensors")
    v, k = claim("shared_expert_intermediate_size")
    if moe and k and _is_int(v) and inf.scan is not None:
        sw, sev = ffn_width(inf.scan.layers[moe[0]], SHARED, f["hidden_size"].value)
        if sw is not None and v != sw:
            mismatch("config.shared_expert_intermediate_size", k, v, sw, "the shared expert is", sev)

    ne = f["num_experts"].value
    v, k = claim("num_experts")
    if k and _is_int(v):
        if v and not moe:
            out.append(finding("config.num_experts", f"{k} = {v}, but no layer has router or "
                               "expert tensors (a dense checkpoint)", key=k, **where))
        elif ne is not None and v != ne:
            mismatch("config.num_experts", k, v, ne, "the checkpoint has experts",
                     f["num_experts"].evidence[0])
    topk, tk = claim("num_experts_per_tok")
    if tk and _is_int(topk) and moe and ne and topk > ne:
        out.append(finding("config.num_experts_per_tok", f"{tk} = {topk}, but there are only "
                           f"{ne} experts", key=tk, **where))
    v, k = claim("num_shared_experts")
    shared = f["num_shared_experts"]
    if moe and k and _is_int(v) and shared.value is not None and v != shared.value:
        mismatch("config.num_shared_experts", k, v, shared.value, "the shared FFN holds",
                 shared.evidence[0])

    # which layers are MoE
    moe_set = set(moe)
    first_k, fk = claim("dense_prefix_layers")
    dense_bad = False
    if fk and _is_int(first_k) and (moe or (_is_int(ne) and ne)):
        got = f["dense_prefix_layers"].value or 0
        if first_k != got:
            dense_bad = True
            mismatch("config.dense_prefix", fk, first_k, got, "the leading dense layers number",
                     f"MoE layers {span_text(moe)}")
    expected: list[tuple[str, set[int]]] = []
    if not c.gguf:
        ml, mk = c.raw("moe_layers")
        if isinstance(ml, list) and all(_is_int(x) for x in ml):
            expected.append((f"{mk} = {ml}", set(ml)))
        step, sk = c.raw("interleave_moe_layer_step")
        if _is_int(step) and step > 0:
            expected.append((f"{sk} = {step}",
                             {i for i in range(n_layers) if (i + 1) % step == 0}))
        step, sk = c.raw("decoder_sparse_step")
        nexp, _ = claim("num_experts")
        if _is_int(step) and step > 0 and _is_int(nexp) and nexp:
            only, ok = c.raw("mlp_only_layers")
            only = set(only) if isinstance(only, list) else set()
            expected.append((f"{sk} = {step}" + (f", {ok} = {sorted(only)}" if only else ""),
                             {i for i in range(n_layers) if i not in only and (i + 1) % step == 0}))
        if fk and _is_int(first_k) and not dense_bad and moe:
            freq, qk = c.raw("moe_layer_freq")
            freq = freq if _is_int(freq) and freq > 0 else 1
            expected.append((f"{fk} = {first_k}" + (f", {qk} = {freq}" if qk else ""),
                             {i for i in range(first_k, n_layers) if i % freq == 0}))
    for why, want in expected:
        if want != moe_set:
            key = why.split(" = ")[0]
            out.append(finding("config.moe_layers", f"{why} makes layers {span_text(want)} MoE, but "
                               f"the expert tensors are in layers {span_text(moe_set)}", key=key, **where))
    return out


# ---- structure -------------------------------------------------------------------------------------

def check_structure(index: TensorIndex, inf: Inference, layout: Layout) -> list[Finding]:
    out: list[Finding] = []
    T = index.tensors

    def at(name: str) -> dict:
        return {"tensor": name, "file": T[name].file}

    nums = sorted(layout.layers)
    if nums and nums != list(range(len(nums))):
        gone = sorted(set(range(nums[-1] + 1)) - set(nums))
        out.append(finding("structure.layer_gap", f"decoder layers run 0..{nums[-1]} but layer(s) "
                           f"{span_text(gone)} hold no tensors"))
    for name in layout.unknown:
        out.append(finding("structure.unknown_tensor", f"{name} {list(T[name].shape)} matches no "
                           "known tensor name (stray, or an architecture ckptkit does not know)",
                           **at(name)))

    for role, names in layout.globals.items():
        if len(names) > 1:
            out.append(finding("structure.duplicate", f"{', '.join(names)} all play {role}",
                               **at(names[1])))
    for lv in layout.layers.values():
        for role, names in lv.roles.items():
            if role.startswith("dup:") or len(names) > 1:
                what = role[4:] if role.startswith("dup:") else role
                out.append(finding("structure.duplicate", f"layer {lv.num}: {', '.join(names[:4])} "
                                   f"all play {what}", **at(names[-1])))
        for fused, parts in (("attn_qkv.weight", ("attn_q.weight", "attn_k.weight")),
                             ("ffn_gate_up.weight", ("ffn_up.weight", "ffn_gate.weight"))):
            if lv.has(fused) and any(lv.has(p) for p in parts):
                other = next(_first(lv, p) for p in parts if lv.has(p))
                out.append(finding("structure.duplicate", f"layer {lv.num} holds both the fused "
                                   f"{_first(lv, fused)} and the separate {other}", **at(other)))

    groups: dict[tuple[str, str], list[LayerView]] = defaultdict(list)
    for n in nums:
        groups[layout.layers[n].kinds()].append(layout.layers[n])
    attn_kinds = {k[0] for k in groups if k[0] != "none"}
    ffn_kinds = {k[1] for k in groups if k[1] != "none"}
    required = _data()["required"]
    for (attn, ffn), lvs in groups.items():
        desc = f"({attn}, {ffn})"
        for lv in lvs:
            if attn == "none" and attn_kinds:
                out.append(finding("structure.missing_tensor", f"layer {lv.num} has no attention "
                                   "tensors, though other layers do"))
            if ffn == "none" and ffn_kinds:
                out.append(finding("structure.missing_tensor", f"layer {lv.num} has no "
                                   "feed-forward tensors, though other layers do"))
        union: dict[str, None] = {}
        for lv in lvs:
            for r in list(lv.roles) + list(lv.experts):
                if not r.startswith("dup:"):
                    union.setdefault(r, None)
        for role in union:
            have = [lv for lv in lvs if lv.has(role)]
            if len(have) == len(lvs):
                continue
            if 2 * len(have) >= len(lvs):
                for lv in lvs:
                    if not lv.has(role):
                        out.append(finding("structure.missing_tensor",
                                           f"layer {lv.num} lacks {role}, which {len(have)} other "
                                           f"{desc} layer(s) hold (e.g. {_example(have[0], role)})"))
            else:
                for lv in have:
                    name = _example(lv, role)
                    out.append(finding("structure.unexpected_tensor",
                                       f"{name} ({role}) is in only {len(have)} of {len(lvs)} "
                                       f"{desc} layers", **at(name)))
        for req in required.get(attn, []) + required.get(ffn, []):
            alts = req.split("|")
            if not any(lv.has(a) for lv in lvs for a in alts):
                out.append(finding("structure.missing_tensor",
                                   f"no {desc} layer holds {' or '.join(alts)} (layers {span_text(lv.num for lv in lvs)})"))
        for role in union:
            out += _shapes_agree(T, lvs, role, desc)

    out += _check_experts(T, layout, inf)
    return out


def _example(lv: LayerView, role: str) -> str:
    if role in lv.roles:
        return lv.roles[role][0]
    return next(iter(lv.experts[role].values()))


def _shapes_agree(T, lvs: list[LayerView], role: str, desc: str) -> list[Finding]:
    names: list[str] = []
    for lv in lvs:
        names += lv.roles.get(role, [])[:1]
        names += lv.experts.get(role, {}).values()
    if len(names) < 2:
        return []
    out = []
    for attr, code in (("shape", "structure.shape_mismatch"), ("dtype", "structure.dtype_mismatch")):
        counts = Counter(getattr(T[n], attr) for n in names)
        if len(counts) == 1:
            continue
        common, n_common = counts.most_common(1)[0]
        show = list if attr == "shape" else str
        for n in names:
            got = getattr(T[n], attr)
            if got != common:
                out.append(finding(code, f"{n} is {show(got)}, but {role} is {show(common)} in "
                                   f"{n_common} other {desc} tensor(s)", tensor=n, file=T[n].file))
    return out


def _check_experts(T, layout: Layout, inf: Inference) -> list[Finding]:
    out: list[Finding] = []
    ne = inf.facts["num_experts"].value
    for lv in (layout.layers[n] for n in sorted(layout.layers)):
        router = _first(lv, "ffn_gate_inp.weight")
        rows = T[router].shape[0] if router and T[router].shape else None
        count = rows or ne
        for role, by in lv.experts.items():
            E = count or (max(by) + 1)
            gone = sorted(set(range(E)) - set(by))
            extra = sorted(e for e in by if e >= E)
            some = next(iter(by.values()))
            if gone:
                out.append(finding("structure.missing_expert",
                                   f"layer {lv.num}: {role} lacks expert(s) {span_text(gone)} "
                                   f"(has {len(by) - len(extra)} of {E})", tensor=some, file=T[some].file))
            for e in extra:
                out.append(finding("structure.stray_expert", f"{by[e]} is expert {e}, but the "
                                   f"router has {E} experts (0..{E - 1})", tensor=by[e], file=T[by[e]].file))
        if rows:
            for role, names in lv.roles.items():
                if "_exps." in role and not role.startswith("dup:") and len(T[names[0]].shape) == 3:
                    if T[names[0]].shape[0] != rows:
                        out.append(finding("structure.expert_count",
                                           f"{names[0]} stacks {T[names[0]].shape[0]} experts, but "
                                           f"the router {router} has {rows} rows",
                                           tensor=names[0], file=T[names[0]].file))
    return out


# ---- shard index vs shards ------------------------------------------------------------------------

def missing_shards(shard_index: Any, index_file: str, files: dict[str, int | None]) -> list[Finding]:
    """Shards the index names that the source lacks (checked before reading any header)."""
    from .api import checked_shard_name
    wm = shard_index.get("weight_map") if isinstance(shard_index, dict) else None
    if not isinstance(wm, dict):
        return []                      # load_index reports the malformed index
    per: Counter = Counter(checked_shard_name(s, index_file) for s in wm.values())
    return [finding("index.missing_shard", f"{index_file} maps {n} tensor(s) to {s}, which does "
                    "not exist", file=index_file) for s, n in sorted(per.items()) if s not in files]


def check_shard_index(index: TensorIndex, index_file: str,
                      files: dict[str, int | None] | None) -> list[Finding]:
    out: list[Finding] = []
    si = index.shard_index or {}
    wm: dict = si.get("weight_map") or {}
    where = {"file": index_file}
    for name, shard in wm.items():
        t = index.tensors.get(name)
        if t is None:
            out.append(finding("index.missing_tensor", f"weight_map puts {name} in {shard}, but "
                               f"{shard} holds no such tensor", tensor=name, **where))
        elif t.file != shard:
            out.append(finding("index.wrong_shard", f"weight_map puts {name} in {shard}, but it "
                               f"is in {t.file}", tensor=name, **where))
    for name, t in index.tensors.items():
        if name not in wm:
            out.append(finding("index.unlisted_tensor", f"{t.file} holds {name}, which weight_map "
                               "does not list (loaders will not find it)", tensor=name, file=t.file))
    meta = si.get("metadata")
    total = meta.get("total_size") if isinstance(meta, dict) else None
    if total is not None:
        real = index.total_bytes
        if not _is_int(total) or total != real:
            out.append(finding("index.total_size", f"metadata.total_size = {total!r}, but the "
                               f"tensors hold {real:,} bytes", key="metadata.total_size", **where))
    if files:
        named = set(wm.values())
        for f in sorted(files):
            if ("/" not in f and f.endswith(".safetensors") and f not in named
                    and not f.startswith("consolidated")):
                out.append(finding("index.stray_shard", f"{f} is not named by {index_file}; "
                                   "loaders ignore it (a leftover of an older upload?)", file=f))
    return out


# ---- catalogue --------------------------------------------------------------------------------------

def check_catalogue(index: TensorIndex, inf: Inference, repo_id: str | None) -> list[Finding]:
    from .catalogue import REQUIRED, compare_model, families, models
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


# ---- output ----------------------------------------------------------------------------------------

def format_text(v: Validation) -> str:
    fam = v.family or {}
    name = fam.get("model") or fam.get("title") or "unknown architecture"
    lines = [f"{v.source}: {v.format}, {v.files} file(s), {v.tensors:,} tensors; {name}"]
    width = max((len(f.code) for f in v.findings), default=0)
    for f in v.findings:
        lines.append(f"{f.level:7s} {f.code:{width}s}  {f.message}")
    e, w = v.count("error"), v.count("warning")
    lines.append("no findings" if not v.findings else
                 f"{e} error{'s' * (e != 1)}, {w} warning{'s' * (w != 1)}")
    return "\n".join(lines)


def _esc(s: str, prop: bool = False) -> str:
    s = s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return s.replace(":", "%3A").replace(",", "%2C") if prop else s


def format_github(v: Validation) -> str:
    """GitHub Actions workflow commands: one ``::error``/``::warning`` annotation per finding."""
    lines = []
    for f in v.findings:
        props = []
        if f.file and v.root is not None:
            path = v.root if Path(v.root).is_file() else str(PurePosixPath(v.root) / f.file)
            props.append(f"file={_esc(path, True)}")
        props.append(f"title={_esc(f.code, True)}")
        msg = f.message if v.root is not None or not f.file else f"{v.source}/{f.file}: {f.message}"
        lines.append(f"::{f.level} {','.join(props)}::{_esc(msg)}")
    e, w = v.count("error"), v.count("warning")
    lines.append(f"ckptkit validate {v.source}: {e} error(s), {w} warning(s)")
    return "\n".join(lines)
