"""DPO-family losses: pure functions from per-pair log-probabilities to per-pair losses.

Notation (Rafailov et al. 2023, arXiv:2305.18290): for a prompt x with preferred completion y_w and
dispreferred completion y_l, the implicit reward of a completion is

    r(x, y) = β · (log πθ(y|x) − log πref(y|x))

and the DPO objective (paper Eq. 7) is

    L_DPO = −E[ log σ( r(x, y_w) − r(x, y_l) ) ].

Every function here takes tensors of shape (B,) (one value per pair, summed over completion tokens)
and returns tensors of shape (B,). No I/O, no model, no Trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from hf_dpo.modeling.forward import ChosenRejectedLogps

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "robust")


@dataclass(frozen=True)
class PreferenceLogps:
    """Summed completion log-probs of a batch of pairs, each of shape (B,)."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor
    ref_rejected: torch.Tensor

    @classmethod
    def from_records(cls, policy: ChosenRejectedLogps, reference: ChosenRejectedLogps) -> PreferenceLogps:
        """From the policy's and the reference's chosen/rejected records (``sequence_logps`` outputs)."""
        return cls(
            policy.chosen_logps, policy.rejected_logps, reference.chosen_logps, reference.rejected_logps
        )


@dataclass(frozen=True)
class DPOLossOutput:
    """Per-pair loss and implicit rewards, each of shape (B,). Rewards carry no gradient."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def preference_logits(logps: PreferenceLogps) -> torch.Tensor:
    """h = (log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l)), shape (B,)."""
    return (logps.policy_chosen - logps.ref_chosen) - (logps.policy_rejected - logps.ref_rejected)


def dpo_loss(
    logps: PreferenceLogps, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0
) -> DPOLossOutput:
    """Per-pair DPO-family loss. With h = preference_logits(logps) and ε = label_smoothing:

    - ``sigmoid``: −(1−ε)·log σ(βh) − ε·log σ(−βh). ε = 0 is DPO (Eq. 7); ε > 0 is conservative DPO
      (cDPO), which assumes labels are flipped with probability ε.
    - ``robust``: (−(1−ε)·log σ(βh) + ε·log σ(−βh)) / (1 − 2ε), the unbiased rDPO estimator
      (Chowdhury et al. 2024, arXiv:2403.00409, Eq. 8).
    - ``hinge``: max(0, 1 − βh), the SLiC-HF calibration loss (Zhao et al. 2023, arXiv:2305.10425).
    - ``ipo``: (h − 1/(2β))², IPO (Azar et al. 2023, arXiv:2310.12036, Eq. 17) with τ = β, on summed
      sequence log-probs as in the paper.

    Args:
        logps: summed completion log-probs, each (B,).
        beta: β > 0, strength of the KL penalty towards the reference.
        loss_type: one of ``LOSS_TYPES``.
        label_smoothing: ε in [0, 0.5), used by ``sigmoid`` and ``robust``.

    Returns:
        losses (B,), and detached implicit rewards β·(log πθ − log πref) of chosen and rejected (B,).
    """
    h = preference_logits(logps)
    eps = label_smoothing
    if loss_type == "sigmoid":
        losses = -(1 - eps) * F.logsigmoid(beta * h) - eps * F.logsigmoid(-beta * h)
    elif loss_type == "robust":
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    chosen_rewards = beta * (logps.policy_chosen - logps.ref_chosen).detach()
    rejected_rewards = beta * (logps.policy_rejected - logps.ref_rejected).detach()
    return DPOLossOutput(losses, chosen_rewards, rejected_rewards)


def sft_loss(chosen_logps: torch.Tensor, chosen_num_tokens: torch.Tensor) -> torch.Tensor:
    """Per-pair negative log-likelihood per token of the chosen completion, shape (B,).

    The RPO term (Pang et al. 2024, arXiv:2404.19733): total loss = L_DPO + α · NLL(y_w|x)/|y_w|.
    """
    return -chosen_logps / chosen_num_tokens.clamp(min=1)


def pair_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """1 where the chosen reward is higher, 0 where lower, 0.5 on a tie; shape (B,)."""
    return (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
