"""Chat messages and their checks, shared by the data, tokenization and rendering stages.

A message is ``{"role": "system" | "user" | "assistant", "content": str}``. The checks raise ``ValueError``
saying which message is wrong and how (``prompt[1]['role'] must be one of ...``); a stage that knows the
row wraps that text with :func:`row_error`, which adds the row, the field and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Message = dict[str, str]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": str}``."""

ROLES = ("system", "user", "assistant")
MESSAGES_FIX = 'use a list of {"role": ..., "content": str} messages'


def check_messages(messages: Any, what: str = "prompt") -> list[Message]:
    """``messages`` as a list of plain ``{"role", "content"}`` dicts (other keys dropped); ``ValueError``
    unless it is a non-empty list of well-formed messages."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError(
            f"{what} must be a list of {{'role', 'content'}} messages, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError(f"{what} is an empty message list; it needs at least one user message")
    return [check_message(message, f"{what}[{i}]") for i, message in enumerate(messages)]


def check_message(message: Any, what: str) -> Message:
    """``message`` as a plain ``{"role", "content"}`` dict; ``ValueError`` unless it has a known role and
    string content."""
    if not isinstance(message, Mapping):
        raise ValueError(
            f"{what} must be a dict with 'role' and 'content', got {type(message).__name__}: {message!r:.80}"
        )
    for key in ("role", "content"):
        if key not in message or message[key] is None:
            raise ValueError(f"{what} is missing {key!r}; every message needs 'role' and 'content'")
    if message["role"] not in ROLES:
        raise ValueError(f"{what}['role'] must be one of {list(ROLES)}, got {message['role']!r}")
    if not isinstance(message["content"], str):
        raise ValueError(
            f"{what}['content'] must be a string, got {type(message['content']).__name__}; "
            "flatten multi-part content to text first"
        )
    return {"role": message["role"], "content": message["content"]}


def check_reply(reply: Any, what: str = "reply") -> Message:
    """``reply`` as a plain assistant message; ``ValueError`` unless it is one."""
    message = check_message(reply, what)
    if message["role"] != "assistant":
        raise ValueError(f"{what}['role'] must be 'assistant', got {message['role']!r}")
    return message


def row_error(field: str, problem: str, fix: str, row: int | None = None) -> ValueError:
    """``[row N, ]field 'x': <problem>. Fix: <fix>`` as a ``ValueError`` (builders leave ``row`` out: the
    builder prefixes the dataset, split and row index itself)."""
    where = f"row {row}, " if row is not None else ""
    return ValueError(f"{where}field {field!r}: {problem}. Fix: {fix}")
