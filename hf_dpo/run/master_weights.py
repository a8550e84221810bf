"""float32 master weights for float16 parameters: the optimizer updates a float32 copy and writes it back.

In float16, grad² (below 6e-8 for |grad| < 2.4e-4) and Adam's ``eps=1e-8`` round to 0, so
``exp_avg / sqrt(exp_avg_sq)`` writes inf into the weight; updates under 1/2048 of a weight round away."""

from __future__ import annotations

from typing import Any

import torch


def use_float32_master_weights(optimizer: torch.optim.Optimizer) -> int:
    """Point ``optimizer`` (before its first step) at float32 copies of its float16 parameters; each step
    reads the float16 gradients into them and writes them back. Returns how many parameters got a copy."""
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
