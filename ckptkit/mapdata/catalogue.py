"""mappings/families/*.toml (known architectures) and mappings/models.toml (published facts
of known models).

Records are frozen dataclasses that also read as mappings of the keys the file gives
(``fam["title"]``, ``"mtp_layers" in model``), so callers can look facts up by name."""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, fields
from typing import Any, ClassVar

from .schema import Table, frozen


class _Record(Mapping[str, Any]):
    """The fields that are set (not None), read as a mapping."""
    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]  # each record type is a dataclass

    def __getitem__(self, key: str) -> Any:
        v = getattr(self, key, None) if key in self._names() else None
        if v is None:
            raise KeyError(key)
        return v

    def __iter__(self) -> Iterator[str]:
        return (k for k in self._names() if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True, eq=False)
class CatalogueFamily(_Record):
    name: str
    title: str
    hf_architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    gguf_arch: str
    name_patterns: tuple[str, ...]
    features: tuple[str, ...]
    source: str
    signature: Mapping[str, Any]     # fact -> "present" | "absent" | allowed values | value

    def patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.name_patterns)


@dataclass(frozen=True, eq=False)
class KnownModel(_Record):
    name: str
    family: str
    source: str
    weights: bool = True
    repo: str | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    vocab_size: int | None = None
    intermediate_size: int | None = None
    expert_intermediate_size: int | None = None
    num_experts: int | None = None
    num_experts_per_tok: int | None = None
    num_shared_experts: int | None = None
    dense_prefix_layers: int | None = None
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    qk_nope_head_dim: int | None = None
    v_head_dim: int | None = None
    mtp_layers: int | None = None
    sliding_window: int | None = None
    context_length: int | None = None
    attention: str | None = None
    tied_embeddings: bool | None = None
    params_total: float | None = None
    params_active: float | None = None
    # whether the card's params_active counts the input embedding (Qwen, Mistral, DeepSeek do;
    # gpt-oss's does not); unset means it does
    params_active_counts_embedding: bool | None = None


_SIGNATURE_VALUES = (str, int, float, bool, list)


def load_family(t: Table, stem: str) -> CatalogueFamily:
    from ..infer import FACT_KEYS  # the facts a signature may test
    name = t.text("name")
    if name != stem:
        t.fail(f"must be the file name ({stem!r})", "name")
    patterns = t.strs("name_patterns", ())
    for p in patterns:
        try:
            re.compile(p)
        except re.error as e:
            t.fail(f"bad regular expression {p!r}: {e}", "name_patterns")
    st = t.table("signature", required=True)
    sig = {}
    for k, v in st.items(lambda k, v: v):
        if k not in FACT_KEYS:
            st.fail("not a fact of `ckptkit inspect`", k)
        if not isinstance(v, _SIGNATURE_VALUES):
            st.fail("must be \"present\", \"absent\", a value or a list of values", k)
        sig[k] = v
    st.done()
    fam = CatalogueFamily(name, t.text("title"), t.strs("hf_architectures"), t.strs("model_types", ()),
                          t.text("gguf_arch"), patterns, t.strs("features"), t.text("source"), frozen(sig))
    t.done()
    return fam


_MODEL_FIELDS = {f.name: f.type for f in fields(KnownModel)}     # "int | None", ...
_KINDS: dict[str, tuple[type, ...]] = {"str": (str,), "bool": (bool,), "int": (int,), "float": (float,)}


def load_models(top: Table, families: Mapping[str, CatalogueFamily]) -> tuple[KnownModel, ...]:
    rows = []
    names: set[str] = set()
    for t in top.tables("model"):
        kw: dict[str, Any] = {}
        for k in t.data:
            typ = _MODEL_FIELDS.get(k)
            if typ is None:
                continue            # refused by done() below
            kw[k] = t.get(k, _KINDS[str(typ).split(" |")[0]])
            if isinstance(kw[k], (int, float)) and not isinstance(kw[k], bool) and kw[k] < 0:
                t.fail("must not be negative", k)
        for need in ("name", "family", "source"):
            t.text(need)
        t.done()
        m = KnownModel(**kw)
        if m.name in names:
            t.fail(f"{m.name!r} is listed twice", "name")
        names.add(m.name)
        if m.weights and m.family not in families:
            t.fail(f"unknown family {m.family!r} (no mappings/families/{m.family}.toml)", "family")
        rows.append(m)
    top.done()
    return tuple(rows)
