"""``helpsteer3``: nvidia/HelpSteer3, ``preference`` subset.

Rows: ``context`` (messages ending with a user turn), ``response1``, ``response2`` and
``overall_preference`` in -3..3 (negative: response1 is better, positive: response2, 0: tie).
"""

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
    """nvidia/HelpSteer3 ``preference``; the ``validation`` split is the test split.

    ``min_preference_strength`` k keeps only rows with ``|overall_preference| >= k`` (default 1).
    Skip reasons: ``tie`` (``overall_preference == 0``: no response is preferred, so there is no pair),
    ``weak_preference`` (``0 < |overall_preference| < k``), ``empty_reply``, ``chosen_equals_rejected``.
    """

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
