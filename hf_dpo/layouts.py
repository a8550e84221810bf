"""Batch layouts: how a list of tokenized pairs becomes model inputs plus a map of the scored tokens.

Every layout returns the same contract, so the trainer never needs to know which one is in use:

- model inputs: ``input_ids`` (R, T) and ``attention_mask`` and/or ``position_ids`` (R, T);
- ``target_index`` (N,): flat index into the (R·T) positions whose final hidden state predicts a completion
  token; ``target_ids`` (N,): that token; ``target_seq`` (N,): which of the 2B sequences it belongs to,
  ordered ``[chosen_1..B ; rejected_1..B]``;
- ``num_pairs`` (int B) and ``num_tokens`` (int, real tokens fed to the model).

Per-sequence log-probs are then ``sum_by_sequence(logp(target_ids | hidden[target_index]), target_seq)``.
Because targets are gathered by index, one position may score several targets (the prefix-shared layout
scores the first chosen and the first rejected token from the same last prompt token), and the LM head only
runs on completion positions.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch

Pair = Mapping[str, Sequence[int]]
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids")

_LAYOUTS: dict[str, type[BatchLayout]] = {}


class BatchLayout(abc.ABC):
    """Strategy that lays out B pairs as model inputs; subclasses register themselves by ``name``."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            _LAYOUTS[cls.name] = cls

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    @abc.abstractmethod
    def __call__(self, pairs: Sequence[Pair]) -> dict[str, torch.Tensor | int]:
        """Collate ``pairs`` (each with ``prompt_ids``, ``chosen_ids``, ``rejected_ids``)."""

    def _round_up(self, n: int) -> int:
        m = self.pad_to_multiple_of
        return n if not m else -(-n // m) * m


class PaddedLayout(BatchLayout):
    """2B rows ``[prompt_i + chosen_i]_i ; [prompt_i + rejected_i]_i``, right-padded to the longest row."""

    name = "padded"

    def __call__(self, pairs: Sequence[Pair]) -> dict[str, torch.Tensor | int]:
        num_pairs = len(pairs)
        rows = [(p["prompt_ids"], p["chosen_ids"]) for p in pairs] + [
            (p["prompt_ids"], p["rejected_ids"]) for p in pairs
        ]
        width = self._round_up(max(len(pr) + len(c) for pr, c in rows))
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        index, targets, seq = [], [], []
        for r, (prompt, completion) in enumerate(rows):
            full = list(prompt) + list(completion)
            input_ids[r, : len(full)] = torch.tensor(full, dtype=torch.long)
            attention_mask[r, : len(full)] = 1
            start = r * width + len(prompt) - 1  # position predicting the first completion token
            index.extend(range(start, start + len(completion)))
            targets.extend(completion)
            seq.extend([r] * len(completion))
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target_index": torch.tensor(index, dtype=torch.long),
            "target_ids": torch.tensor(targets, dtype=torch.long),
            "target_seq": torch.tensor(seq, dtype=torch.long),
            "num_pairs": num_pairs,
            "num_tokens": int(attention_mask.sum()),
        }


def get_layout(name: str, pad_token_id: int, pad_to_multiple_of: int | None = None) -> BatchLayout:
    """Instantiate a registered layout by name."""
    if name not in _LAYOUTS:
        raise ValueError(f"unknown batch_layout {name!r}; available: {', '.join(sorted(_LAYOUTS))}")
    return _LAYOUTS[name](pad_token_id, pad_to_multiple_of)


def available_layouts() -> list[str]:
    return sorted(_LAYOUTS)
