"""``hhh``: Anthropic/hh-rlhf rows ``{"chosen": transcript, "rejected": transcript}``, each transcript
(``"\\n\\nHuman: ...\\n\\nAssistant: ..."``) split on the turn markers only (a ``"Human:"`` inside a turn
stays text); the prompt is every turn before the final assistant reply."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from hf_dpo.chat import Message
from hf_dpo.data.builder import DatasetBuilder
from hf_dpo.data.registry import register_builder
from hf_dpo.data.rows import PreferencePair, Skip, require, row_error, split_conversations

_TURN_MARKER = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}
_FIX = "hhh expects Anthropic HH transcripts; for prompt/chosen/rejected columns use dataset=custom"


def parse_transcript(text: str, field: str) -> list[Message]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> user/assistant messages (content stripped)."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text  # tolerate a transcript without the leading blank line
    pieces = _TURN_MARKER.split(text)
    if pieces[0].strip() or len(pieces) < 3:
        raise row_error(field, f"not an HH transcript (starts {text[:40]!r})", _FIX)
    return [
        {"role": _ROLES[marker], "content": content.strip()}
        for marker, content in zip(pieces[1::2], pieces[2::2], strict=True)
    ]


@register_builder("hhh")
@dataclasses.dataclass(kw_only=True)
class HHRLHFBuilder(DatasetBuilder):
    """Anthropic/hh-rlhf: all four subsets, or one with ``data_dir`` (e.g. ``"harmless-base"``); skip reasons:
    those of :func:`split_conversations`."""

    path: str | None = "Anthropic/hh-rlhf"

    def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
        chosen = parse_transcript(require(row, "chosen", str, _FIX), "chosen")
        rejected = parse_transcript(require(row, "rejected", str, _FIX), "rejected")
        return split_conversations(chosen, rejected)
