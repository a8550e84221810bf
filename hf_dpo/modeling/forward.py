"""Summed completion log-probs of each pair's chosen and rejected completion (``ChosenRejectedLogps``).

Hidden path: one forward with ``logits_to_keep=1``, a decoder hook captures the final hidden states, and the
LM head runs in chunks at completion positions only. Logits path (soft-capped/scaled logits, or a sharded
head under FSDP / ZeRO-3): the model's own head on the scored columns only (``completion_columns``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from hf_dpo.batching.attention import model_inputs
from hf_dpo.modeling.logprobs import (
    chunked_logits_token_logps,
    chunked_token_logps,
    ld_token_weights,
    sum_by_sequence,
)
from hf_dpo.modeling.unwrap import base_causal_lm, lm_head_is_sharded

logger = logging.getLogger("hf_dpo")

# Optional batch column (N,): per-completion-token weights of the summed log-probs (LD-DPO).
TOKEN_WEIGHT_KEY = "target_weight"


@dataclass(frozen=True)
class ChosenRejectedLogps:
    """One model's summed completion log-probs log π(y|x) and lengths |y| of B pairs, each (B,); on request
    the WPO weights w(y) = exp(1/|y| · Σ_t [log π(y_t) − log Σ_v π(v)²]) and the MoE router ``aux_loss``."""

    chosen_logps: torch.Tensor
    rejected_logps: torch.Tensor
    chosen_num_tokens: torch.Tensor
    rejected_num_tokens: torch.Tensor
    chosen_weights: torch.Tensor | None = None
    rejected_weights: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None

    @classmethod
    def split(cls, logps: torch.Tensor, num_tokens: torch.Tensor) -> ChosenRejectedLogps:
        """From per-sequence values ordered ``[chosen_1..B ; rejected_1..B]``, each (2B,)."""
        return cls(*logps.chunk(2), *num_tokens.chunk(2))


def add_ld_weights(batch: dict[str, Any], alpha: float) -> dict[str, Any]:
    """``batch`` with its LD-DPO token weights (``TOKEN_WEIGHT_KEY``) for α = ``alpha``."""
    weights = ld_token_weights(batch["target_seq"], batch["target_index"], batch["num_pairs"], alpha)
    return {**batch, TOKEN_WEIGHT_KEY: weights}


_HIDDEN_PATH_OK: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def uses_hidden_path(model: torch.nn.Module) -> bool:
    """True if log-probs can come from the final hidden state and a whole, plain linear LM head; decided once
    per model, by structural checks and a probe forward."""
    lm = base_causal_lm(model)
    if lm_head_is_sharded(model):
        return False
    if lm not in _HIDDEN_PATH_OK:
        head = lm.get_output_embeddings()
        config = getattr(lm, "config", None)
        ok = (
            type(head) is torch.nn.Linear
            and not any(getattr(config, k, None) for k in ("final_logit_softcapping", "logit_scale"))
            and hasattr(lm, "get_decoder")
            and "logits_to_keep" in inspect.signature(lm.forward).parameters
        )
        # Probe the bare model (never a DDP wrapper) on a few tokens: are its logits head(final hidden)?
        if ok:
            ids = torch.arange(1, 9, device=head.weight.device).unsqueeze(0) % head.weight.shape[0]
            with torch.no_grad(), _final_hidden(lm) as captured:
                logits = lm(input_ids=ids, use_cache=False, logits_to_keep=1).logits.float()
                mine = torch.nn.functional.linear(
                    captured["hidden"][:, -1:].to(head.weight.dtype), head.weight, head.bias
                )
            ok = bool((mine.float() - logits).abs().max() <= 1e-2 * logits.abs().max().clamp(min=1.0))
        if not ok:
            logger.info("hf_dpo: %s uses the full-logits log-prob path", type(lm).__name__)
        _HIDDEN_PATH_OK[lm] = ok
    return _HIDDEN_PATH_OK[lm]


@contextlib.contextmanager
def _final_hidden(lm: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Within: the decoder's final hidden states of each forward are captured as ``["hidden"]``."""
    captured: dict[str, torch.Tensor] = {}
    handle = lm.get_decoder().register_forward_hook(lambda m, a, out: captured.update(hidden=out[0]))
    try:
        yield captured
    finally:
        handle.remove()


def completion_columns(index: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The columns (K,) of an (R, T=width) batch that hold a scored position in any row, sorted, and the flat
    ``index`` (N,) into (R, T) remapped into the (R, K) logits that ``logits_to_keep=columns`` returns."""
    rows, columns = index // width, index % width
    keep, position = torch.unique(columns, sorted=True, return_inverse=True)
    return keep, rows * keep.numel() + position


def sequence_logps(
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    chunk_size: int = 1024,
    use_hidden: bool | None = None,
    *,
    wpo_weights: bool = False,
    output_router_logits: bool = False,
) -> ChosenRejectedLogps:
    """Summed log-probs and lengths of the chosen and rejected completions of the B pairs of a collated
    ``batch`` (weighted sums with a ``TOKEN_WEIGHT_KEY`` column). ``use_hidden``: force the hidden-state
    (True) or full-logits (False) path, None picks; ``wpo_weights`` / ``output_router_logits``: also return
    the WPO weights / the MoE model's ``aux_loss``."""
    inputs = model_inputs(model, batch)  # layout columns -> model kwargs (e.g. a 4D mask for prefix sharing)
    lm = base_causal_lm(model)
    config = getattr(lm, "config", None)
    if output_router_logits or hasattr(config and config.get_text_config(), "output_router_logits"):
        # MoE: ask for the router loss only when it is used; a config with it on would otherwise compute it
        # over the 2D mask, which is wrong (and a size error) in the packed and prefix-shared layouts
        inputs["output_router_logits"] = output_router_logits
    index, targets, seq = batch["target_index"], batch["target_ids"], batch["target_seq"]
    num_sequences = 2 * batch["num_pairs"]
    if use_hidden is None:
        use_hidden = uses_hidden_path(model)
    if use_hidden:  # the captured final hidden states and the LM head, applied at ``index`` only
        with _final_hidden(lm) as captured:
            output = model(**inputs, use_cache=False, logits_to_keep=1)
        hidden = captured["hidden"].flatten(0, 1)[index]
        head = lm.get_output_embeddings()
        token_logps = chunked_token_logps(hidden, head.weight, targets, head.bias, chunk_size, wpo_weights)
    else:  # the model's own logits (its head gathered in the forward under FSDP / ZeRO-3), scored columns
        kwargs = {}
        if "logits_to_keep" in inspect.signature(lm.forward).parameters:
            kwargs["logits_to_keep"], index = completion_columns(index, inputs["input_ids"].shape[1])
        output = model(**inputs, use_cache=False, **kwargs)
        logits = output.logits.flatten(0, 1)[index]
        token_logps = chunked_logits_token_logps(logits, targets, chunk_size, wpo_weights)
    if wpo_weights:
        token_logps, log_sum_sq = token_logps
    counts = sum_by_sequence(torch.ones_like(token_logps), seq, num_sequences)
    weights = batch.get(TOKEN_WEIGHT_KEY)
    # The layouts number sequences [chosen_1..B ; rejected_1..B] (target_seq), so halving splits the pairs.
    sums = sum_by_sequence(token_logps if weights is None else token_logps * weights, seq, num_sequences)
    record = ChosenRejectedLogps.split(sums, counts)
    if wpo_weights:
        with torch.no_grad():
            mean = sum_by_sequence(token_logps - log_sum_sq, seq, num_sequences) / counts.clamp(min=1)
            chosen, rejected = torch.exp(mean).chunk(2)
        record = replace(record, chosen_weights=chosen, rejected_weights=rejected)
    if output_router_logits:
        aux_loss = getattr(output, "aux_loss", None)
        if aux_loss is None:
            raise ValueError(
                f"{type(lm).__name__} returned no aux_loss with "
                "output_router_logits=True; the router auxiliary loss needs a Mixture-of-Experts model. "
                "Set router_aux_loss_coef=0."
            )
        record = replace(record, aux_loss=aux_loss)
    return record
