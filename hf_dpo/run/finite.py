"""The NaN policy: an optimizer step with a non-finite gradient norm is skipped, ``max_nonfinite_steps`` in a
row stop training, and no checkpoint is written from non-finite weights."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

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


@dataclass
class NonFiniteSteps:
    """Skips an optimizer step whose (global) gradient norm is NaN/inf; ``patience`` consecutive skips are
    tolerated, one more raises ``FloatingPointError``. A gradient scaler skips them itself."""

    patience: int
    consecutive: int = 0
    skipped: int = 0

    def skip(self, grad_norm: Any, step: int, scaler: Any) -> bool:
        """True when the optimizer step must leave the weights as they are."""
        if grad_norm is None or scaler is not None:
            return False
        value = float(grad_norm.item() if hasattr(grad_norm, "item") else grad_norm)
        if math.isfinite(value):
            self.consecutive = 0
            return False
        self.consecutive += 1
        self.skipped += 1
        if self.consecutive > self.patience:
            raise FloatingPointError(
                f"non-finite gradient norm ({value}) at step {step + 1}, {self.consecutive} optimizer "
                f"step(s) in a row (max_nonfinite_steps={self.patience}); training stopped before the "
                f"optimizer step, so the weights were not updated. {_FIX}"
            )
        logger.warning(
            "non-finite gradient norm (%s) at step %d: optimizer step skipped, weights not updated (%d in a "
            "row; training stops after max_nonfinite_steps=%d)",
            *(value, step + 1, self.consecutive, self.patience),
        )
        return True


def check_weights(model: torch.nn.Module, what: str) -> None:
    """Raise ``FloatingPointError`` instead of saving ``what`` from NaN/inf weights (this process's shard)."""
    bad = [n for n, p in model.named_parameters() if p.numel() and not torch.isfinite(p.detach()).all()]
    if bad:
        raise FloatingPointError(
            f"not saving {what}: {len(bad)} parameter(s) hold NaN/inf (e.g. {bad[0]}). {_FIX}"
        )
