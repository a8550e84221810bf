"""OnPolicyOptions: the ``on_policy:`` section of a training config (see docs/on_policy.md)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from hf_dpo.on_policy.pairs import PAIR_RULES

CHOICES = {
    "judge_type": ("verifier", "reward_model", "pairwise"),
    "pair_rule": PAIR_RULES,
    "reference_update": ("initial", "round"),
    "generation_backend": ("hf", "vllm"),
}


@dataclass
class OnPolicyOptions:
    """Rounds of sample -> judge -> pair -> DPO (``steps_per_round`` None: one pass over the pairs);
    ``eval_prompts`` test prompts are measured greedily before the first round and after each (0: off)."""

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
        ranges = {
            **{name: (lambda v: v >= 1, ">= 1") for name in (*positive, "max_new_tokens")},
            "num_generations": (lambda v: v >= 2, ">= 2 (a pair needs two completions of one prompt)"),
            "steps_per_round": (lambda v: v is None or v >= 1, ">= 1 or None (one pass)"),
            "lr_round_decay": (lambda v: 0 < v <= 1, "in (0, 1]"),
            "eval_prompts": (lambda v: v >= 0, ">= 0"),
        }
        for name, (valid, bound) in ranges.items():
            if not valid(getattr(self, name)):
                raise ValueError(f"on_policy.{name} must be {bound}, got {getattr(self, name)}")
        if not self.temperature > 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"on_policy.temperature must be > 0 and top_p in (0, 1]; got {self.temperature}, {self.top_p}"
            )
        for name, valid in CHOICES.items():
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
