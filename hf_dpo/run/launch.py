"""Launched as several processes (``torchrun``, ``accelerate launch``): make sure they form one
data-parallel job instead of N independent trainings."""

from __future__ import annotations

import os
from typing import Any

import torch


def launched_world_size() -> int:
    """The process count the launcher announced (``WORLD_SIZE``; 1 when not launched)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def cpu_only_multiprocess_launch() -> bool:
    """Several processes launched on a machine without an accelerator: they can only be a CPU (gloo) job,
    which ``TrainingArguments`` sets up only with ``use_cpu=True``."""
    if launched_world_size() <= 1:
        return False
    has_accelerator = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    return not has_accelerator and not torch.backends.mps.is_available()


def distributed_mismatch(args: Any) -> str | None:
    """Why this process would train on its own although the launcher started several (None if fine)."""
    launched = launched_world_size()
    if launched <= 1 or args.world_size == launched:
        return None
    state = args.distributed_state
    kind = state.distributed_type.value if state is not None else "none"
    return (
        f"launched as {launched} processes (WORLD_SIZE={launched}) but the Trainer set up world size "
        f"{args.world_size} (distributed type {kind}), so each process would train on its own. On a machine "
        "without GPUs add use_cpu=true (gloo data parallelism); with an accelerate FSDP/DeepSpeed config, "
        "check that the backend is installed and the config's distributed_type matches the machine."
    )
