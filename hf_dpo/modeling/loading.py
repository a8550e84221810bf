"""Loading policies: hub ids, local directories and GGUF files; dropout switch-off."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

logger = logging.getLogger("hf_dpo")


def load_causal_lm(name_or_path: str, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` for a hub id, a local directory, or a ``.gguf`` file.

    GGUF weights are de-quantized to float on load; the leftover quantization markers (which make
    ``Trainer`` refuse to fine-tune) are cleared.
    """
    if name_or_path.endswith(".gguf"):
        if not os.path.isfile(name_or_path):
            raise FileNotFoundError(f"GGUF file not found: {name_or_path}")
        kwargs.setdefault("dtype", torch.float32)
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(os.path.abspath(name_or_path)), gguf_file=os.path.basename(name_or_path), **kwargs
        )
        clear_dequantized_markers(model)
        return model
    if (
        os.path.sep in name_or_path
        and not os.path.exists(name_or_path)
        and name_or_path.startswith((".", "/"))
    ):
        raise FileNotFoundError(f"model path does not exist: {name_or_path}")
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)


def load_tokenizer(name_or_path: str) -> Any:
    """``AutoTokenizer`` for a hub id or directory; for a ``.gguf`` file, the tokenizer files beside it when
    there are any, else the tokenizer embedded in the GGUF."""
    if not name_or_path.endswith(".gguf"):
        return AutoTokenizer.from_pretrained(name_or_path)
    directory, file = os.path.split(os.path.abspath(name_or_path))
    if any(os.path.exists(os.path.join(directory, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(directory)
    return AutoTokenizer.from_pretrained(directory, gguf_file=file)


def clear_dequantized_markers(model: PreTrainedModel) -> None:
    """Drop ``quantization_config`` / quantizer flags from a model whose weights are plain floats."""
    if any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16) for p in model.parameters()):
        raise ValueError("model has non-float weights; it is really quantized and cannot be fully fine-tuned")
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr, value in (("hf_quantizer", None), ("is_quantized", False), ("quantization_method", None)):
        if hasattr(model, attr):
            setattr(model, attr, value)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in ``model`` to 0 (``nn.Dropout`` modules and attention dropout)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for attr in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)
