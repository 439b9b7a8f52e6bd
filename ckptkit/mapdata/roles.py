"""mappings/roles.toml: the canonical tensor roles, their spellings, and role groups."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .schema import Table, frozen, str_list_value, str_value

FILE = "roles.toml"


@dataclass(frozen=True)
class RoleGroup:
    """Roles that play one part (routed experts, the router, ...). A member is a role or a
    role stem: "ffn_gate_exps" stands for "ffn_gate_exps.weight", ".bias", ".blocks", ..."""
    name: str
    members: tuple[str, ...]

    @property
    def prefixes(self) -> tuple[str, ...]:
        """For ``role.startswith(group.prefixes)``."""
        return tuple(m + "." for m in self.members)

    def matches(self, role: str) -> bool:
        return role in self.members or role.startswith(self.prefixes)

    def weights(self) -> tuple[str, ...]:
        """The members' ".weight" roles, in the listed order."""
        return tuple(m + ".weight" for m in self.members)


@dataclass(frozen=True)
class RoleTable:
    strip: tuple[str, ...]                  # container names removed from the front of a name
    layer_containers: tuple[str, ...]
    mtp_containers: tuple[str, ...]
    vision: tuple[str, ...]
    global_roles: Mapping[str, tuple[str, ...]]     # role -> the names that mean it
    mtp_global_roles: Mapping[str, tuple[str, ...]]
    layer_roles: Mapping[str, tuple[str, ...]]
    contextual: Mapping[str, tuple[str, ...]]       # ambiguous name -> (default role, alternative)
    transposed: frozenset[str]
    parts: Mapping[str, str]                        # name suffix -> part ("scale", "blocks", ...)
    gguf_only: frozenset[str]
    groups: Mapping[str, RoleGroup]
    known: frozenset[str]                           # every role a mapping file may name

    def group(self, name: str) -> RoleGroup:
        return self.groups[name]

    def is_role(self, role: str) -> bool:
        return role in self.known


def load_roles(top: Table) -> RoleTable:
    pre = top.table("prefix", required=True)
    strip, layer_c = pre.strs("strip"), pre.strs("layer_containers")
    mtp_c, vision = pre.strs("mtp_containers", ()), pre.strs("vision", ())
    pre.done()
    tables = {}
    for name in ("global", "mtp_global", "layer"):
        t = top.table(name, required=name != "mtp_global")
        tables[name] = dict(t.items(str_list_value(t)))
        _no_shared_spellings(t, tables[name])
        t.done()
    ctx_t = top.table("contextual")
    contextual = dict(ctx_t.items(str_list_value(ctx_t)))
    for k, v in contextual.items():
        if len(v) != 2:
            ctx_t.fail("must list two roles: the default and the alternative", repr(k))
    ctx_t.done()
    tr = top.table("transposed")
    transposed = frozenset(tr.strs("names", ()))
    tr.done()
    parts_t = top.table("parts")
    parts = dict(parts_t.items(str_value(parts_t)))
    parts_t.done()
    go = top.table("gguf_only")
    gguf_only = frozenset(go.strs("roles", ()))
    go.done()

    base = set(tables["global"]) | set(tables["mtp_global"]) | set(tables["layer"])
    base |= {r for alts in contextual.values() for r in alts}
    known = set(base) | gguf_only
    for role in base:       # quantization companions: "x.weight" -> "x.scale", "x.blocks", ...
        if role.endswith(".weight"):
            known |= {role[: -len("weight")] + p for p in parts.values()}
    overlap = gguf_only & base
    if overlap:
        go.fail(f"{sorted(overlap)[0]} has Hugging Face names, so it is not GGUF-only", "roles")

    gt = top.table("groups")
    groups = {}
    for name, members in gt.items(str_list_value(gt)):
        for m in members:
            if not any(r == m or r.startswith(m + ".") for r in known):
                gt.fail(f"{m!r} is not a role or role stem of this file", name)
        groups[name] = RoleGroup(name, members)
    gt.done()
    top.done()
    return RoleTable(strip, layer_c, mtp_c, vision, frozen(tables["global"]), frozen(tables["mtp_global"]),
                     frozen(tables["layer"]), frozen(contextual), transposed, frozen(parts), gguf_only,
                     frozen(groups), frozenset(known))


def _no_shared_spellings(t: Table, table: dict[str, tuple[str, ...]]) -> None:
    """One name means one role: a name listed under two roles would silently take the last."""
    seen: dict[str, str] = {}
    for role, names in table.items():
        for n in (role, *names):
            if seen.get(n, role) != role:
                t.fail(f"{n!r} is listed under both {seen[n]!r} and {role!r}", repr(role))
            seen[n] = role


def check_role(t: Table, role: str, key: str, roles: RoleTable) -> str:
    """``role`` after checking roles.toml knows it (names the file and key otherwise)."""
    if not roles.is_role(role):
        t.fail(f"unknown role {role!r} (not in mappings/roles.toml)", key)
    return role
