"""Attention-backend facts and masks for the padding-free layouts (see ``hf_dpo.batching.layouts``).

- ``attention_backend(model)``: the model's ``config._attn_implementation`` (``sdpa``, ``eager``, ...).
- ``layout_support(model)``: which batch layouts the model and its backend compute exactly, with reasons.
- ``model_inputs(model, batch)``: the keyword arguments for the model call; for the prefix-shared layout it
  turns the compact ``prefix_segment_ids``/``prefix_branch_ids`` columns into the 4D attention mask the
  backend expects (boolean for sdpa, additive float for eager), built on the batch's device.

Packed rows need no mask: transformers 5.x detects packed sequences from ``position_ids`` that restart at 0
when no 2D ``attention_mask`` is given (``masking_utils.find_packed_sequence_indices`` for sdpa / eager /
flex_attention; ``position_ids``-based varlen kernels for flash_attention_*, batch size 1 only).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch

from hf_dpo.modeling.unwrap import base_causal_lm

# Keys a layout may put in a batch that are model inputs as they are.
MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "position_ids")
# Prefix-shared columns: pair index of each token within its row (-1 for padding), and its branch.
PREFIX_SEGMENT_KEY, PREFIX_BRANCH_KEY = "prefix_segment_ids", "prefix_branch_ids"
PROMPT, CHOSEN, REJECTED = 0, 1, 2

DENSE_MASK_BACKENDS = ("sdpa", "eager")  # accept a custom 4D mask as it is
BLOCK_SPARSE_BACKENDS = ("flex_attention",)  # packed detection builds a block mask


def attention_backend(model: torch.nn.Module) -> str:
    """``config._attn_implementation`` of the (unwrapped) model; ``"eager"`` when unset."""
    config = getattr(base_causal_lm(model), "config", None)
    return getattr(config, "_attn_implementation", None) or "eager"


def is_varlen_backend(backend: str) -> bool:
    """Flash-attention kernels (built-in or hub ``kernels``) that unpad packed rows from ``position_ids``."""
    return "flash" in backend


def _uses_masking_utils(model: torch.nn.Module) -> bool:
    """True if the model builds masks with ``transformers.masking_utils`` (packing, 4D pass-through)."""
    for cls in type(base_causal_lm(model)).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and hasattr(module, "create_causal_mask"):
            return True
    return False


def _has_sliding_layers(model: torch.nn.Module) -> bool:
    config = getattr(base_causal_lm(model), "config", None)
    layer_types = getattr(config, "layer_types", None) or ()
    if any(t != "full_attention" for t in layer_types):
        return True
    return (
        bool(getattr(config, "sliding_window", None))
        and getattr(config, "use_sliding_window", True)
        and (not layer_types)
    )


def layout_support(model: torch.nn.Module) -> dict[str, str | None]:
    """``{layout name: None if exact for this model, else the reason it is not}``."""
    backend = attention_backend(model)
    masking = _uses_masking_utils(model)
    support: dict[str, str | None] = {"padded": None}
    if is_varlen_backend(backend):
        support["packed"] = None
    elif backend in DENSE_MASK_BACKENDS + BLOCK_SPARSE_BACKENDS and masking:
        support["packed"] = None
    else:
        support["packed"] = (
            f"attention backend {backend!r} of {type(base_causal_lm(model)).__name__} cannot isolate packed "
            "sequences "
            "(needs sdpa, eager, flex_attention or flash_attention_* with transformers' masking_utils)"
        )
    if backend not in DENSE_MASK_BACKENDS or not masking:
        support["prefix_shared"] = (
            f"prefix_shared needs a custom 4D attention mask, which attention backend {backend!r} of "
            f"{type(base_causal_lm(model)).__name__} does not accept; load the model with "
            "attn_implementation='sdpa' "
            "or 'eager', or use batch_layout='packed'"
        )
    elif _has_sliding_layers(model):
        support["prefix_shared"] = (
            "prefix_shared's 4D mask would replace the model's sliding-window masks; "
            "use batch_layout='packed'"
        )
    else:
        support["prefix_shared"] = None
    return support


def prefix_shared_mask(segment_ids: torch.Tensor, branch_ids: torch.Tensor) -> torch.Tensor:
    """(R, 1, T, T) boolean mask, True where query q may attend key k.

    q attends k iff both belong to the same pair of the row, k is not after q in the row, and k is a prompt
    token or in q's own branch (chosen never sees rejected and vice versa). Padding (segment -1) attends only
    to earlier padding, so no query row is fully masked.
    """
    seg_q, seg_k = segment_ids.unsqueeze(-1), segment_ids.unsqueeze(-2)
    br_q, br_k = branch_ids.unsqueeze(-1), branch_ids.unsqueeze(-2)
    length = segment_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    mask = (seg_q == seg_k) & causal & ((br_k == PROMPT) | (br_k == br_q))
    return mask.unsqueeze(1)


def model_inputs(model: torch.nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model-call keyword arguments of a collated batch, in the form the model's backend expects."""
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    if PREFIX_SEGMENT_KEY not in batch:
        return inputs
    backend = attention_backend(model)
    reason = layout_support(model)["prefix_shared"]
    if reason is not None:
        raise ValueError(f"this batch uses the prefix_shared layout, but {reason}")
    mask = prefix_shared_mask(batch[PREFIX_SEGMENT_KEY], batch[PREFIX_BRANCH_KEY])
    if backend == "eager":  # eager adds the mask to the scores
        dtype = next(base_causal_lm(model).parameters()).dtype
        dtype = dtype if dtype.is_floating_point else torch.float32
        mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            ~mask, torch.finfo(dtype).min
        )
    inputs["attention_mask"] = mask
    return inputs
