"""The ``preference`` task: implicit-reward metrics of the policy against its reference on held-out pairs.

Pairs are scored by ``hf_dpo.scoring.score_batch``, the function training uses, with the run's
``Objective``: the reported ``dpo_loss`` is the loss the run optimised (WPO weights, LD-DPO, every loss
option), and equals ``DPOTrainer.evaluate()``'s ``eval_dpo_loss`` on the same pairs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from hf_dpo.batching.collator import DPODataCollator, pad_token_id_for
from hf_dpo.batching.layouts import choose_layout
from hf_dpo.config import dpo_default
from hf_dpo.eval.loading import ModelPair
from hf_dpo.eval.stats import preference_metrics, preference_values
from hf_dpo.objective.losses import DPOLossOutput, LossConfig, PreferenceLogps
from hf_dpo.reference.policies import AdapterDisabledReference, FrozenCopyReference, ReferencePolicy
from hf_dpo.scoring import Objective, score_batch
from hf_dpo.tokens.tokenization import tokenize_dataset


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def pair_reference(pair: ModelPair) -> ReferencePolicy:
    """The pair's reference as a ``ReferencePolicy``: its separate model, else the policy with its PEFT
    adapters disabled."""
    return FrozenCopyReference(pair.reference) if pair.reference is not None else AdapterDisabledReference()


@torch.no_grad()
def score_pairs(
    pair: ModelPair,
    tokenized: Dataset,
    objective: Objective,
    batch_size: int = 8,
    show_progress: bool = False,
) -> tuple[DPOLossOutput, PreferenceLogps]:
    """``score_batch`` over every tokenized pair: the per-pair loss term and rewards, and the log-probs and
    completion lengths of policy and reference, each (N,), in the order of ``tokenized``.

    Pairs are batched longest first (less padding) in the fastest layout that is exact for both models, as
    in training; neither changes a per-pair value (batch-level losses, ``aot`` and ``sft``, are computed
    over these batches).
    """
    pad_id = pad_token_id_for(pair.tokenizer)
    aux = objective.router_aux_loss_coef != 0.0
    collate = DPODataCollator(pad_id, choose_layout((pair.policy, pair.reference), "auto", pad_id, None, aux))
    reference, device = pair_reference(pair), next(pair.policy.parameters()).device
    lengths = [len(p) + len(c) + len(r) for p, c, r in zip(*(tokenized[k] for k in _TOKENS), strict=True)]
    order = sorted(range(len(tokenized)), key=lambda i: -lengths[i])
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in _PARTS}
    for start in tqdm(range(0, len(tokenized), batch_size), desc="Scoring pairs", disable=not show_progress):
        batch = _to(collate(list(tokenized.select(order[start : start + batch_size]))), device)
        scores = score_batch(pair.policy, reference, batch, objective)
        out, policy, ref = scores.dpo, scores.policy, scores.reference
        values = (out.losses, out.chosen_rewards, out.rejected_rewards, policy.chosen_logps)
        values += (policy.rejected_logps, ref.chosen_logps, ref.rejected_logps)
        values += (policy.chosen_num_tokens, policy.rejected_num_tokens)
        for key, value in zip(_PARTS, values, strict=True):
            parts[key].append(value.float().cpu())
    restore = torch.argsort(torch.tensor(order, dtype=torch.long))  # sorted position of each original pair
    cat = [torch.cat(parts[k])[restore] if parts[k] else torch.zeros(0) for k in _PARTS]
    return DPOLossOutput(*cat[:3]), PreferenceLogps(*cat[3:])


_TOKENS = ("prompt_ids", "chosen_ids", "rejected_ids")
_PARTS = ("loss", "chosen_reward", "rejected_reward", "pc", "pr", "rc", "rr", "nc", "nr")


def evaluate_preference(
    pair: ModelPair,
    dataset: Dataset,
    renderer: Any,
    beta: float = dpo_default("beta"),
    *,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    objective: Objective | None = None,
    max_length: int | None = dpo_default("max_length"),
    max_prompt_length: int | None = dpo_default("max_prompt_length"),
    truncation_mode: str = dpo_default("truncation_mode"),
    assistant_only_loss: bool = False,
    batch_size: int = 8,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Tokenize ``dataset`` as in training, score every pair, and return (metrics with CIs, per-pair values).

    ``objective`` is the training objective (default: ``loss_type`` with ``beta`` and ``label_smoothing``).

    Metrics: ``accuracy``, ``margin``, ``chosen_reward``, ``rejected_reward``, ``dpo_loss``, ``log_ratio``,
    ``log_ratio_per_token``, ``test/nll`` (each ``{"value", "ci_low", "ci_high", ...}``), plus
    ``num_pairs`` and ``skips``.
    """
    if objective is None:
        objective = Objective(LossConfig(loss_type, beta=beta, label_smoothing=label_smoothing))
    tokenized, skips = tokenize_dataset(
        dataset,
        pair.tokenizer,
        renderer,
        max_length,
        max_prompt_length,
        None,
        "eval",
        truncation_mode,
        assistant_only_loss,
    )
    out, logps = score_pairs(pair, tokenized, objective, batch_size, show_progress)
    values = preference_values(out, logps)
    metrics: dict[str, Any] = preference_metrics(values, bootstrap_samples, confidence, seed)
    metrics["num_pairs"] = len(tokenized)
    metrics["skips"] = dict(skips)
    return metrics, values
