"""float32 master weights for float16 parameters: the optimizer updates a float32 copy and writes it back.

In float16, the optimizer's second moment (grad², below 6e-8 for any gradient under 2.4e-4) and Adam's
``eps=1e-8`` both round to 0, so ``exp_avg / sqrt(exp_avg_sq)`` divides a non-zero first moment by 0 and
writes inf into the weight, from a finite gradient; updates under 1/2048 of a weight also round away. Mixed
precision avoids both by keeping float32 master weights; this does the same for float16 weights."""

from __future__ import annotations

from typing import Any

import torch


def use_float32_master_weights(optimizer: torch.optim.Optimizer) -> int:
    """Point ``optimizer`` at float32 copies of its float16 parameters, before its first step. Each step
    then reads the float16 gradients into the copies (none stays none: a skipped step) and writes the
    updated copies back to the float16 weights (after a resume, the copies start from the saved float16
    weights). Returns how many parameters got a copy."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for group in optimizer.param_groups:
        for i, param in enumerate(group["params"]):
            if param.dtype == torch.float16:
                master = param.detach().clone().float().requires_grad_(True)
                group["params"][i] = master
                pairs.append((param, master))
    if not pairs:
        return 0

    def read_grads(*_: Any) -> None:
        for param, master in pairs:
            master.grad = None if param.grad is None else param.grad.detach().float()

    @torch.no_grad()
    def write_weights(*_: Any) -> None:
        for param, master in pairs:
            param.copy_(master)
            master.grad = None

    optimizer.register_step_pre_hook(read_grads)
    optimizer.register_step_post_hook(write_weights)
    return len(pairs)
