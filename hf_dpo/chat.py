"""Chat messages (``{"role": ..., "content": str}``, as TRL) and their checks, shared by the data,
tokenization and rendering stages. An assistant turn with ``tool_calls`` needs no ``content``. The checks
raise ``ValueError`` naming the wrong message; :func:`row_error` adds the row, the field and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Message = dict[str, Any]

ROLES = ("system", "user", "assistant", "tool")
# Message keys kept besides role and content, when not None (Arrow fills absent struct keys with None).
OPTIONAL_KEYS = ("tool_calls", "tool_call_id", "name")
MESSAGES_FIX = 'use a list of {"role": ..., "content": str} messages'


def check_messages(messages: Any, what: str = "prompt") -> list[Message]:
    """``messages`` as a non-empty list of plain message dicts (unknown keys and None values dropped)."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError(
            f"{what} must be a list of {{'role', 'content'}} messages, got {type(messages).__name__}"
        )
    if not messages:
        raise ValueError(f"{what} is an empty message list; it needs at least one user message")
    return [check_message(message, f"{what}[{i}]") for i, message in enumerate(messages)]


def check_message(message: Any, what: str) -> Message:
    """``message`` as a plain dict: ``role``, ``content`` (``""`` for a tool-calling-only assistant turn) and
    the :data:`OPTIONAL_KEYS` it has."""
    if not isinstance(message, Mapping):
        raise ValueError(
            f"{what} must be a dict with 'role' and 'content', got {type(message).__name__}: {message!r:.80}"
        )
    role, content = message.get("role"), message.get("content")
    if role is None:
        raise ValueError(f"{what} is missing 'role'; every message needs 'role' and 'content'")
    if role not in ROLES:
        raise ValueError(f"{what}['role'] must be one of {list(ROLES)}, got {role!r}")
    extra = {k: message[k] for k in OPTIONAL_KEYS if message.get(k) is not None}
    if "tool_calls" in extra:
        if role != "assistant":
            raise ValueError(f"{what} has 'tool_calls' but role {role!r}; only assistant turns call tools")
        if not isinstance(extra["tool_calls"], (list, tuple)) or not extra["tool_calls"]:
            raise ValueError(f"{what}['tool_calls'] must be a non-empty list of tool calls")
        content = "" if content is None else content
    if content is None:
        raise ValueError(
            f"{what} is missing 'content'; every message needs 'role' and 'content' (an assistant turn "
            "that calls tools may have 'tool_calls' instead)"
        )
    if not isinstance(content, str):
        raise ValueError(
            f"{what}['content'] must be a string, got {type(content).__name__}; "
            "flatten multi-part content to text first"
        )
    return {"role": role, "content": content, **extra}


def check_reply(reply: Any, what: str = "reply") -> Message:
    """``reply`` as a plain assistant message; ``ValueError`` unless it is one."""
    message = check_message(reply, what)
    if message["role"] != "assistant":
        raise ValueError(f"{what}['role'] must be 'assistant', got {message['role']!r}")
    return message


def is_empty_reply(message: Message) -> bool:
    """True if an assistant message says nothing: no text and no tool call."""
    return not message["content"].strip() and not message.get("tool_calls")


def uses_tools(messages: list[Message]) -> bool:
    """True if any message is a tool call or a tool's output."""
    return any(m["role"] == "tool" or "tool_calls" in m for m in messages)


def row_error(field: str, problem: str, fix: str, row: int | None = None) -> ValueError:
    """``[row N, ]field 'x': <problem>. Fix: <fix>`` as a ``ValueError`` (builders add the row themselves)."""
    where = f"row {row}, " if row is not None else ""
    return ValueError(f"{where}field {field!r}: {problem}. Fix: {fix}")
