"""``arithmetic``: a synthetic addition set generated in code (no download), for quick runs: "What is 37 +
48?" -> chosen "37 + 48 = 85.", rejected the same sentence with a sum off by 1, 2 or 10."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import datasets

from hf_dpo.data.builder import DatasetBuilder
from hf_dpo.data.registry import register_builder
from hf_dpo.data.rows import PreferencePair, Skip

_SLIPS = (-10, -2, -1, 1, 2, 10)


@register_builder("arithmetic")
@dataclasses.dataclass(kw_only=True)
class ArithmeticBuilder(DatasetBuilder):
    """``num_train`` / ``num_test`` distinct ``a + b`` questions with ``0 <= a, b <= max_operand``, drawn
    with ``seed`` (the same options always give the same pairs; train and test share no question)."""

    num_train: int = 1000
    num_test: int = 100
    max_operand: int = 99

    def __post_init__(self) -> None:
        if self.path is not None or self.data_files is not None:
            raise ValueError("dataset 'arithmetic' is generated in code; drop path/data_files")
        space = (self.max_operand + 1) ** 2
        if min(self.num_train, self.num_test, self.max_operand) < 0 or self.num_train + self.num_test > space:
            raise ValueError(
                f"dataset 'arithmetic': num_train + num_test = {self.num_train + self.num_test} distinct "
                f"questions needed but max_operand={self.max_operand} allows {space}; raise max_operand"
            )

    def load_raw(self) -> datasets.DatasetDict:
        rng = random.Random(self.seed)
        width = self.max_operand + 1
        rows = []
        for k in rng.sample(range(width**2), self.num_train + self.num_test):
            a, b = divmod(k, width)
            wrong = a + b + rng.choice(_SLIPS)
            rows.append({"a": a, "b": b, "wrong": wrong if wrong >= 0 else a + b + 1})
        splits = {"train": rows[: self.num_train], "test": rows[self.num_train :]}
        return datasets.DatasetDict({split: datasets.Dataset.from_list(r) for split, r in splits.items()})

    def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
        a, b = row["a"], row["b"]
        return PreferencePair(
            prompt=[{"role": "user", "content": f"What is {a} + {b}?"}],
            chosen={"role": "assistant", "content": f"{a} + {b} = {a + b}."},
            rejected={"role": "assistant", "content": f"{a} + {b} = {row['wrong']}."},
        )
