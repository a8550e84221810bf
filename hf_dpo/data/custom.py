"""``custom``: any local JSON/JSONL/CSV/Parquet file, folder or Hub id with ``prompt`` (optional for whole
conversations), ``chosen`` and ``rejected`` columns (see docs/datasets.md; rename with ``column_map``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import datasets

from hf_dpo.chat import Message
from hf_dpo.data.builder import DatasetBuilder
from hf_dpo.data.registry import register_builder
from hf_dpo.data.rows import PreferencePair, Skip, as_messages, require, row_error, split_conversations

_FIX = (
    'give a string, [{"role": "assistant", "content": ...}] or the whole conversation ending with the reply'
)


@register_builder("custom")
@dataclasses.dataclass(kw_only=True)
class CustomBuilder(DatasetBuilder):
    """Your own preference data (``path=`` or ``data_files=``); skip reasons: ``empty_prompt`` (blank prompt
    string) and those of :func:`split_conversations`."""

    column_map: dict[str, str] | None = None

    def load_raw(self) -> datasets.DatasetDict:
        raw = super().load_raw()
        columns = raw["train"].column_names
        mapping = self.column_map or {}
        for source, target in mapping.items():
            if source not in columns:
                raise ValueError(f"column_map: no column {source!r} to rename (columns: {columns})")
            if target in columns and target not in mapping:
                raise ValueError(f"column_map: {source!r} -> {target!r}, but {target!r} already exists")
        if mapping:
            raw = raw.rename_columns(mapping)
        missing = [c for c in ("chosen", "rejected") if c not in raw["train"].column_names]
        if missing:
            raise ValueError(
                f"dataset 'custom': no {missing} column(s) in {raw['train'].column_names}; rename yours with "
                'column_map={"<your column>": "chosen", ...}'
            )
        return raw

    def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
        chosen = require(row, "chosen", (str, list), _FIX)
        rejected = require(row, "rejected", (str, list), _FIX)
        prompt = row.get("prompt")
        if prompt is None:
            if isinstance(chosen, str) or isinstance(rejected, str):
                raise row_error(
                    "prompt",
                    "missing, and chosen/rejected are strings, so the prompt cannot be inferred",
                    "add a prompt column (or column_map one), or give chosen/rejected as whole conversations",
                )
            return split_conversations(as_messages(chosen, "chosen"), as_messages(rejected, "rejected"))
        if isinstance(prompt, str):
            if not prompt.strip():
                return Skip("empty_prompt")
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = as_messages(require(row, "prompt", list, "give a string or a message list"), "prompt")
        return split_conversations(
            [*messages, _reply(chosen, messages, "chosen")],
            [*messages, _reply(rejected, messages, "rejected")],
        )


def _reply(value: str | list, prompt: list[Message], field: str) -> Message:
    """The assistant reply from a string, a one-message list, or a conversation that repeats the prompt."""
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    messages = as_messages(value, field)
    if len(messages) > 1 and messages[:-1] == prompt:
        messages = messages[-1:]
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise row_error(field, f"expected one assistant reply after the prompt, got roles {roles}", _FIX)
    return messages[0]
