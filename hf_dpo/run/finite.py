"""The NaN policy: a non-finite loss or gradient norm stops training before the optimizer step, and no
checkpoint is written from non-finite weights. Each error says what to change."""

from __future__ import annotations

import math
from typing import Any

import torch

_FIX = (
    "Lower learning_rate (or set max_grad_norm, e.g. 1.0), check for empty or extremely long completions, "
    "or use bf16 instead of fp16; then resume=auto from the last checkpoint or start over."
)


def check_loss(loss: torch.Tensor, step: int) -> None:
    """Raise ``FloatingPointError`` if the micro-batch loss is NaN/inf (before any optimizer step)."""
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"non-finite DPO loss ({loss.item()}) at step {step + 1}; training stopped before the optimizer "
            f"step, so the weights were not updated. {_FIX}"
        )


def check_grad_norm(grad_norm: Any, step: int, scaler: Any) -> None:
    """Raise ``FloatingPointError`` if the gradient norm of the optimizer step is NaN/inf. Under fp16 with
    a gradient scaler an inf norm is expected now and then (the scaler skips that step): let through."""
    if grad_norm is None or scaler is not None:
        return
    value = float(grad_norm.item() if hasattr(grad_norm, "item") else grad_norm)
    if not math.isfinite(value):
        raise FloatingPointError(
            f"non-finite gradient norm ({value}) at step {step + 1}; training stopped before the optimizer "
            f"step, so the weights were not updated. {_FIX}"
        )


def non_finite_parameters(model: torch.nn.Module) -> list[str]:
    """Names of the parameters holding NaN or inf (this process's shard under FSDP/DeepSpeed)."""
    return [n for n, p in model.named_parameters() if p.numel() and not torch.isfinite(p.detach()).all()]


def check_weights(model: torch.nn.Module, what: str) -> None:
    """Raise ``FloatingPointError`` instead of saving ``what`` from non-finite weights."""
    bad = non_finite_parameters(model)
    if bad:
        raise FloatingPointError(
            f"not saving {what}: {len(bad)} parameter(s) hold NaN/inf (e.g. {bad[0]}). {_FIX}"
        )
