"""The ``preference`` task: implicit-reward metrics of the policy against its reference on held-out pairs,
scored by training's ``score_batch`` with the run's ``Objective`` (``dpo_loss`` equals ``eval_dpo_loss``)."""

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

_TOKENS = ("prompt_ids", "chosen_ids", "rejected_ids")


@torch.no_grad()
def score_pairs(
    pair: ModelPair,
    tokenized: Dataset,
    objective: Objective,
    batch_size: int = 8,
    show_progress: bool = False,
) -> tuple[DPOLossOutput, PreferenceLogps]:
    """``score_batch`` over every tokenized pair, batched longest first: per-pair loss terms, rewards,
    log-probs and lengths, each (N,), in the order of ``tokenized``."""
    pad_id = pad_token_id_for(pair.tokenizer)
    aux = objective.router_aux_loss_coef != 0.0
    collate = DPODataCollator(pad_id, choose_layout((pair.policy, pair.reference), "auto", pad_id, None, aux))
    reference: ReferencePolicy = (
        FrozenCopyReference(pair.reference) if pair.reference is not None else AdapterDisabledReference()
    )
    device = next(pair.policy.parameters()).device
    lengths = [len(p) + len(c) + len(r) for p, c, r in zip(*(tokenized[k] for k in _TOKENS), strict=True)]
    order = sorted(range(len(tokenized)), key=lambda i: -lengths[i])
    parts: list[list[torch.Tensor]] = [[] for _ in range(9)]  # DPOLossOutput's 3, then PreferenceLogps' 6
    for start in tqdm(range(0, len(tokenized), batch_size), desc="Scoring pairs", disable=not show_progress):
        batch = collate(list(tokenized.select(order[start : start + batch_size])))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        scores = score_batch(pair.policy, reference, batch, objective)
        out, policy, ref = scores.dpo, scores.policy, scores.reference
        values = (out.losses, out.chosen_rewards, out.rejected_rewards, policy.chosen_logps)
        values += (policy.rejected_logps, ref.chosen_logps, ref.rejected_logps)
        values += (policy.chosen_num_tokens, policy.rejected_num_tokens)
        for part, value in zip(parts, values, strict=True):
            part.append(value.float().cpu())
    restore = torch.argsort(torch.tensor(order, dtype=torch.long))  # sorted position of each original pair
    cat = [torch.cat(part)[restore] if part else torch.zeros(0) for part in parts]
    return DPOLossOutput(*cat[:3]), PreferenceLogps(*cat[3:])


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
    """Tokenize ``dataset`` as in training, score every pair, and return (``preference_metrics`` plus
    ``num_pairs`` and ``skips``, per-pair values). ``objective`` defaults to ``loss_type`` with ``beta``."""
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
    metrics = preference_metrics(values, bootstrap_samples, confidence, seed)
    return {**metrics, "num_pairs": len(tokenized), "skips": dict(skips)}, values
