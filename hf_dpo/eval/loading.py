"""Resolve what to evaluate: the trained policy, its reference and tokenizer, and the run's settings.

``model_path`` may be a run directory written by ``hf_dpo.train`` (``config.yaml`` + ``final/``), a
checkpoint inside one (``config.yaml`` in its parent), any model directory, a LoRA adapter directory
(``adapter_config.json``), a ``.gguf`` file or a Hub id.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from hf_dpo.modeling.loading import disable_dropout, load_causal_lm, load_tokenizer

logger = logging.getLogger("hf_dpo")

RUN_CONFIG = "config.yaml"
FINAL_DIR = "final"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class RunInfo:
    """Where the weights are and what the training run recorded (empty ``config`` if no run dir)."""

    model_dir: str
    run_dir: Path | None
    config: dict[str, Any] = field(default_factory=dict)
    is_adapter: bool = False


def resolve_run(model_path: str) -> RunInfo:
    """Find the weights and the run's ``config.yaml`` for ``model_path`` (see module docstring)."""
    path = Path(model_path)
    if not path.exists():
        if model_path.startswith((".", "/", "~")) or model_path.endswith(".gguf"):
            raise FileNotFoundError(
                f"model_path does not exist: {model_path}. Pass a run directory "
                "(log_path of hf_dpo.train), a checkpoint, a model directory or a Hub id."
            )
        return RunInfo(model_path, None)  # a Hub id
    run_dir = (
        next((d for d in (path, path.parent) if (d / RUN_CONFIG).is_file()), None) if path.is_dir() else None
    )
    config: dict[str, Any] = {}
    if run_dir is not None:
        config = _read_run_config(run_dir / RUN_CONFIG)
    model_dir = path / FINAL_DIR if path.is_dir() and (path / FINAL_DIR).is_dir() else path
    if model_dir.is_dir() and not any((model_dir / f).exists() for f in ("config.json", ADAPTER_CONFIG)):
        raise FileNotFoundError(
            f"{model_dir} holds no model (no config.json or {ADAPTER_CONFIG}). Pass the run's log_path, its "
            "final/ directory or a checkpoint-N directory."
        )
    return RunInfo(str(model_dir), run_dir, config, (model_dir / ADAPTER_CONFIG).is_file())


def _read_run_config(path: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a mapping; ``ValueError`` naming the file if it is corrupt."""
    try:
        config = yaml.safe_load(path.read_text("utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(
            f"{path} is not valid YAML ({type(e).__name__}); restore it, or pass model_name=<base model> and "
            "evaluate the final/ or checkpoint-N directory itself"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} does not hold a mapping of key: value; restore the run's config.yaml")
    return config


def _load(what: str, path: str, load: Any) -> Any:
    """``load()``, with a truncated or corrupt weights file reported as ``ValueError`` naming ``path``."""
    try:
        return load()
    except (OSError, ValueError, ImportError):
        raise
    except Exception as e:  # safetensors / torch raise their own types for a cut-off file
        raise ValueError(
            f"cannot load the {what} from {path}: {type(e).__name__}: {e}. Its files look truncated or "
            "corrupt (an interrupted copy or save?); use another checkpoint or copy it again."
        ) from e


def base_model_name(info: RunInfo, model_name: str | None) -> str:
    """The reference model: ``model_name`` if given, else the run's ``model_name``, else the adapter base."""
    if model_name:
        return model_name
    if info.config.get("model_name"):
        return str(info.config["model_name"])
    if info.is_adapter:
        base = json.loads((Path(info.model_dir) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if base:
            return str(base)
    raise ValueError(
        f"no reference model for {info.model_dir}: no config.yaml with model_name beside it; pass "
        "model_name=<the base model the policy was trained from (hub id, directory or .gguf file)>"
    )


def _has_tokenizer(directory: str) -> bool:
    return any(
        Path(directory, f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    )


@dataclass
class ModelPair:
    """The trained policy, its reference and the tokenizer. ``reference=None`` means the reference is the
    policy itself with its PEFT adapters disabled (no second copy of the weights)."""

    policy: torch.nn.Module
    reference: torch.nn.Module | None
    tokenizer: Any

    @contextlib.contextmanager
    def use(self, which: str) -> Iterator[torch.nn.Module]:
        """Yield the model to run as ``"policy"`` or ``"reference"``."""
        if which == "policy":
            yield self.policy
        elif which == "reference":
            if self.reference is not None:
                yield self.reference
            else:
                with self.policy.disable_adapter():
                    yield self.policy
        else:
            raise ValueError(f"which must be 'policy' or 'reference', got {which!r}")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_models(
    model_path: str,
    model_name: str | None = None,
    tokenizer_name: str | None = None,
    dtype: str = "float32",
    device: str | None = None,
) -> tuple[ModelPair, RunInfo]:
    """Load policy, reference and tokenizer, in eval mode with dropout off, on ``device``."""
    info = resolve_run(model_path)
    base = base_model_name(info, model_name)
    kwargs = {"dtype": dtype}  # load_causal_lm resolves names such as "bfloat16"
    reference = _load("reference model", base, lambda: load_causal_lm(base, **kwargs))
    if info.is_adapter:
        from peft import PeftModel

        adapter_dir = info.model_dir
        policy = _load("adapter", adapter_dir, lambda: PeftModel.from_pretrained(reference, adapter_dir))
        reference = None
    else:
        policy = _load("policy", info.model_dir, lambda: load_causal_lm(info.model_dir, **kwargs))
    tok_source = tokenizer_name or (info.model_dir if _has_tokenizer(info.model_dir) else None)
    tok_source = tok_source or info.config.get("tokenizer_name") or base
    tokenizer = load_tokenizer(str(tok_source))
    target = torch.device(device) if device else default_device()
    for model in (policy, reference):
        if model is not None:
            disable_dropout(model)
            model.to(target).eval().requires_grad_(False)
    logger.info(
        "hf_dpo.eval: policy %s, reference %s, tokenizer %s",
        info.model_dir,
        "policy with adapters disabled" if reference is None else base,
        tok_source,
    )
    return ModelPair(policy, reference, tokenizer), info
