"""Registries are plain dicts built explicitly; this only refuses two entries with one name."""

from __future__ import annotations

from typing import Iterable, Protocol, TypeVar


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


def by_name(items: Iterable[T], kind: str) -> dict[str, T]:
    out: dict[str, T] = {}
    for item in items:
        if item.name in out:
            raise ValueError(f"duplicate {kind} name {item.name!r}")
        out[item.name] = item
    return out
