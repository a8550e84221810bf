"""Judges score each prompt's group of sampled completions, higher is better (see docs/on_policy.md):
``verifier`` ``fn(prompt, completion, row)``, ``reward_model`` (a sequence classifier's last logit) or
``pairwise`` ``fn(prompt, a, b) -> P(a better)``. Unusable scores raise :class:`JudgeError`."""

from __future__ import annotations

import importlib
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hf_dpo.registry import Registry

Verifier = Callable[[Any, str, Mapping[str, Any]], float]
PairwiseJudge = Callable[[Any, str, str], float]

VERIFIERS: Registry[Verifier] = Registry("verifier")
PAIRWISE_JUDGES: Registry[PairwiseJudge] = Registry("pairwise judge")


class JudgeError(RuntimeError):
    """A judge failed or returned unusable scores; the message names the judge and the prompt."""


def register_verifier(name: str) -> Callable[[Verifier], Verifier]:
    """Decorator: ``judge: name`` (``judge_type: verifier``) calls ``fn(prompt, completion, row)``."""
    return lambda fn: VERIFIERS.register(name, fn)


def register_pairwise_judge(name: str) -> Callable[[PairwiseJudge], PairwiseJudge]:
    """Decorator: ``judge: name`` (``judge_type: pairwise``) calls ``fn(prompt, a, b) -> P(a better)``."""
    return lambda fn: PAIRWISE_JUDGES.register(name, fn)


@register_verifier("arithmetic")
def arithmetic_verifier(prompt: Any, completion: str, row: Mapping[str, Any]) -> float:
    """1.0 when the last number of ``completion`` equals the row's answer (its ``answer`` column, else the
    last number of its chosen completion: the ``arithmetic`` set's sum), else 0.0."""
    from hf_dpo.eval.data import reference_answer
    from hf_dpo.eval.stats import parse_number

    answer = reference_answer(row, 0)
    if answer is None:
        raise ValueError("the row has no 'answer' column and its chosen completion holds no number")
    return float(parse_number(completion) == answer)


def _short(prompt: Any) -> str:
    text = prompt if isinstance(prompt, str) else str(prompt[-1].get("content", "")) if prompt else ""
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _checked(
    judge: str, index: int, prompt: Any, value: Any, low: float = -math.inf, high: float = math.inf
) -> float:
    """``value`` as a finite float in [low, high], else a ``JudgeError`` naming the judge and the prompt."""
    try:
        score = float(value) if not isinstance(value, (str, bytes)) else math.nan
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score) or not low <= score <= high:
        bounds = "" if math.isinf(low) else f" in [{low:g}, {high:g}]"
        raise JudgeError(
            f"judge {judge!r} returned {value!r} for prompt {index} {_short(prompt)}; it must return a "
            f"finite number{bounds}"
        )
    return score


def _call(judge: str, index: int, prompt: Any, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as e:
        raise JudgeError(
            f"judge {judge!r} raised {type(e).__name__}: {e} (prompt {index} {_short(prompt)})"
        ) from e


@dataclass
class GroupJudge:
    """Scores groups: ``score(indices, prompts, groups, rows)`` -> one list of floats per group (``indices``:
    the prompts' positions in the prompt set, for error messages)."""

    name: str
    kind: str
    fn: Callable[..., Any] | None = None
    model: Any = None
    tokenizer: Any = None
    batch_size: int = 16

    def score(
        self,
        indices: Sequence[int],
        prompts: Sequence[Any],
        groups: Sequence[Sequence[str]],
        rows: Sequence[Mapping[str, Any]],
    ) -> list[list[float]]:
        groups_of = zip(indices, prompts, groups, rows, strict=True)
        if self.kind == "verifier":
            return [[self._judged(i, prompt, c, row) for c in group] for i, prompt, group, row in groups_of]
        if self.kind != "reward_model":
            return [self._pairwise(index, prompt, group) for index, prompt, group, _ in groups_of]
        from hf_dpo.eval.generation import judge_scores, judge_text

        texts = [judge_text(p, c, self.tokenizer) for p, g in zip(prompts, groups, strict=True) for c in g]
        args = (self.model, self.tokenizer, texts, self.batch_size)
        flat = _call(self.name, indices[0], prompts[0], judge_scores, *args)
        if len(flat) != len(texts):
            raise JudgeError(f"judge {self.name!r} returned {len(flat)} scores for {len(texts)} completions")
        values = iter(flat)
        return [
            [_checked(self.name, index, prompt, next(values)) for _ in group]
            for index, prompt, group in zip(indices, prompts, groups, strict=True)
        ]

    def _judged(
        self, index: int, prompt: Any, *args: Any, low: float = -math.inf, high: float = math.inf
    ) -> float:
        value = _call(self.name, index, prompt, self.fn, prompt, *args)
        return _checked(self.name, index, prompt, value, low, high)

    def prefer(self, index: int, prompt: Any, a: str, b: str) -> float:
        """A pairwise judge's checked probability that ``a`` is better than ``b``."""
        return self._judged(index, prompt, a, b, low=0, high=1)

    def _pairwise(self, index: int, prompt: Any, group: Sequence[str]) -> list[float]:
        wins = [0.0] * len(group)
        for i, j in itertools.combinations(range(len(group)), 2):
            p = self.prefer(index, prompt, group[i], group[j])
            wins[i] += p
            wins[j] += 1 - p
        return [w / (len(group) - 1) for w in wins]


def make_judge(name: str, kind: str, device: Any = None, batch_size: int = 16) -> GroupJudge:
    """The judge ``name`` of ``kind`` (``verifier``, ``reward_model`` or ``pairwise``); ``ValueError`` for an
    unknown name, ``OSError`` for a reward model that cannot be loaded."""
    if kind == "reward_model":
        from hf_dpo.eval.generation import load_judge

        try:
            model, tokenizer = load_judge(name, device or "cpu")
        except (OSError, ValueError) as e:
            raise OSError(
                f"cannot load the reward model judge={name!r}: {e}. Give a local directory or Hub id of an "
                "AutoModelForSequenceClassification (e.g. a num_labels=1 reward model)"
            ) from None
        return GroupJudge(name, kind, model=model, tokenizer=tokenizer, batch_size=batch_size)
    registry = VERIFIERS if kind == "verifier" else PAIRWISE_JUDGES
    if ":" not in name:
        return GroupJudge(name, kind, fn=registry.get(name), batch_size=batch_size)
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"on_policy.judge={name!r}: cannot import the {registry.kind} ({e})") from None
    if not callable(fn):
        raise ValueError(f"on_policy.judge={name!r} is not callable")
    return GroupJudge(name, kind, fn=fn, batch_size=batch_size)
