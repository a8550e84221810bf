"""DPO training metrics: per-batch sums kept on device, reduced across processes once per log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from hf_dpo.objective.losses import DPOLossOutput, pair_accuracy

if TYPE_CHECKING:
    from hf_dpo.modeling.forward import ChosenRejectedLogps

# Names of the per-pair means reported (besides num_pairs, num_tokens and test/nll).
PAIR_MEANS = (
    "dpo_loss",
    "accuracy",
    "margin",
    "chosen_reward",
    "rejected_reward",
    "logps/chosen",
    "logps/rejected",
)


def batch_sums(
    out: DPOLossOutput, policy: ChosenRejectedLogps, num_tokens: int
) -> dict[str, torch.Tensor | float]:
    """Sums over one micro-batch of what the logged metrics are built from (no host sync); ``num_tokens``:
    the real tokens fed to the model."""
    sums = {
        "pairs": float(out.losses.shape[0]),
        "tokens": float(num_tokens),
        "dpo_loss": out.losses.detach().sum(),
        "accuracy": pair_accuracy(out.chosen_rewards, out.rejected_rewards).sum(),
        "margin": (out.chosen_rewards - out.rejected_rewards).sum(),
        "chosen_reward": out.chosen_rewards.sum(),
        "rejected_reward": out.rejected_rewards.sum(),
        "logps/chosen": policy.chosen_logps.detach().sum(),
        "logps/rejected": policy.rejected_logps.detach().sum(),
        "chosen_tokens": policy.chosen_num_tokens.sum(),
    }
    if policy.aux_loss is not None:  # the MoE router loss: a per-batch scalar, weighted by the batch's pairs
        sums["aux_loss"] = policy.aux_loss.detach() * out.losses.shape[0]
    return sums


class MetricSums:
    """Running sums of ``batch_sums`` since the last log."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}

    def add(self, sums: dict[str, torch.Tensor | float]) -> None:
        for name, value in sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value

    def reduce(
        self, all_reduce_sum: Callable[[torch.Tensor], torch.Tensor], device: torch.device
    ) -> dict[str, float]:
        """Sum across processes with one collective, reset, and return the global sums."""
        if not self.sums:
            return {}
        names = sorted(self.sums)
        local = torch.stack(
            [torch.as_tensor(self.sums[n], dtype=torch.float64, device=device) for n in names]
        )
        self.sums = {}
        return dict(zip(names, all_reduce_sum(local).tolist(), strict=True))


def summarize(sums: dict[str, float], num_steps: int, with_nll: bool) -> dict[str, float]:
    """Logged metrics from global sums: per-pair means, pairs and tokens per optimizer step, and
    ``test/nll`` = −Σ log πθ(y_w) / Σ |y_w| (a tie counts as half a correct pair in ``accuracy``)."""
    if not sums.get("pairs"):
        return {}
    pairs = sums["pairs"]
    metrics = {name: sums[name] / pairs for name in PAIR_MEANS}
    if "aux_loss" in sums:  # MoE router loss, summed per pair
        metrics["aux_loss"] = sums["aux_loss"] / pairs
    steps = max(num_steps, 1)
    metrics["num_pairs"], metrics["num_tokens"] = pairs / steps, sums["tokens"] / steps
    if with_nll:
        metrics["test/nll"] = -sums["logps/chosen"] / max(sums["chosen_tokens"], 1.0)
    return metrics
