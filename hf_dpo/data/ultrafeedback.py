"""``ultrafeedback``: HuggingFaceH4/ultrafeedback_binarized, whose ``chosen`` and ``rejected`` are whole
conversations ending with the assistant reply (the prompt: every message before it, the same in both)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hf_dpo.data.builder import DatasetBuilder
from hf_dpo.data.registry import register_builder
from hf_dpo.data.rows import PreferencePair, Skip, as_messages, require, split_conversations

_FIX = "ultrafeedback rows need 'chosen' and 'rejected' message lists ending with the assistant reply"


@register_builder("ultrafeedback")
@dataclasses.dataclass(kw_only=True)
class UltraFeedbackBuilder(DatasetBuilder):
    """HuggingFaceH4/ultrafeedback_binarized ``*_prefs`` splits; skips: see :func:`split_conversations`."""

    path: str | None = "HuggingFaceH4/ultrafeedback_binarized"
    train_split: str = "train_prefs"
    test_split: str | None = "test_prefs"

    def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
        chosen = as_messages(require(row, "chosen", list, _FIX), "chosen")
        rejected = as_messages(require(row, "rejected", list, _FIX), "rejected")
        return split_conversations(chosen, rejected)
