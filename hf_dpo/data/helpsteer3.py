"""``helpsteer3``: nvidia/HelpSteer3 ``preference`` rows: ``context`` (messages ending with a user turn),
``response1``, ``response2`` and ``overall_preference`` in -3..3 (negative: response1 is better)."""

from __future__ import annotations

import dataclasses
from typing import Any

from hf_dpo.data.builder import DatasetBuilder
from hf_dpo.data.registry import register_builder
from hf_dpo.data.rows import PreferencePair, Skip, as_messages, require, row_error, split_conversations

_FIX = "HelpSteer3 preference rows need context, response1, response2 and overall_preference"


@register_builder("helpsteer3")
@dataclasses.dataclass(kw_only=True)
class HelpSteer3Builder(DatasetBuilder):
    """nvidia/HelpSteer3 ``preference`` (test split: ``validation``), rows with ``|overall_preference| >=
    min_preference_strength``. Skips: ``tie`` (0: no pair), ``weak_preference`` (below the strength),
    ``empty_reply``, ``chosen_equals_rejected``."""

    path: str | None = "nvidia/HelpSteer3"
    config_name: str | None = "preference"
    test_split: str | None = "validation"
    min_preference_strength: int = 1

    def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
        prompt = as_messages(require(row, "context", list, _FIX), "context")
        responses = [require(row, field, str, _FIX) for field in ("response1", "response2")]
        preference = require(row, "overall_preference", int, _FIX)
        if not -3 <= preference <= 3:
            raise row_error("overall_preference", f"{preference} is outside -3..3", _FIX)
        if preference == 0:
            return Skip("tie")
        if abs(preference) < self.min_preference_strength:
            return Skip("weak_preference")
        better, worse = responses if preference < 0 else responses[::-1]
        return split_conversations(
            [*prompt, {"role": "assistant", "content": better}],
            [*prompt, {"role": "assistant", "content": worse}],
        )
