"""Reference sync (TR-DPO, Gorbatovski et al. 2024): every k optimizer steps, πref ← α·πθ + (1−α)·πref."""

from __future__ import annotations

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hf_dpo.reference.policies import FrozenCopyReference, ReferencePolicy


@torch.no_grad()
def mix_into_reference(reference: torch.nn.Module, policy: torch.nn.Module, alpha: float) -> None:
    """In place: every reference parameter ← α·policy + (1−α)·reference (matched by name; α=1 copies)."""
    policy_params = dict(extract_model_from_parallel(policy).named_parameters())
    for name, ref_param in reference.named_parameters():
        if name not in policy_params:
            raise ValueError(
                f"reference sync: the policy has no parameter {name!r}; the two models must match"
            )
        source = policy_params[name].detach().to(device=ref_param.device, dtype=ref_param.dtype)
        if source.shape != ref_param.shape:
            raise ValueError(
                f"reference sync: shape mismatch for {name!r}: {tuple(source.shape)} vs "
                f"{tuple(ref_param.shape)}"
            )
        ref_param.lerp_(source, alpha)  # ref + α·(policy − ref) = α·policy + (1−α)·ref


class RefSyncCallback(TrainerCallback):
    """Mixes the policy into the frozen reference model every ``sync_steps`` optimizer steps (all ranks)."""

    def __init__(self, reference: ReferencePolicy, alpha: float, sync_steps: int) -> None:
        if not isinstance(reference, FrozenCopyReference) or reference.model is None:
            raise ValueError(
                f"sync_ref_model=True needs a separate reference model (full fine-tuning), but the reference "
                f"is {type(reference).__name__}: with PEFT the reference is the adapter-free or initial-"
                "adapter model, and with precompute_ref_log_probs the reference log-probs are fixed. Set "
                "sync_ref_model=False, or train without peft_config / precompute_ref_log_probs."
            )
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"ref_model_mixup_alpha must be in (0, 1], got {alpha}")
        if sync_steps < 1:
            raise ValueError(f"ref_model_sync_steps must be >= 1, got {sync_steps}")
        self.reference, self.alpha, self.sync_steps = reference, alpha, sync_steps

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: torch.nn.Module | None = None,
        **kwargs,
    ) -> None:
        if model is not None and state.global_step > 0 and state.global_step % self.sync_steps == 0:
            mix_into_reference(self.reference.model, model, self.alpha)
