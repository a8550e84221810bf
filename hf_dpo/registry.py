"""Named registries (batch layouts, renderers, dataset builders) and the one "did you mean" helper that
every unknown-name error uses."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, valid: Iterable[str], n: int = 1, prefix: str = "") -> str:
    """``"did you mean 'x'?"`` naming up to ``n`` valid names close to ``name`` (each shown with ``prefix``,
    e.g. a config section), or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(valid), n=n)
    return f"did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ValueError:
    """``Unknown <kind> 'name'. Did you mean 'x'? Valid names: a, b, c`` as a ``ValueError``."""
    valid = sorted(valid)
    hint = did_you_mean(name, valid)
    hint = f" {hint[0].upper()}{hint[1:]}" if hint else ""
    return ValueError(f"Unknown {kind} {name!r}.{hint} Valid names: {', '.join(valid)}")


class Registry(Generic[T]):
    """Name -> entry (usually a class). ``registry.get(name)`` raises :func:`unknown_name_error` for a name
    that was never registered; ``in``, iteration (registration order) and ``names()`` (sorted) list them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what a name names, for errors: "renderer", "dataset", ...
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add (or replace) ``name``; returns ``entry`` so that decorators can pass it through."""
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry registered as ``name``."""
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
