"""A small name -> class registry, one instance per kind of component."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "close_matches"]


def close_matches(name: str, known: list[str], n: int = 5) -> list[str]:
    """Known names that look like ``name`` (for "did you mean" messages)."""
    lowered = {k.lower(): k for k in known}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    if len(hits) < n:  # substring hits catch `vit_tiny` -> `vit_tiny_patch16_224`
        hits += [k for k in lowered if name.lower() in k and k not in hits][: n - len(hits)]
    return [lowered[h] for h in hits]


class Registry(Generic[T]):
    """Maps short snake_case keys to component classes.

    Example:
        >>> FOO: Registry[type] = Registry("foo")
        >>> @FOO.register("bar")
        ... class Bar: ...
        >>> FOO.get("bar") is Bar
        True
        >>> FOO.names()
        ['bar']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator that registers the class under ``name``; duplicates raise."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises ``KeyError`` listing the known ones."""
        if name not in self._entries:
            hint = close_matches(name, self.names())
            did_you_mean = f" Did you mean {hint}?" if hint else ""
            raise KeyError(f"unknown {self.kind} {name!r}; known: {self.names()}.{did_you_mean}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered keys, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
