"""Row-level vocabulary for builders: the pair/skip results and checks that raise clear row errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from hf_dpo.chat import MESSAGES_FIX, Message, check_messages, row_error

__all__ = ["PreferencePair", "Skip", "as_messages", "require", "row_error", "split_conversations"]


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One preference pair: the conversation so far and two candidate assistant replies."""

    prompt: list[Message]
    chosen: Message
    rejected: Message


class Skip(NamedTuple):
    """A row that yields no pair, and why (counted and logged per reason)."""

    reason: str


def require(row: Mapping[str, Any], field: str, kind: type | tuple[type, ...], fix: str) -> Any:
    """``row[field]`` if present, not None and of type ``kind``; else a :func:`row_error`."""
    value = row.get(field)
    if value is None:
        raise row_error(field, "missing or null", fix)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise row_error(field, f"expected {names}, got {type(value).__name__}", fix)
    return value


def as_messages(value: Any, field: str) -> list[Message]:
    """Validate a message list and keep only ``role``/``content`` of each message."""
    try:
        return check_messages(value, field)
    except ValueError as err:
        raise row_error(field, str(err), MESSAGES_FIX) from err


def split_conversations(chosen: list[Message], rejected: list[Message]) -> PreferencePair | Skip:
    """Two whole conversations -> pair: the shared leading messages are the prompt, the final assistant
    messages the replies. Skip reasons: ``no_final_reply``, ``empty_prompt`` (nothing before the reply),
    ``prompt_mismatch`` (differ before the reply), ``empty_reply``, ``chosen_equals_rejected``."""
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return Skip("no_final_reply")
    if len(chosen) < 2:
        return Skip("empty_prompt")
    if chosen[:-1] != rejected[:-1]:
        return Skip("prompt_mismatch")
    if not chosen[-1]["content"].strip() or not rejected[-1]["content"].strip():
        return Skip("empty_reply")
    if chosen[-1]["content"] == rejected[-1]["content"]:
        return Skip("chosen_equals_rejected")
    return PreferencePair(prompt=chosen[:-1], chosen=chosen[-1], rejected=rejected[-1])
