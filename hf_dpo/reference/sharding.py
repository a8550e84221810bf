"""Sharding the frozen reference model the way the policy is sharded (FSDP, DeepSpeed ZeRO-3), so that it
does not need the memory sharding saved; under DDP or one device it is just moved to the device."""

from __future__ import annotations

import copy
from typing import Any

import torch
from accelerate.utils import DistributedType


def prepare_frozen_model(model: torch.nn.Module, accelerator: Any) -> torch.nn.Module:
    """``model`` (frozen, eval mode) placed/sharded for ``accelerator``'s backend."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        import deepspeed

        # an engine without optimizer: ZeRO-3 partitions the weights; other stages keep them whole
        config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
        stage = config.get("zero_optimization", {}).get("stage", 0)
        for key in ("optimizer", "scheduler"):
            config.pop(key, None)
        if stage != 3:  # ZeRO-1/2 shard optimizer state only; nothing to shard here
            config["zero_optimization"] = {"stage": 0}
        hidden = getattr(getattr(model, "config", None), "hidden_size", None)
        if stage == 3 and hidden is not None:
            zero = config["zero_optimization"]
            for key, value in (
                ("reduce_bucket_size", hidden * hidden),
                ("stage3_param_persistence_threshold", 10 * hidden),
                ("stage3_prefetch_bucket_size", int(0.9 * hidden * hidden)),
            ):
                if zero.get(key) == "auto":
                    zero[key] = value
        engine, *_ = deepspeed.initialize(model=model, config=config)
        return engine.eval()
    if accelerator.distributed_type == DistributedType.FSDP:
        if getattr(accelerator, "is_fsdp2", False):
            from accelerate.utils.fsdp_utils import fsdp2_prepare_model
            from torch.distributed.fsdp import FSDPModule

            model = fsdp2_prepare_model(accelerator, model).eval()
            # free the gathered parameters when the forward ends: FSDP2 and accelerate keep the root and
            # embedding/LM-head units whole for a backward that the frozen reference never runs
            units = [m for m in model.modules() if isinstance(m, FSDPModule)]

            def reshard(module: torch.nn.Module, args: Any, output: Any) -> None:
                for unit in units:
                    unit.reshard()

            model.register_forward_hook(reshard)
            return model
        prepared = accelerator.prepare_model(model)  # FSDP1 wraps even when no parameter is trainable
        if prepared in accelerator._models:
            accelerator._models.remove(prepared)  # not part of the training state (checkpoints)
        return prepared.eval()
    return model.to(accelerator.device)
