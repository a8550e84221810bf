"""The model card (``README.md``) of a trained DPO model: base model, data, settings, results, usage."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_dpo.run.console import format_value

# Config keys reported in the card's training table.
CARD_HYPERPARAMETERS = (
    "dpo_beta",
    "loss_type",
    "label_smoothing",
    "rpo_alpha",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "max_prompt_length",
    "precompute_ref_log_probs",
    "seed",
)
_RESULT_KEYS = (
    "eval_dpo_loss",
    "eval_accuracy",
    "eval_margin",
    "eval_chosen_reward",
    "eval_rejected_reward",
    "test/nll",
    "dpo_loss",
    "accuracy",
    "margin",
)


def render_model_card(
    config: Any,
    train_metrics: dict[str, float],
    eval_metrics: dict[str, float],
    adapter: bool = False,
    merged: bool = False,
    repo_id: str | None = None,
) -> str:
    """Markdown with YAML front matter for the Hub. Local paths (base model, data files) appear by their
    last component only, since the card is published with the model."""
    repo_id = repo_id or getattr(config, "hub_model_id", None)
    sections = [
        _front_matter(config, adapter),
        _summary(config, repo_id, adapter, merged),
        _training_table(config),
        _results(train_metrics, eval_metrics),
        _usage(repo_id or "path/to/this/model", adapter),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _front_matter(config: Any, adapter: bool) -> str:
    """The Hub metadata; ``base_model`` only for a Hub id (the Hub rejects paths there)."""
    base = str(config.model_name)
    data = ModelCardData(
        base_model=base if is_hub_model_id(base) else None,
        library_name="peft" if adapter else "transformers",
        tags=["dpo", "hf_dpo", "trl-compatible"] + (["lora"] if adapter else []),
        datasets=[config.dataset],
    )
    return f"---\n{data.to_yaml()}\n---"


def _summary(config: Any, repo_id: str | None, adapter: bool, merged: bool) -> str:
    """Title (the repo id, else the run name, else the log folder's name) and one sentence on the run."""
    base = str(config.model_name)
    title = repo_id or getattr(config, "run_name", None) or Path(str(config.log_path)).name
    source = f"`{base}`" if is_hub_model_id(base) else f"the local base model `{shareable_name(base)}`"
    what = "LoRA adapter" if adapter else ("LoRA-merged model" if merged else "model")
    return (
        f"# {title}\n\nA {what} trained from {source} with Direct Preference Optimization (DPO) using "
        f"hf_dpo on the `{config.dataset}` preference dataset."
    )


def _training_table(config: Any) -> str:
    """The reported hyperparameters, LoRA settings and dataset options."""
    lines = ["## Training", "", "| hyperparameter | value |", "| --- | --- |"]
    for key in CARD_HYPERPARAMETERS:
        value = getattr(config, key, None)
        if value is not None:
            lines.append(f"| {key} | {getattr(value, 'value', value)} |")
    if (peft := config.peft) is not None:
        lines.append(
            f"| LoRA | r={peft.r}, alpha={peft.lora_alpha}, dropout={peft.lora_dropout}, "
            f"target_modules={peft.target_modules} |"
        )
    if options := config.dataset_kwargs():  # local paths (data_files: always) by their last component
        shared = {
            k: _map_strings(v, _file_name if k == "data_files" else shareable_name)
            for k, v in options.items()
        }
        lines.append(f"| dataset options | {shared} |")
    return "\n".join(lines)


def _results(train_metrics: dict[str, float], eval_metrics: dict[str, float]) -> str:
    """The final metrics table ('' when there are none)."""
    metrics = {**train_metrics, **eval_metrics}
    rows = [f"| {k} | {format_value(metrics[k])} |" for k in _RESULT_KEYS if k in metrics]
    if not rows:
        return ""
    note = (
        "`eval_*` and `test/nll` are on the held-out test split; the others are the last logged "
        "training window. Rewards are β·log(πθ/πref) of the chosen / rejected completions."
    )
    return "\n".join(["## Final metrics", "", "| metric | value |", "| --- | --- |", *rows, "", note])


def _usage(repo: str, adapter: bool) -> str:
    """A loading and generation snippet."""
    model_class = "AutoPeftModelForCausalLM" if adapter else "AutoModelForCausalLM"
    imports = [f"from transformers import {model_class}, AutoTokenizer"]
    if adapter:
        imports = [f"from peft import {model_class}", "from transformers import AutoTokenizer"]
    load = [
        f'model = {model_class}.from_pretrained("{repo}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        *(["model = model.merge_and_unload()  # optional: plain transformers model"] if adapter else []),
    ]
    generate = [
        'messages = [{"role": "user", "content": "Hello!"}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",'
        " return_dict=True)",
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0]))",
    ]
    return "\n".join(["## Usage", "", "```python", *imports, "", *load, *generate, "```"])


def shareable_name(name: str) -> str:
    """``name`` as a published card may show it: a Hub id as is, a local path by its last component only."""
    expanded = os.path.expanduser(name)
    local = os.path.isabs(expanded) or name.startswith((".", "~")) or os.path.exists(expanded)
    return _file_name(name) if local else name


def _file_name(path: str) -> str:
    return Path(os.path.expanduser(path)).name or path


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_map_strings(v, fn) for v in value]
    return value


def write_model_card(
    directory: str | Path,
    config: Any,
    train_metrics: dict[str, float],
    eval_metrics: dict[str, float],
    adapter: bool = False,
    merged: bool = False,
) -> Path:
    """Write ``README.md`` into ``directory`` (replacing any card a library saved there)."""
    repo_id = getattr(config, "hub_model_id", None)
    if merged and repo_id:
        repo_id = merged_repo_id(repo_id)
    path = Path(directory) / "README.md"
    path.write_text(render_model_card(config, train_metrics, eval_metrics, adapter, merged, repo_id), "utf-8")
    return path


def is_hub_model_id(name: str) -> bool:
    """Whether ``name`` is a Hub repo id ``owner/name`` (``huggingface_hub.utils.validate_repo_id``), the
    only ``base_model`` the Hub accepts: not an existing local path and not a ``.gguf`` file."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return "/" in name and not name.lower().endswith(".gguf") and not os.path.exists(os.path.expanduser(name))


def merged_repo_id(repo_id: str) -> str:
    """Where the merged copy of a LoRA run goes: ``<hub_model_id>-merged``."""
    return f"{repo_id}-merged"
