"""Named registries (batch layouts, renderers, dataset builders) and the "did you mean" unknown-name error."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


def did_you_mean(name: str, valid: Iterable[str], n: int = 1, prefix: str = "") -> str:
    """``"did you mean 'x'?"`` naming up to ``n`` valid names near ``name`` (with ``prefix``) or ``""``."""
    close = difflib.get_close_matches(name, list(valid), n=n)
    return f"did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ValueError:
    """``Unknown <kind> 'name'. Did you mean 'x'? Valid names: a, b, c`` as a ``ValueError``."""
    valid = sorted(valid)
    hint = did_you_mean(name, valid)
    hint = f" {hint[0].upper()}{hint[1:]}" if hint else ""
    return ValueError(f"Unknown {kind} {name!r}.{hint} Valid names: {', '.join(valid)}")


class Registry(Generic[T]):
    """Name -> entry; ``get`` raises :func:`unknown_name_error` for an unregistered name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what a name names, for errors: "renderer", "dataset", ...
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add (or replace) ``name``; returns ``entry`` so that decorators can pass it through."""
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, self._entries)
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
