"""Evaluation statistics: per-example values to aggregates with seeded bootstrap CIs (no model, no I/O)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass

import numpy as np

from hf_dpo.objective.losses import DPOLossOutput, PreferenceLogps, pair_accuracy

Statistic = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap interval ``[low, high]`` at ``confidence``."""

    value: float
    low: float
    high: float
    confidence: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return dict(zip(("value", "ci_low", "ci_high", "confidence", "n"), astuple(self), strict=True))


def mean_of(column: str) -> Statistic:
    """Statistic: the mean of one per-example column (vectorised over resamples: arrays are (R, n))."""
    return lambda cols: cols[column].mean(axis=-1)


def ratio_of_sums(numerator: str, denominator: str) -> Statistic:
    """Statistic: Σ numerator / Σ denominator (e.g. a per-token NLL from per-pair sums)."""
    return lambda cols: cols[numerator].sum(axis=-1) / np.maximum(cols[denominator].sum(axis=-1), 1e-12)


def bootstrap(
    columns: Mapping[str, Sequence[float] | np.ndarray],
    statistic: Statistic,
    num_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap of ``statistic`` over examples (rows resampled jointly across ``columns``, with
    ``seed``); ``num_samples=0`` gives a degenerate interval equal to the value."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in columns.items()}
    n = len(next(iter(cols.values())))
    if n == 0:
        raise ValueError("bootstrap needs at least one example")
    value = float(statistic(cols))
    if num_samples <= 0:
        return Estimate(value, value, value, confidence, n)
    index = np.random.default_rng(seed).integers(0, n, size=(num_samples, n))
    stats = statistic({k: v[index] for k, v in cols.items()})
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Estimate(value, float(low), float(high), confidence, n)


def preference_values(out: DPOLossOutput, logps: PreferenceLogps) -> dict[str, np.ndarray]:
    """Per-pair values, each (B,): rewards, ``margin``, ``accuracy`` (½ on a tie), ``dpo_loss``, ``log_ratio``
    = ½[u(y_w) + u(y_l)] with u = log πθ − log πref, ``nll`` = −log πθ(y_w|x), lengths and log-probs."""
    values = {
        "chosen_reward": out.chosen_rewards,
        "rejected_reward": out.rejected_rewards,
        "margin": out.chosen_rewards - out.rejected_rewards,
        "accuracy": pair_accuracy(out.chosen_rewards, out.rejected_rewards),
        "dpo_loss": out.losses,
        "log_ratio": 0.5
        * ((logps.policy_chosen - logps.ref_chosen) + (logps.policy_rejected - logps.ref_rejected)),
        "nll": -logps.policy_chosen,
        "chosen_tokens": logps.chosen_num_tokens,
        "rejected_tokens": logps.rejected_num_tokens,
        "policy_chosen_logps": logps.policy_chosen,
        "policy_rejected_logps": logps.policy_rejected,
        "ref_chosen_logps": logps.ref_chosen,
        "ref_rejected_logps": logps.ref_rejected,
    }
    return {k: v.detach().double().cpu().numpy() for k, v in values.items()}


PREFERENCE_MEANS = ("accuracy", "margin", "chosen_reward", "rejected_reward", "dpo_loss", "log_ratio")


def preference_metrics(
    values: Mapping[str, np.ndarray], num_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Bootstrapped means of ``PREFERENCE_MEANS``, ``test/nll`` = Σ −log πθ(y_w|x) / Σ |y_w| and
    ``log_ratio_per_token`` = Σ_{y_w, y_l} (log πθ − log πref) / Σ (|y_w| + |y_l|)."""
    cols = dict(values)
    cols["log_ratio_sum"] = 2 * cols["log_ratio"]
    cols["all_tokens"] = cols["chosen_tokens"] + cols["rejected_tokens"]
    stats: dict[str, Statistic] = {name: mean_of(name) for name in PREFERENCE_MEANS}
    stats["test/nll"] = ratio_of_sums("nll", "chosen_tokens")
    stats["log_ratio_per_token"] = ratio_of_sums("log_ratio_sum", "all_tokens")
    return {
        name: bootstrap(cols, stat, num_samples, confidence, seed).as_dict() for name, stat in stats.items()
    }


def win_values(policy_scores: Sequence[float], reference_scores: Sequence[float]) -> np.ndarray:
    """Per-prompt win of the policy over the reference: 1 if its judge score is higher, ½ on a tie, else 0."""
    p, r = np.asarray(policy_scores, dtype=np.float64), np.asarray(reference_scores, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"policy and reference scores differ in shape: {p.shape} vs {r.shape}")
    return (p > r).astype(np.float64) + 0.5 * (p == r)


def length_stats(lengths: Sequence[int], max_new_tokens: int, finished: Sequence[bool]) -> dict[str, float]:
    """Mean / median / min / max length, and the share cut at ``max_new_tokens`` without an EOS token."""
    arr, done = np.asarray(lengths, dtype=np.float64), np.asarray(finished, dtype=bool)
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "truncated_fraction": float(((arr >= max_new_tokens) & ~done).mean()),
    }


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    """The last number in ``text`` (where answers come; ``1,234`` allowed), or None if there is none."""
    matches = _NUMBER.findall(text)
    return float(matches[-1].replace(",", "")) if matches else None


def exact_match(completions: Sequence[str], answers: Sequence[float | None]) -> np.ndarray:
    """1 where the number parsed from the completion equals the answer, else 0 (also when none is parsed)."""
    return np.asarray(
        [float(a is not None and parse_number(c) == a) for c, a in zip(completions, answers, strict=True)]
    )
