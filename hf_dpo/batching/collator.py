"""Collators: tokenized preference pairs -> one batch of 2B sequences (hf_dpo's ``PairBatch`` or TRL's)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from hf_dpo.batching.layouts import BatchLayout, PairBatch, get_layout
from hf_dpo.tokens.tokenization import REF_COLUMNS


def _add_ref_logps(batch: dict[str, Any], features: Sequence[Mapping[str, Any]]) -> None:
    """Pass precomputed reference log-probs (``REF_COLUMNS``) through as (B,) float tensors."""
    for column in REF_COLUMNS:
        if column in features[0]:
            batch[column] = torch.tensor([f[column] for f in features], dtype=torch.float32)


class DPODataCollator:
    """Collate pairs with ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` into a ``PairBatch``.

    ``layout``: a ``BatchLayout`` (with its own padding settings) or a layout name, built with
    ``pad_token_id`` (see ``pad_token_id_for``) and ``pad_to_multiple_of``.
    """

    def __init__(
        self, pad_token_id: int, layout: str | BatchLayout = "padded", pad_to_multiple_of: int | None = None
    ) -> None:
        self.layout = (
            get_layout(layout, pad_token_id, pad_to_multiple_of) if isinstance(layout, str) else layout
        )

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> PairBatch:
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
        _add_ref_logps(batch, features)
        return batch


@dataclass
class DataCollatorForPreference:
    """TRL's preference collator contract: each pair ``prompt_ids + chosen_ids`` and ``prompt_ids +
    rejected_ids`` as rows ``[chosen_1..B ; rejected_1..B]``, each cut to ``max_length`` (``keep_start`` keeps
    the first tokens, ``keep_end`` the last), right-padded to the longest row (rounded up to
    ``pad_to_multiple_of``). Returns ``input_ids``, ``attention_mask`` and ``completion_mask`` (2B, T) and,
    when the pairs carry them, ``ref_chosen_logps``/``ref_rejected_logps`` (B,)."""

    pad_token_id: int
    max_length: int | None = None
    truncation_mode: str = "keep_start"
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self) -> None:
        if self.truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(
                f"truncation_mode={self.truncation_mode!r} is not supported; use 'keep_start' or 'keep_end'."
            )
        if self.return_tensors != "pt":
            raise ValueError(f"return_tensors={self.return_tensors!r}: only 'pt' (PyTorch) is supported.")

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        n = self.max_length
        cut = slice(None)
        if n is not None:
            cut = slice(None, n) if self.truncation_mode == "keep_start" else slice(-n, None)
        rows, masks = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for f in features:
                rows.append((list(f["prompt_ids"]) + list(f[key]))[cut])
                masks.append(([0] * len(f["prompt_ids"]) + [1] * len(f[key]))[cut])
        width = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {
            "input_ids": torch.tensor([r + [self.pad_token_id] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "completion_mask": torch.tensor([m + [0] * (width - len(m)) for m in masks]),
        }
        _add_ref_logps(batch, features)
        return batch


def as_pair_batch(batch: Mapping[str, Any]) -> PairBatch:
    """A collated batch as a ``PairBatch``: one already (it has ``target_index``) is returned as it is; TRL's
    form (``input_ids`` and ``completion_mask`` (2B, T), rows ``[chosen ; rejected]``, optional
    ``attention_mask``) is converted: each completion token at position t > 0 is predicted from t − 1."""
    if "target_index" in batch:
        return batch  # type: ignore[return-value]
    missing = {"input_ids", "completion_mask"} - set(batch)
    if missing:
        raise ValueError(
            f"the data collator's batch has neither hf_dpo's PairBatch keys (target_index, ...) nor TRL's "
            f"(input_ids, completion_mask): missing {sorted(missing)} of its keys {sorted(batch)}. Use "
            "hf_dpo.DPODataCollator or hf_dpo.DataCollatorForPreference."
        )
    input_ids, completion = batch["input_ids"], batch["completion_mask"].bool().clone()
    if input_ids.dim() != 2 or input_ids.shape[0] % 2 or completion.shape != input_ids.shape:
        raise ValueError(
            f"a TRL-style batch needs input_ids and completion_mask of one shape (2B, T), rows [chosen ; "
            f"rejected]; got {tuple(input_ids.shape)} and {tuple(completion.shape)}."
        )
    attention_mask = batch.get("attention_mask")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    completion[:, 0] = False  # the first position has no earlier position to predict it
    row, pos = completion.nonzero(as_tuple=True)
    out: PairBatch = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "target_index": row * input_ids.shape[1] + pos - 1,
        "target_ids": input_ids[row, pos],
        "target_seq": row,
        "num_pairs": input_ids.shape[0] // 2,
        "num_tokens": int(attention_mask.sum()),
    }
    for column in REF_COLUMNS:
        if column in batch:
            out[column] = batch[column]  # type: ignore[literal-required]
    return out


class PairBatchCollator:
    """Wraps a user's collator so that the trainer always receives a ``PairBatch`` (see ``as_pair_batch``)."""

    def __init__(self, collator: Callable[[Sequence[Mapping[str, Any]]], Mapping[str, Any]]) -> None:
        self.collator = collator

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> PairBatch:
        return as_pair_batch(self.collator(features))


def pad_token_id_for(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id, else 0 (padding is masked out, so any id is safe)."""
    return next((int(i) for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
