"""The bare ``*ForCausalLM`` inside wrappers, and whether its LM head is sharded (imports no hf_dpo)."""

from __future__ import annotations

import torch
from accelerate.utils import extract_model_from_parallel


def base_causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The ``*ForCausalLM`` module inside DDP/DeepSpeed, ``torch.compile`` and PEFT wrappers."""
    model = extract_model_from_parallel(model, keep_torch_compile=False)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def lm_head_is_sharded(model: torch.nn.Module) -> bool:
    """True under FSDP (1 or 2) or DeepSpeed ZeRO-3: the LM-head weight is a shard outside the forward."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    head = base_causal_lm(model).get_output_embeddings()
    weight = getattr(head, "weight", None)
    if weight is not None and (hasattr(weight, "ds_id") or type(weight).__name__ == "DTensor"):
        return True  # ZeRO-3 partitioned parameter / FSDP2 DTensor
    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())
