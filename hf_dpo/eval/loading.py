"""Resolve what to evaluate (policy, reference, tokenizer, run settings) from a run directory, a checkpoint
inside one, a model or LoRA adapter directory, a ``.gguf`` file or a Hub id."""

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
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass
class RunInfo:
    """Where the weights are and what the training run recorded (empty ``config`` if no run dir)."""

    model_dir: str
    run_dir: Path | None
    config: dict[str, Any] = field(default_factory=dict)
    is_adapter: bool = False


def resolve_run(model_path: str) -> RunInfo:
    """Find the weights and the run's ``config.yaml`` for ``model_path``."""
    path = Path(model_path)
    if not path.exists():
        if model_path.startswith((".", "/", "~")) or model_path.endswith(".gguf"):
            raise FileNotFoundError(
                f"model_path does not exist: {model_path}. Pass a run directory "
                "(log_path of hf_dpo.train), a checkpoint, a model directory or a Hub id."
            )
        return RunInfo(model_path, None)  # a Hub id
    candidates = (path, path.parent) if path.is_dir() else ()
    run_dir = next((d for d in candidates if (d / RUN_CONFIG).is_file()), None)
    config = _read_run_config(run_dir / RUN_CONFIG) if run_dir is not None else {}
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
    base = model_name or info.config.get("model_name")
    if not base and info.is_adapter:
        base = json.loads((Path(info.model_dir) / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if base:
        return str(base)
    raise ValueError(
        f"no reference model for {info.model_dir}: no config.yaml with model_name beside it; pass "
        "model_name=<the base model the policy was trained from (hub id, directory or .gguf file)>"
    )


@dataclass
class ModelPair:
    """The trained policy, its reference (None: the policy with its PEFT adapters disabled) and tokenizer."""

    policy: torch.nn.Module
    reference: torch.nn.Module | None
    tokenizer: Any

    @contextlib.contextmanager
    def use(self, which: str) -> Iterator[torch.nn.Module]:
        """Yield the model to run as ``"policy"`` or ``"reference"``."""
        if which not in ("policy", "reference"):
            raise ValueError(f"which must be 'policy' or 'reference', got {which!r}")
        if which == "policy" or self.reference is not None:
            yield self.policy if which == "policy" else self.reference
        else:
            with self.policy.disable_adapter():
                yield self.policy


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
    reference = _load("reference model", base, lambda: load_causal_lm(base, dtype=dtype))
    if info.is_adapter:
        from peft import PeftModel

        adapter_dir = info.model_dir
        policy = _load("adapter", adapter_dir, lambda: PeftModel.from_pretrained(reference, adapter_dir))
        reference = None
    else:
        policy = _load("policy", info.model_dir, lambda: load_causal_lm(info.model_dir, dtype=dtype))
    own = info.model_dir if any(Path(info.model_dir, f).is_file() for f in TOKENIZER_FILES) else None
    tok_source = tokenizer_name or own or info.config.get("tokenizer_name") or base
    tokenizer = load_tokenizer(str(tok_source))
    target = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
