"""Loading policies: hub ids, local directories and GGUF files; dropout switch-off."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from hf_dpo.modeling.adapters import check_quantization_support

logger = logging.getLogger("hf_dpo")

DTYPE_NAMES = ("float32", "bfloat16", "float16", "auto")


def resolve_dtype(dtype: Any) -> Any:
    """``dtype`` of ``from_pretrained`` kwargs: a ``torch.dtype``, ``"auto"``, or a name such as
    ``"bfloat16"`` (also ``"torch.bfloat16"``, as YAML configs write it) turned into the ``torch.dtype``."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def load_causal_lm(name_or_path: str, **kwargs: Any) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` for a hub id, a local directory, or a ``.gguf`` file (its
    quantization markers cleared), in float32 unless ``dtype`` (or ``torch_dtype``) says otherwise. A
    bitsandbytes ``quantization_config`` (object or dict) is checked first."""
    check_quantization_support(kwargs)
    if isinstance(kwargs.get("quantization_config"), dict):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(**kwargs["quantization_config"])
    torch_dtype = kwargs.pop("torch_dtype", torch.float32)  # the older name; ``dtype`` wins over it
    kwargs["dtype"] = resolve_dtype(kwargs.get("dtype", torch_dtype))
    if name_or_path.endswith(".gguf"):
        if not os.path.isfile(name_or_path):
            raise FileNotFoundError(f"GGUF file not found: {name_or_path}")
        model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(os.path.abspath(name_or_path)), gguf_file=os.path.basename(name_or_path), **kwargs
        )
        if any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16) for p in model.parameters()):
            raise ValueError(
                "model has non-float weights; it is really quantized and cannot be fully fine-tuned"
            )
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        for attr, value in (("hf_quantizer", None), ("is_quantized", False), ("quantization_method", None)):
            if hasattr(model, attr):
                setattr(model, attr, value)
        return model
    is_local = os.path.sep in name_or_path and name_or_path.startswith((".", "/"))
    if is_local and not os.path.exists(name_or_path):
        raise FileNotFoundError(f"model path does not exist: {name_or_path}")
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)


def load_tokenizer(name_or_path: str, **kwargs: Any) -> Any:
    """``AutoTokenizer`` for a hub id or directory; for a ``.gguf`` file, the tokenizer files beside it, else
    the one embedded in the GGUF."""
    if not name_or_path.endswith(".gguf"):
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    directory, file = os.path.split(os.path.abspath(name_or_path))
    if any(os.path.exists(os.path.join(directory, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(directory, **kwargs)
    return AutoTokenizer.from_pretrained(directory, gguf_file=file, **kwargs)


def warn_if_low_precision_training(model: torch.nn.Module, has_fp32_master: bool = False) -> bool:
    """Log one warning (and return True) when trainable parameters are bf16 with no fp32 master copy."""
    if has_fp32_master or not any(p.requires_grad and p.dtype == torch.bfloat16 for p in model.parameters()):
        return False
    logger.warning(
        "hf_dpo: the trainable parameters are bfloat16 with no fp32 master copy: updates smaller than about "
        "1/256 of a weight (typical at DPO learning rates) are lost to rounding. Load the model in float32 "
        "(the default when DPOTrainer loads it by name) and train with bf16=True for mixed precision."
    )
    return True


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in ``model`` to 0 (``nn.Dropout`` modules and attention dropout)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for attr in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)


def load_for_training(
    model: PreTrainedModel | str,
    ref_model: PreTrainedModel | str | None,
    tokenizer: Any,
    args: Any,
    quantization_config: Any = None,
) -> tuple[PreTrainedModel, PreTrainedModel | None, Any]:
    """Load what is given by name (with ``args.model_init_kwargs`` and ``quantization_config``) and the
    tokenizer if none is given."""
    remote = {"trust_remote_code": True} if args.trust_remote_code else {}
    init_kwargs = {**remote, **(args.model_init_kwargs or {})}
    if quantization_config is not None:
        if not isinstance(model, str):
            raise ValueError(
                "quantization_config applies when DPOTrainer loads the model by name, but the model was "
                "passed already loaded. Fix: pass the model's name or path, or load it quantized yourself."
            )
        if "quantization_config" in init_kwargs:
            raise ValueError(
                "quantization_config was given both to DPOTrainer and in args.model_init_kwargs; keep one"
            )
        init_kwargs["quantization_config"] = quantization_config
    if isinstance(model, str):
        check_quantization_support(init_kwargs)
        tokenizer = tokenizer or load_tokenizer(model, **remote)
        model = load_causal_lm(model, **init_kwargs)
    if isinstance(ref_model, str):
        ref_model = load_causal_lm(ref_model, **init_kwargs)
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(model.name_or_path, **remote)
    if args.pad_token is not None:
        if args.pad_token not in tokenizer.get_vocab():
            raise ValueError(
                f"pad_token {args.pad_token!r} is not in the vocabulary of the {type(tokenizer).__name__}; "
                "give a token that exists (e.g. the EOS token), or add it to the tokenizer and resize the "
                "model's embeddings first."
            )
        tokenizer.pad_token = args.pad_token
        if getattr(model, "config", None) is not None:
            model.config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token so completions can end")
    return model, ref_model, tokenizer


def prepare_for_training(model: torch.nn.Module, ref_model: torch.nn.Module | None, args: Any) -> None:
    """Apply ``args`` to the loaded models: precision warning, ``save_merged_model`` check, dropout off."""
    has_fp32_master = bool(args.deepspeed) and bool(args.bf16 or args.fp16)  # DeepSpeed keeps one
    warn_if_low_precision_training(model, has_fp32_master=has_fp32_master)
    if args.save_merged_model and not hasattr(model, "merge_and_unload"):
        raise ValueError("save_merged_model=True needs a PEFT model (pass peft_config); set it to False")
    if args.disable_dropout:
        for m in (model, ref_model):
            if m is not None:
                disable_dropout(m)
