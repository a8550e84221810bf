"""The evaluation data: the test split of a preference dataset and its rows' reference answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datasets import Dataset

from hf_dpo.tokens.tokenization import split_row


def dataset_options(run_config: Mapping[str, Any], options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Builder options: ``options`` if given, else the run's ``dataset_options`` plus its ``data_files`` /
    ``test_size`` (the keys ``hf_dpo.train`` passes to the builder)."""
    if options is not None:
        return dict(options)
    extra = {k: run_config[k] for k in ("data_files", "test_size") if run_config.get(k) is not None}
    return {**(run_config.get("dataset_options") or {}), **extra}


def load_test_split(name: str, options: Mapping[str, Any], limit: int | None = None) -> Dataset:
    """``build_preference_dataset(name, **options).test``, cut to the first ``limit`` rows."""
    from hf_dpo.data import build_preference_dataset

    test = build_preference_dataset(name, **options).test
    if test is None or len(test) == 0:
        raise ValueError(
            f"dataset {name!r} has an empty test split with options {dict(options)}; set "
            "dataset_options.test_size=<fraction or count> (or pass a test file in data_files)"
        )
    return test.select(range(min(limit, len(test)))) if limit else test


def reference_answer(row: Mapping[str, Any], index: int) -> float | None:
    """For arithmetic-style rows: the ``answer`` column, else the last number of the chosen completion."""
    from hf_dpo.eval.stats import parse_number

    if row.get("answer") is not None:
        return float(row["answer"])
    _, chosen, _ = split_row(row, index)
    return parse_number(chosen if isinstance(chosen, str) else chosen["content"])
