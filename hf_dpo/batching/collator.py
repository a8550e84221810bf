"""DPODataCollator: turns tokenized preference pairs into one batch of 2B sequences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from hf_dpo.batching.layouts import BatchLayout, get_layout
from hf_dpo.tokens.tokenization import REF_COLUMNS

# Per-pair float columns passed through as (B,) tensors: precomputed reference log-probs.
PAIR_FLOAT_COLUMNS = REF_COLUMNS


class DPODataCollator:
    """Collate pairs with ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` (lists of token ids).

    Args:
        pad_token_id: id written into padding positions (never scored, never attended to). Use
            ``pad_token_id_for(tokenizer)`` for tokenizers without a pad token.
        layout: a ``BatchLayout`` instance (which carries its own padding settings) or a registered layout
            name (``"padded"``, ``"packed"``, ``"prefix_shared"``).
        pad_to_multiple_of: with a layout name: round row lengths up to a multiple of this.

    The batch holds the layout's keys (see ``hf_dpo.batching.layouts``) plus any
    ``PAIR_FLOAT_COLUMNS`` present.
    """

    def __init__(
        self, pad_token_id: int, layout: str | BatchLayout = "padded", pad_to_multiple_of: int | None = None
    ) -> None:
        self.layout = (
            get_layout(layout, pad_token_id, pad_to_multiple_of) if isinstance(layout, str) else layout
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if not features:
            raise ValueError("DPODataCollator got an empty list of features")
        missing = {"prompt_ids", "chosen_ids", "rejected_ids"} - set(features[0])
        if missing:
            raise ValueError(
                f"DPODataCollator needs tokenized pairs; missing {sorted(missing)}. Pass raw prompt/chosen/"
                "rejected rows to DPOTrainer (it tokenizes them) or tokenize with "
                "hf_dpo.tokens.tokenization first."
            )
        batch = self.layout(features)
        for column in PAIR_FLOAT_COLUMNS:
            if column in features[0]:
                batch[column] = torch.tensor([f[column] for f in features], dtype=torch.float32)
        return batch


def pad_token_id_for(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padding is masked out, so any id is safe)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0
