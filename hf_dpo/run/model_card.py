"""The model card (``README.md``) of a trained DPO model: base model, data, settings, results, usage."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from hf_dpo.run.console import format_value

# A Hub repo id: owner/name, each of letters, digits, '-', '_', '.'.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# Hyperparameters reported in the card (config key -> shown name).
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
    """Markdown with YAML front matter for the Hub."""
    base = str(config.model_name)
    repo = repo_id or getattr(config, "hub_model_id", None) or "path/to/this/model"
    front: dict[str, Any] = {"base_model": base} if is_hub_model_id(base) else {}
    front.update(
        library_name="peft" if adapter else "transformers",
        tags=["dpo", "hf_dpo", "trl-compatible"] + (["lora"] if adapter else []),
        datasets=[config.dataset],
    )
    source = f"`{base}`" if "base_model" in front else f"the local base model `{base}`"
    what = "LoRA adapter" if adapter else ("LoRA-merged model" if merged else "model")
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {Path(str(repo)).name}",
        "",
        f"A {what} trained from {source} with Direct Preference Optimization (DPO) using "
        f"hf_dpo on the `{config.dataset}` preference dataset.",
        "",
        "## Training",
        "",
        "| hyperparameter | value |",
        "| --- | --- |",
    ]
    for key in CARD_HYPERPARAMETERS:
        value = getattr(config, key, None)
        if value is not None:
            lines.append(f"| {key} | {getattr(value, 'value', value)} |")
    if config.peft is not None:
        peft = config.peft
        lines.append(
            f"| LoRA | r={peft.r}, alpha={peft.lora_alpha}, dropout={peft.lora_dropout}, "
            f"target_modules={peft.target_modules} |"
        )
    if config.dataset_kwargs():
        lines.append(f"| dataset options | {config.dataset_kwargs()} |")
    results = {k: v for k, v in {**train_metrics, **eval_metrics}.items() if k in _RESULT_KEYS}
    if results:
        lines += ["", "## Final metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {format_value(results[k])} |" for k in _RESULT_KEYS if k in results]
        lines += [
            "",
            "`eval_*` and `test/nll` are on the held-out test split; the others are the last logged "
            "training window. Rewards are β·log(πθ/πref) of the chosen / rejected completions.",
        ]
    lines += ["", "## Usage", "", "```python"]
    if adapter:
        lines += [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
            "model = model.merge_and_unload()  # optional: plain transformers model",
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
        ]
    lines += [
        'messages = [{"role": "user", "content": "Hello!"}]',
        'inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",'
        " return_dict=True)",
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0]))",
        "```",
        "",
    ]
    return "\n".join(lines)


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
    """Whether ``name`` looks like a Hub repo id (``owner/name``), the only ``base_model`` the Hub accepts:
    not an existing local path and not a ``.gguf`` file."""
    return (
        _HUB_ID.fullmatch(name) is not None
        and ".." not in name
        and not name.lower().endswith(".gguf")
        and not os.path.exists(os.path.expanduser(name))
    )


def merged_repo_id(repo_id: str) -> str:
    """Where the merged copy of a LoRA run goes: ``<hub_model_id>-merged``."""
    return f"{repo_id}-merged"
