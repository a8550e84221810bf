"""``score_batch``: the one function that scores a collated batch of preference pairs (training, the
``preference`` eval task and the reference precompute pass all score here, under the run's ``Objective``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from hf_dpo.modeling.forward import ChosenRejectedLogps, add_ld_weights, sequence_logps
from hf_dpo.objective.losses import DPOLossOutput, LossConfig, PreferenceLogps, preference_loss, sft_loss
from hf_dpo.objective.metrics import batch_sums
from hf_dpo.reference.policies import ReferencePolicy


@dataclass(frozen=True)
class Objective:
    """What a run optimises: the loss, WPO weights (arXiv:2406.11827, Eq. 2), + ``rpo_alpha``·NLL(y_w)/|y_w|,
    LD-DPO's ``ld_alpha``, + coef · MoE router loss; ``chunk_size``: completion tokens per LM-head call."""

    loss: LossConfig
    use_weighting: bool = False
    rpo_alpha: float | None = None
    ld_alpha: float | None = None
    router_aux_loss_coef: float = 0.0
    chunk_size: int = 1024

    @classmethod
    def from_args(cls, args: Any, router_aux_loss_coef: float = 0.0) -> Objective:
        """From a ``DPOConfig``, or a mapping with its field names (a run's ``config.yaml``)."""
        get = args.get if isinstance(args, Mapping) else lambda name: getattr(args, name, None)
        return cls(
            loss=LossConfig.from_args(args),
            use_weighting=bool(get("use_weighting")),
            rpo_alpha=get("rpo_alpha"),
            ld_alpha=get("ld_alpha"),
            router_aux_loss_coef=router_aux_loss_coef,
            chunk_size=int(get("logprob_chunk_size") or 1024),
        )


@dataclass(frozen=True)
class PairScores:
    """``score_batch``'s answer for B pairs: the optimised per-pair ``losses`` (B,) (``dpo.losses`` + RPO +
    router terms), ``dpo`` (WPO-weighted under ``use_weighting``) and both models' log-probs (``reference``
    None for reference-free losses)."""

    losses: torch.Tensor
    dpo: DPOLossOutput
    policy: ChosenRejectedLogps
    reference: ChosenRejectedLogps | None

    def metric_sums(self, num_tokens: int) -> dict[str, torch.Tensor | float]:
        """This batch's contribution to the logged metrics (``hf_dpo.objective.metrics``)."""
        return batch_sums(self.dpo, self.policy, num_tokens)


def prepare_batch(batch: Mapping[str, Any], objective: Objective) -> Mapping[str, Any]:
    """``batch`` with what ``objective`` adds to every model's scoring of it (LD-DPO token weights)."""
    return add_ld_weights(dict(batch), objective.ld_alpha) if objective.ld_alpha is not None else batch


def reference_logps(
    reference: ReferencePolicy, policy: torch.nn.Module, batch: Mapping[str, Any], objective: Objective
) -> ChosenRejectedLogps | None:
    """The reference's log-probs of a prepared batch, without gradient (None for reference-free losses)."""
    with torch.no_grad():
        return reference.logps(policy, batch, objective.chunk_size)


def score_batch(
    policy: torch.nn.Module,
    reference: ReferencePolicy,
    batch: Mapping[str, Any],
    objective: Objective,
    reference_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> PairScores:
    """Score the B pairs of a collated ``batch``: one policy forward, the reference's answer (inside
    ``reference_context``, e.g. the trainer's autocast), the loss."""
    batch = prepare_batch(batch, objective)
    aux = objective.router_aux_loss_coef != 0.0
    logps = sequence_logps(
        policy, batch, objective.chunk_size, wpo_weights=objective.use_weighting, output_router_logits=aux
    )
    with reference_context():
        ref = reference_logps(reference, policy, batch, objective)
    dpo = preference_loss(PreferenceLogps.from_records(logps, ref), objective.loss)
    if objective.use_weighting:
        dpo = replace(dpo, losses=dpo.losses * (logps.chosen_weights * logps.rejected_weights))
    losses = dpo.losses
    if objective.rpo_alpha:
        losses = losses + objective.rpo_alpha * sft_loss(logps.chosen_logps, logps.chosen_num_tokens)
    if aux:  # a per-batch scalar, added to every pair so that it weighs like the pair losses
        losses = losses + objective.router_aux_loss_coef * logps.aux_loss
    return PairScores(losses, dpo, logps, ref)
