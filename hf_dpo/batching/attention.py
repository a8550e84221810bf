"""Attention-backend facts and masks for the padding-free layouts (see ``hf_dpo.batching.layouts``).

``MaskForm`` is how a layout's attention structure reaches the model; ``model_inputs`` builds the
prefix-shared 4D mask (tensor or flex_attention ``BlockMask``, both passed through unchanged by transformers'
``masking_utils``) in the batch's form. Packed rows need no mask: transformers detects packed sequences from
``position_ids`` that restart at 0 when no 2D ``attention_mask`` is given.
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
CUSTOM_MASK_BACKENDS = (*DENSE_MASK_BACKENDS, "flex_attention")  # flex_attention takes a BlockMask


def attention_backend(model: torch.nn.Module) -> str:
    """``config._attn_implementation`` of the (unwrapped) model; ``"eager"`` when unset."""
    config = getattr(base_causal_lm(model), "config", None)
    return getattr(config, "_attn_implementation", None) or "eager"


def is_varlen_backend(backend: str) -> bool:
    """Flash-attention kernels (built-in or hub ``kernels``) that unpad packed rows from ``position_ids``."""
    return "flash" in backend


def _uses_masking_utils(model: torch.nn.Module) -> bool:
    """True if the model builds masks with ``transformers.masking_utils`` (packing, 4D pass-through)."""
    mro = type(base_causal_lm(model)).__mro__
    return any(hasattr(sys.modules.get(cls.__module__), "create_causal_mask") for cls in mro)


def _has_sliding_layers(model: torch.nn.Module) -> bool:
    config = getattr(base_causal_lm(model), "config", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return any(t != "full_attention" for t in layer_types)
    return bool(getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True))


def layout_support(model: torch.nn.Module) -> dict[str, str | None]:
    """``{layout name: None if exact for this model, else the reason it is not}``."""
    backend = attention_backend(model)
    model_name = type(base_causal_lm(model)).__name__
    takes_mask = backend in CUSTOM_MASK_BACKENDS and _uses_masking_utils(model)
    support: dict[str, str | None] = {"padded": None, "packed": None, "prefix_shared": None}
    if not (is_varlen_backend(backend) or takes_mask):
        support["packed"] = (
            f"attention backend {backend!r} of {model_name} cannot isolate packed sequences "
            "(needs sdpa, eager, flex_attention or flash_attention_* with transformers' masking_utils)"
        )
    if not takes_mask:
        support["prefix_shared"] = (
            f"prefix_shared needs a custom 4D attention mask, which attention backend {backend!r} of "
            f"{model_name} does not accept; load the model with "
            "attn_implementation='flex_attention', 'sdpa' or 'eager', or use batch_layout='packed'"
        )
    elif _has_sliding_layers(model):
        support["prefix_shared"] = (
            "prefix_shared's 4D mask would replace the model's sliding-window masks; "
            "use batch_layout='packed'"
        )
    return support


def prefix_shared_mask(segment_ids: torch.Tensor, branch_ids: torch.Tensor) -> torch.Tensor:
    """(R, 1, T, T) bool, True where q may attend k: same pair, k <= q, k a prompt token or in q's branch.
    Padding (segment -1) attends to earlier padding, so no query row is fully masked."""
    seg_q, seg_k = segment_ids.unsqueeze(-1), segment_ids.unsqueeze(-2)
    br_q, br_k = branch_ids.unsqueeze(-1), branch_ids.unsqueeze(-2)
    length = segment_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    mask = (seg_q == seg_k) & causal & ((br_k == PROMPT) | (br_k == br_q))
    return mask.unsqueeze(1)


def prefix_shared_block_mask(segment_ids: torch.Tensor, branch_ids: torch.Tensor) -> Any:
    """``prefix_shared_mask`` as a flex_attention ``BlockMask`` (B=R, H=1 broadcast, T x T) on the ids' device
    (``create_block_mask`` compiled on CUDA)."""
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
    """How a batch's attention structure is handed to the model."""

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
    """The form of the prefix-shared custom mask for ``model``'s backend; ``ValueError`` if it has none."""
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
    """Mark the rows and length dims of every (R, T) / (R, 1, T, T) input dynamic for ``torch.compile``."""
    for tensor in inputs.values():
        if isinstance(tensor, torch.Tensor):
            for dim in (0, 1) if tensor.dim() == 2 else (0, 2, 3):
                torch._dynamo.maybe_mark_dynamic(tensor, dim)
    return inputs
