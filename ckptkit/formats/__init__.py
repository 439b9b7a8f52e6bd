"""Strict readers and streaming writers of checkpoint formats."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar


class HasBytes(Protocol):
    @property
    def nbytes(self) -> int: ...


T = TypeVar("T", bound=HasBytes)


def pack_in_order(items: Sequence[T], limit: int) -> list[list[T]]:
    """Items (with ``nbytes``) in order, grouped so that no group's bytes exceed ``limit``;
    an item larger than the limit gets a group of its own. Output files and shards use it."""
    groups: list[list[T]] = [[]]
    used = 0
    for it in items:
        n = it.nbytes
        if groups[-1] and used + n > limit:
            groups.append([])
            used = 0
        groups[-1].append(it)
        used += n
    return groups
