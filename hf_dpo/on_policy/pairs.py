"""From one prompt's judged completions to preference pairs (pure; no model, no I/O): ``best_vs_worst`` or
``all_pairs``, skipping ``all_equal`` groups, ``tie``d and ``identical`` couples (see docs/on_policy.md)."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

PAIR_RULES = ("best_vs_worst", "all_pairs")


@dataclass(frozen=True)
class GroupPairs:
    """The pairs picked from one group, as (chosen index, rejected index), and what was skipped."""

    pairs: list[tuple[int, int]]
    skipped: Counter[str] = field(default_factory=Counter)


def pick_pairs(scores: Sequence[float], texts: Sequence[str], rule: str = "best_vs_worst") -> GroupPairs:
    """Pairs of ``rule`` from one group: ``scores[i]`` is the judge's score of completion ``texts[i]``.

    >>> pick_pairs([0.0, 1.0, 0.0], ["a", "b", "c"]).pairs
    [(1, 0)]
    """
    if rule not in PAIR_RULES:
        raise ValueError(f"pair_rule={rule!r} is unknown; use one of {', '.join(PAIR_RULES)}")
    if len(scores) != len(texts) or len(scores) < 2:
        raise ValueError(
            f"a group needs >= 2 completions with one score each, got {len(texts)} / {len(scores)}"
        )
    if any(not math.isfinite(s) for s in scores):
        raise ValueError(f"group scores must be finite, got {list(scores)}")
    if max(scores) == min(scores):
        return GroupPairs([], Counter(all_equal=1))
    candidates: list[tuple[int, int]] = []
    skipped: Counter[str] = Counter()
    if rule == "best_vs_worst":
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        worst = min(range(len(scores)), key=lambda i: (scores[i], i))
        candidates.append((best, worst))
    else:
        for i, j in itertools.combinations(range(len(scores)), 2):
            if scores[i] == scores[j]:
                skipped["tie"] += 1
            else:
                candidates.append((i, j) if scores[i] > scores[j] else (j, i))
    kept = [(chosen, rejected) for chosen, rejected in candidates if texts[chosen] != texts[rejected]]
    if len(kept) < len(candidates):
        skipped["identical"] += len(candidates) - len(kept)
    return GroupPairs(kept, skipped)
