"""PEFT adapters around the policy: wrapping (LoRA / QLoRA), checks, and the merged-model export."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel

logger = logging.getLogger("hf_dpo")


def wants_quantization(model_init_kwargs: dict[str, Any] | None) -> bool:
    """True if ``model_init_kwargs`` asks ``from_pretrained`` for a bitsandbytes 4-/8-bit base (QLoRA)."""
    kwargs = model_init_kwargs or {}
    qconfig = kwargs.get("quantization_config")
    if qconfig is None:
        return any(kwargs.get(k) for k in ("load_in_4bit", "load_in_8bit"))
    if isinstance(qconfig, dict):
        return bool(qconfig.get("load_in_4bit") or qconfig.get("load_in_8bit"))
    return type(qconfig).__name__ == "BitsAndBytesConfig"


def check_quantization_support(model_init_kwargs: dict[str, Any] | None) -> None:
    """Raise a clear error if a bitsandbytes base is requested where bitsandbytes or a GPU is missing."""
    if not wants_quantization(model_init_kwargs):
        return
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ImportError(
            "model_init_kwargs asks for a bitsandbytes-quantized base (QLoRA), but bitsandbytes is not "
            "installed. Fix: `pip install bitsandbytes` on a machine with a CUDA GPU, or drop "
            "quantization_config to train LoRA on a float base."
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            "model_init_kwargs asks for a bitsandbytes-quantized base (QLoRA), which needs a CUDA GPU, and "
            "none is available. Fix: run on a GPU, or drop quantization_config to train LoRA on a float base."
        )


def is_quantized(model: torch.nn.Module) -> bool:
    model = extract_model_from_parallel(model)
    in_kbit = any(getattr(model, flag, False) for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit"))
    return in_kbit or getattr(model, "hf_quantizer", None) is not None


def prepare_peft_model(
    model: torch.nn.Module, peft_config: Any, gradient_checkpointing: bool
) -> tuple[Any, bool]:
    """Wrap ``model`` for adapter training: a new adapter from ``peft_config`` (a quantized base prepared for
    k-bit training first), or a ``PeftModel`` as is. Returns ``(model, fresh_adapter)``."""
    try:
        from peft import PeftModel, get_peft_model, prepare_model_for_kbit_training
    except ImportError:
        if peft_config is not None:
            raise ImportError("peft_config needs the peft package: `pip install peft`") from None
        return model, False
    if isinstance(model, PeftModel):
        if peft_config is not None:
            raise ValueError(
                "model is already a PeftModel and peft_config was also given. Pass peft_config=None to keep "
                "training the existing adapter, or pass the base model (e.g. model.merge_and_unload()) with "
                "peft_config to train a new one."
            )
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                "the PeftModel has no trainable parameters (PeftModel.from_pretrained loads adapters frozen "
                "by default), so its adapter would never train. Fix: load it with "
                "PeftModel.from_pretrained(base, path, is_trainable=True)."
            )
    elif peft_config is not None:
        if is_quantized(model):
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        model = get_peft_model(model, peft_config)
    else:
        if is_quantized(model):
            raise ValueError(
                "the model is 4-/8-bit quantized and cannot be fully fine-tuned; pass peft_config (e.g. "
                "LoraConfig(target_modules='all-linear')) to train adapters on it (QLoRA)"
            )
        return model, False
    # so gradients reach the adapters through re-entrant checkpointed blocks with frozen inputs
    if gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()
    return model, peft_config is not None  # a PeftModel is kept only with peft_config=None


def save_merged_model(model: torch.nn.Module, output_dir: str, tokenizer: Any = None) -> str:
    """Write ``model``'s base with its active adapter merged in (on a copy); returns ``output_dir``."""
    from hf_dpo.reference.policies import REFERENCE_ADAPTER

    peft_model = extract_model_from_parallel(model)
    if is_quantized(peft_model):
        raise ValueError(
            "save_merged_model cannot merge into a 4-/8-bit base; the adapter was saved. Merge offline: load "
            "the base in bf16/fp32, then PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()"
        )
    merged = copy.deepcopy(peft_model)
    if REFERENCE_ADAPTER in merged.peft_config:
        merged.delete_adapter(REFERENCE_ADAPTER)
    merged = merged.merge_and_unload()
    os.makedirs(output_dir, exist_ok=True)
    merged.save_pretrained(output_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir)
    logger.info("saved the merged model to %s", output_dir)
    return output_dir
