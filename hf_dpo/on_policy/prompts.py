"""The prompts on-policy rounds sample from, encoded exactly as in training: a preference dataset's prompts
(``dataset=<builder>``) or prompt-only files (``dataset=prompts``: a ``prompt`` column, text or messages)."""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hf_dpo.tokens.tokenization import encode_prompt, split_row

logger = logging.getLogger("hf_dpo")


@dataclass
class PromptSet:
    """Prompts (text or messages, as the completions will be rendered), their token ids, and the rows they
    came from (for verifiers)."""

    prompts: list[Any] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped_too_long: int = 0

    def __len__(self) -> int:
        return len(self.prompts)


def _prompt_of(row: Mapping[str, Any], index: int, split: str) -> Any:
    if "chosen" in row and "rejected" in row:
        return split_row(row, index)[0]
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(m, Mapping) and "role" in m for m in prompt):
        return [dict(m) for m in prompt]
    raise ValueError(
        f"{split} row {index}: field 'prompt' is {'missing' if prompt is None else 'empty or malformed'}; "
        "prompt-only data needs a 'prompt' column (text, or a list of {role, content} messages)"
    )


def encode_prompts(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    renderer: Any | None,
    max_prompt_length: int | None = None,
    split: str = "train",
) -> PromptSet:
    """The prompts of ``rows`` encoded with ``renderer`` (text prompts become one user message when a
    renderer is used). Prompts longer than ``max_prompt_length`` tokens are skipped, counted and logged."""
    out = PromptSet()
    for index, row in enumerate(rows):
        prompt = _prompt_of(row, index, split)
        if renderer is not None and isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        ids = encode_prompt(prompt, tokenizer, renderer)
        if max_prompt_length is not None and len(ids) > max_prompt_length:
            out.skipped_too_long += 1
            continue
        out.prompts.append(prompt)
        out.ids.append(ids)
        out.rows.append(dict(row))
    if out.skipped_too_long:
        message = "on_policy: skipped %d %s prompts longer than max_prompt_length=%s tokens"
        logger.warning(message, out.skipped_too_long, split, max_prompt_length)
    return out


def load_prompt_rows(dataset: str, options: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows): a builder's converted splits, or for ``dataset=prompts`` the files of
    ``options['data_files']`` (a file or list: train only; ``{train: ..., test: ...}``: both)."""
    if dataset != "prompts":
        from hf_dpo.data import build_preference_dataset

        data = build_preference_dataset(dataset, **options)
        return list(data.train), list(data.test) if data.test is not None else []
    from hf_dpo.data.builder import load_files

    unknown = set(options) - {"data_files"}
    if unknown:
        raise ValueError(f"dataset=prompts takes only data_files, got {', '.join(sorted(unknown))}")
    if not options.get("data_files"):
        raise ValueError(
            "dataset=prompts needs data_files=<file with a 'prompt' column> (or {train: <file>, test: "
            "<file>})"
        )
    splits = load_files(options["data_files"])
    return list(splits.get("train", [])), list(splits.get("test", []))


def round_indices(num_prompts: int, per_round: int, round_number: int, seed: int) -> list[int]:
    """The prompt indices of round ``round_number`` (1-based): consecutive slices of seeded permutations of
    ``range(num_prompts)``, so every prompt is drawn once before any is drawn again (deterministic)."""
    out: list[int] = []
    epoch, offset = divmod((round_number - 1) * per_round, num_prompts)
    while len(out) < per_round:
        order = list(range(num_prompts))
        random.Random(seed * 7919 + epoch).shuffle(order)
        out.extend(order[offset : offset + per_round - len(out)])
        epoch, offset = epoch + 1, 0
    return out
