"""OnPolicyOptions: the ``on_policy:`` section of a training config (see docs/on_policy.md)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from hf_dpo.on_policy.pairs import PAIR_RULES

JUDGE_TYPES = ("verifier", "reward_model", "pairwise")
REFERENCE_UPDATES = ("initial", "round")
GENERATION_BACKENDS = ("hf", "vllm")


@dataclass
class OnPolicyOptions:
    """Rounds of sample -> judge -> pair -> DPO. Each round draws ``prompts_per_round`` prompts from the
    dataset's train split, samples ``num_generations`` completions per prompt from the current policy, scores
    them with ``judge``, keeps the pairs of ``pair_rule`` and trains ``steps_per_round`` optimizer steps on
    them (None: one pass). ``reference_update``: ``initial`` (the model the run started from) or ``round``
    (each round's starting policy). ``eval_prompts`` test prompts are measured greedily before the first
    round and after each (0: off)."""

    num_rounds: int = 3
    prompts_per_round: int = 64
    num_generations: int = 4
    steps_per_round: int | None = None
    lr_round_decay: float = 1.0  # round r trains at learning_rate * lr_round_decay ** (r - 1)
    judge: str = "arithmetic"
    judge_type: str = "verifier"
    judge_device: str | None = None  # reward models: cpu, cuda, ... (None: the policy's device)
    judge_batch_size: int = 16
    pair_rule: str = "best_vs_worst"
    reference_update: str = "initial"
    generation_backend: str = "hf"
    generation_batch_size: int = 8  # prompts per generate call (each with num_generations samples)
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    eval_prompts: int = 200
    eval_max_new_tokens: int | None = None  # None: max_new_tokens

    def __post_init__(self) -> None:
        positive = ("num_rounds", "prompts_per_round", "judge_batch_size", "generation_batch_size")
        for name in (*positive, "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"on_policy.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise ValueError(
                f"on_policy.num_generations must be >= 2 (a pair needs two completions of one prompt), got "
                f"{self.num_generations}"
            )
        if self.steps_per_round is not None and self.steps_per_round < 1:
            raise ValueError(
                f"on_policy.steps_per_round must be >= 1 or None (one pass), got {self.steps_per_round}"
            )
        if not 0 < self.lr_round_decay <= 1:
            raise ValueError(f"on_policy.lr_round_decay must be in (0, 1], got {self.lr_round_decay}")
        if self.eval_prompts < 0:
            raise ValueError(f"on_policy.eval_prompts must be >= 0, got {self.eval_prompts}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"on_policy.temperature must be > 0 and top_p in (0, 1]; got {self.temperature}, {self.top_p}"
            )
        for name, valid in (
            ("judge_type", JUDGE_TYPES),
            ("pair_rule", PAIR_RULES),
            ("reference_update", REFERENCE_UPDATES),
            ("generation_backend", GENERATION_BACKENDS),
        ):
            if getattr(self, name) not in valid:
                raise ValueError(
                    f"on_policy.{name}={getattr(self, name)!r} is unknown; use one of {', '.join(valid)}"
                )
        if self.generation_backend == "vllm" and importlib.util.find_spec("vllm") is None:
            raise ValueError(
                "on_policy.generation_backend=vllm needs the vllm package (a CUDA GPU build): pip install "
                "vllm; or use generation_backend=hf (transformers generate, CPU or GPU)"
            )

    @property
    def heldout_max_new_tokens(self) -> int:
        return self.eval_max_new_tokens or self.max_new_tokens
