"""The ``preference`` task: implicit-reward metrics of the policy against its reference on held-out pairs."""

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
from hf_dpo.modeling.forward import sequence_logps
from hf_dpo.objective.losses import LossConfig, PreferenceLogps
from hf_dpo.tokens.tokenization import tokenize_dataset


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def pair_logps(
    pair: ModelPair,
    tokenized: Dataset,
    batch_size: int = 8,
    chunk_size: int = 1024,
    show_progress: bool = False,
) -> tuple[PreferenceLogps, torch.Tensor, torch.Tensor]:
    """Summed completion log-probs of policy and reference for every tokenized pair
    (``hf_dpo.modeling.forward``), plus the chosen and rejected completion lengths, each (N,), in the order
    of ``tokenized``.

    Pairs are batched longest first (less padding) in the fastest layout that is exact for both models, as
    in training; neither changes a log-prob.
    """
    pad_id = pad_token_id_for(pair.tokenizer)
    collate = DPODataCollator(pad_id, choose_layout((pair.policy, pair.reference), "auto", pad_id))
    device = next(pair.policy.parameters()).device
    lengths = [
        len(p) + len(c) + len(r)
        for p, c, r in zip(
            tokenized["prompt_ids"], tokenized["chosen_ids"], tokenized["rejected_ids"], strict=True
        )
    ]
    order = sorted(range(len(tokenized)), key=lambda i: -lengths[i])
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("pc", "pr", "rc", "rr", "nc", "nr")}
    for start in tqdm(range(0, len(tokenized), batch_size), desc="Scoring pairs", disable=not show_progress):
        rows = tokenized.select(order[start : start + batch_size])
        batch = _to(collate(list(rows)), device)
        with pair.use("policy") as model:
            policy = sequence_logps(model, batch, chunk_size)
        with pair.use("reference") as model:
            ref = sequence_logps(model, batch, chunk_size)
        for key, value in (
            ("pc", policy.chosen_logps),
            ("pr", policy.rejected_logps),
            ("rc", ref.chosen_logps),
            ("rr", ref.rejected_logps),
            ("nc", policy.chosen_num_tokens),
            ("nr", policy.rejected_num_tokens),
        ):
            parts[key].append(value.float().cpu())
    restore = torch.argsort(torch.tensor(order, dtype=torch.long))  # sorted position of each original pair
    cat = {k: torch.cat(v)[restore] if v else torch.zeros(0) for k, v in parts.items()}
    return PreferenceLogps(cat["pc"], cat["pr"], cat["rc"], cat["rr"]), cat["nc"], cat["nr"]


def evaluate_preference(
    pair: ModelPair,
    dataset: Dataset,
    renderer: Any,
    beta: float,
    *,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    loss_config: LossConfig | None = None,
    max_length: int | None = dpo_default("max_length"),
    max_prompt_length: int | None = dpo_default("max_prompt_length"),
    batch_size: int = 8,
    chunk_size: int = 1024,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    show_progress: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Tokenize ``dataset`` as in training, score every pair, and return (metrics with CIs, per-pair values).

    ``loss_config`` (default ``LossConfig(loss_type, beta=beta, label_smoothing=label_smoothing)``) is the
    training objective, so ``dpo_loss`` is the loss the trainer reports on the same pairs.

    Metrics: ``accuracy``, ``margin``, ``chosen_reward``, ``rejected_reward``, ``dpo_loss``, ``log_ratio``,
    ``log_ratio_per_token``, ``test/nll`` (each ``{"value", "ci_low", "ci_high", ...}``), plus
    ``num_pairs`` and ``skips``.
    """
    tokenized, skips = tokenize_dataset(
        dataset, pair.tokenizer, renderer, max_length, max_prompt_length, split_name="eval"
    )
    logps, chosen_tokens, rejected_tokens = pair_logps(pair, tokenized, batch_size, chunk_size, show_progress)
    values = preference_values(
        logps, chosen_tokens, rejected_tokens, beta, loss_type, label_smoothing, loss_config
    )
    metrics: dict[str, Any] = preference_metrics(values, bootstrap_samples, confidence, seed)
    metrics["num_pairs"] = len(tokenized)
    metrics["skips"] = dict(skips)
    return metrics, values
