"""Attention-backend facts and masks for the padding-free layouts (see ``hf_dpo.batching.layouts``).

- ``attention_backend(model)``: the model's ``config._attn_implementation`` (``sdpa``, ``eager``, ...).
- ``layout_support(model)``: which batch layouts the model and its backend compute exactly, with reasons.
- ``MaskForm``: the form in which a layout's attention structure reaches the model: ``NONE`` (the layout's
  own inputs suffice), ``BOOLEAN_4D`` (sdpa), ``ADDITIVE_4D`` (eager) or ``BLOCK_MASK`` (flex_attention:
  a ``torch.nn.attention.flex_attention.BlockMask``, so fully masked 128x128 tiles are skipped).
  ``decide_mask_form(model)`` picks the form of the prefix-shared layout's custom mask for one model;
  ``choose_layout`` decides it once for its models and the layout stamps it on every batch
  (``MASK_FORM_KEY``).
- ``model_inputs(model, batch)``: the keyword arguments for the model call; for the prefix-shared layout it
  turns the compact ``prefix_segment_ids``/``prefix_branch_ids`` columns into the 4D attention mask in the
  batch's mask form (decided from ``model`` when the batch carries none), built on the batch's device, and
  marks the (rows, length) dims of the inputs dynamic for ``torch.compile`` (a new batch shape then does not
  recompile the model).

transformers (``masking_utils._preprocess_mask_arguments``) passes any 4D mask, tensor or ``BlockMask``,
through unchanged, and its flex_attention integration hands a ``BlockMask`` to ``flex_attention`` as the
block mask.

Packed rows need no mask: transformers 5.x detects packed sequences from ``position_ids`` that restart at 0
when no 2D ``attention_mask`` is given (``masking_utils.find_packed_sequence_indices`` for sdpa / eager /
flex_attention; ``position_ids``-based varlen kernels for flash_attention_*, batch size 1 only).
"""

from __future__ import annotations

import enum
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
MASK_FORM_KEY = "mask_form"  # batch key of the decided ``MaskForm`` (absent: decide from the model)

DENSE_MASK_BACKENDS = ("sdpa", "eager")  # accept a custom 4D mask as it is
BLOCK_SPARSE_BACKENDS = ("flex_attention",)  # take a BlockMask; packed detection builds one too
CUSTOM_MASK_BACKENDS = DENSE_MASK_BACKENDS + BLOCK_SPARSE_BACKENDS


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
    if backend not in CUSTOM_MASK_BACKENDS or not masking:
        support["prefix_shared"] = (
            f"prefix_shared needs a custom 4D attention mask, which attention backend {backend!r} of "
            f"{type(base_causal_lm(model)).__name__} does not accept; load the model with "
            "attn_implementation='flex_attention', 'sdpa' or 'eager', or use batch_layout='packed'"
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


def prefix_shared_block_mask(segment_ids: torch.Tensor, branch_ids: torch.Tensor) -> Any:
    """``prefix_shared_mask`` as a flex_attention ``BlockMask`` (B=R, H=1 broadcast, T x T), built on the ids'
    device from a ``mask_mod`` over the (R, T) segment and branch ids; no (T, T) tensor is materialised
    per row on CUDA, where ``create_block_mask`` is compiled."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, q, k):  # the same predicate as prefix_shared_mask, one (q, k) at a time
        same_pair = segment_ids[b, q] == segment_ids[b, k]
        visible = (branch_ids[b, k] == PROMPT) | (branch_ids[b, k] == branch_ids[b, q])
        return same_pair & (k <= q) & visible

    rows, length = segment_ids.shape
    device = segment_ids.device
    compiled = device.type == "cuda"
    return create_block_mask(mask_mod, rows, None, length, length, device=device, _compile=compiled)


class MaskForm(enum.Enum):
    """How a batch's attention structure is handed to the model. A new form (e.g. a flex_attention
    ``BlockMask``) is a new member, a case in ``decide_mask_form`` and one in ``build``."""

    NONE = "none"  # the layout's inputs say it all: a 2D attention_mask (padded) or position_ids (packed)
    BOOLEAN_4D = "boolean_4d"  # (R, 1, T, T) bool, True where q may attend k: sdpa
    ADDITIVE_4D = "additive_4d"  # (R, 1, T, T) float, 0 or the dtype's min, added to the scores: eager
    BLOCK_MASK = "block_mask"  # flex_attention BlockMask (R, 1, T, T): fully masked tiles are skipped

    def build(self, segment_ids: torch.Tensor, branch_ids: torch.Tensor, dtype: torch.dtype) -> Any:
        """``prefix_shared_mask`` in this form; ``dtype``: the model's float dtype (additive form)."""
        if self is MaskForm.BLOCK_MASK:
            return prefix_shared_block_mask(segment_ids, branch_ids)
        mask = prefix_shared_mask(segment_ids, branch_ids)
        if self is MaskForm.BOOLEAN_4D:
            return mask
        if self is MaskForm.ADDITIVE_4D:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
                ~mask, torch.finfo(dtype).min
            )
        raise ValueError(f"mask form {self.value!r} has no custom mask to build")


_FORM_OF_BACKEND = {
    "sdpa": MaskForm.BOOLEAN_4D,
    "eager": MaskForm.ADDITIVE_4D,
    "flex_attention": MaskForm.BLOCK_MASK,
}


def decide_mask_form(model: torch.nn.Module) -> MaskForm:
    """The form of the prefix-shared custom mask for ``model``'s attention backend.

    Raises:
        ValueError: the backend cannot take the custom mask exactly (the reason names the fix).
    """
    reason = layout_support(model)["prefix_shared"]
    if reason is not None:
        raise ValueError(f"this batch uses the prefix_shared layout, but {reason}")
    return _FORM_OF_BACKEND[attention_backend(model)]


def model_inputs(model: torch.nn.Module, batch: Mapping[str, Any]) -> dict[str, Any]:
    """The model-call keyword arguments of a collated batch, in the form the model's backend expects."""
    inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
    if PREFIX_SEGMENT_KEY not in batch:
        return _dynamic_rows_and_length(inputs)
    form = batch.get(MASK_FORM_KEY) or decide_mask_form(model)
    backend = attention_backend(model)
    if _FORM_OF_BACKEND.get(backend) is not form:  # a batch laid out for another model
        raise ValueError(
            f"this batch's attention mask form {form.value!r} was decided for other models than this "
            f"{type(base_causal_lm(model)).__name__} (attention backend {backend!r}); build the collator "
            "with choose_layout(<the models that will score its batches>)"
        )
    dtype = next(base_causal_lm(model).parameters()).dtype
    dtype = dtype if dtype.is_floating_point else torch.float32
    inputs["attention_mask"] = form.build(batch[PREFIX_SEGMENT_KEY], batch[PREFIX_BRANCH_KEY], dtype)
    return _dynamic_rows_and_length(inputs)


def _dynamic_rows_and_length(inputs: dict[str, Any]) -> dict[str, Any]:
    """Mark the rows and length dims of every input tensor ((R, T), or (R, 1, T, T) masks) dynamic, so a
    ``torch.compile``d model compiles one graph for all batch shapes instead of one per shape (a no-op when
    nothing is compiled). Size-1 rows still get their own graph: at most two after warm-up."""
    for tensor in inputs.values():
        if isinstance(tensor, torch.Tensor):
            for dim in (0, 1) if tensor.dim() == 2 else (0, 2, 3):
                torch._dynamo.maybe_mark_dynamic(tensor, dim)
    return inputs
