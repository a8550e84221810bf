"""DPOConfig: transformers.TrainingArguments plus the DPO hyperparameters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from hf_dpo.batching.layouts import available_layouts
from hf_dpo.objective.losses import LOSS_TYPES


@dataclass
class DPOConfig(TrainingArguments):
    """Every ``TrainingArguments`` field, plus the DPO fields below. Invalid values raise ``ValueError``.

    Defaults that differ from ``TrainingArguments``: ``learning_rate=1e-6`` (DPO moves a trained policy a
    small distance), ``logging_steps=10``. ``remove_unused_columns`` keeps TRL's and ``Trainer``'s default
    (True): the trainer keeps its own token columns either way, and TRL's ``--no_remove_unused_columns`` flag
    exists.
    """

    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate (DPO: 1e-7 to 1e-5)."})
    logging_steps: float = field(default=10, metadata={"help": "Log metrics every N optimizer steps."})

    beta: float = field(default=0.1, metadata={"help": "β: strength of the implicit KL penalty (> 0)."})
    loss_type: str = field(default="sigmoid", metadata={"help": f"One of {', '.join(LOSS_TYPES)}."})
    label_smoothing: float = field(
        default=0.0, metadata={"help": "ε in [0, 0.5): assumed label-flip rate (cDPO with sigmoid; robust)."}
    )
    rpo_alpha: float = field(
        default=0.0, metadata={"help": "Weight of the per-token NLL of the chosen completion (RPO); 0 = off."}
    )
    max_length: int | None = field(
        default=1024, metadata={"help": "Max prompt+completion tokens per sequence."}
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={
            "help": "Max prompt tokens (None: no separate cap); longer prompts keep their end (latest turns)."
        },
    )
    disable_dropout: bool = field(
        default=True, metadata={"help": "Zero all dropout in policy and reference."}
    )
    renderer_name: str | None = field(
        default=None,
        metadata={"help": "Chat format for conversational rows (default: the tokenizer's chat template)."},
    )
    batch_layout: str = field(
        default="auto",
        metadata={"help": "auto (fastest exact layout for the backend), padded, packed or prefix_shared."},
    )
    pad_to_multiple_of: int | None = field(default=None, metadata={"help": "Round padded lengths up."})
    logprob_chunk_size: int = field(
        default=1024, metadata={"help": "Completion tokens per LM-head chunk when computing log-probs."}
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    precompute_ref_log_probs: bool = field(
        default=False,
        metadata={"help": "Compute reference log-probs once before training; drop the reference."},
    )
    precompute_ref_batch_size: int | None = field(
        default=None,
        metadata={"help": "Batch size of the precompute pass (default: per_device_eval_batch_size)."},
    )
    sync_ref_model: bool = field(
        default=False, metadata={"help": "TR-DPO: every ref_model_sync_steps, πref ← α·πθ + (1−α)·πref."}
    )
    ref_model_mixup_alpha: float = field(
        default=0.6, metadata={"help": "α of the reference sync, in (0, 1]."}
    )
    ref_model_sync_steps: int = field(
        default=512, metadata={"help": "Optimizer steps between reference syncs."}
    )
    save_merged_model: bool = field(
        default=False, metadata={"help": "With PEFT: also save the adapter merged into the base weights."}
    )
    model_init_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "kwargs for from_pretrained when `model` is a name or path."}
    )

    def __post_init__(self) -> None:
        self._validate_dpo_fields()
        super().__post_init__()

    def _validate_dpo_fields(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"DPOConfig.beta must be > 0, got {self.beta}. Typical values are 0.01 to 0.5.")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(
                f"DPOConfig.loss_type {self.loss_type!r} is unknown; use one of {', '.join(LOSS_TYPES)}."
            )
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"DPOConfig.label_smoothing must be in [0, 0.5), got {self.label_smoothing}.")
        if self.batch_layout != "auto" and self.batch_layout not in available_layouts():
            raise ValueError(
                f"DPOConfig.batch_layout {self.batch_layout!r} is unknown; use 'auto' or one of "
                f"{', '.join(available_layouts())}."
            )
        if self.rpo_alpha < 0:
            raise ValueError(f"DPOConfig.rpo_alpha must be >= 0, got {self.rpo_alpha}.")
        if not 0.0 < self.ref_model_mixup_alpha <= 1.0:
            alpha = self.ref_model_mixup_alpha
            raise ValueError(f"DPOConfig.ref_model_mixup_alpha must be in (0, 1], got {alpha}.")
        if self.ref_model_sync_steps < 1:
            raise ValueError(f"DPOConfig.ref_model_sync_steps must be >= 1, got {self.ref_model_sync_steps}.")
        if self.sync_ref_model and self.precompute_ref_log_probs:
            raise ValueError(
                "DPOConfig.sync_ref_model=True cannot be combined with precompute_ref_log_probs=True: "
                "precomputed reference log-probs are fixed, so the reference cannot be synced. Turn one off."
            )
        for name in (
            "max_length",
            "max_prompt_length",
            "pad_to_multiple_of",
            "logprob_chunk_size",
            "precompute_ref_batch_size",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"DPOConfig.{name} must be a positive integer or None, got {value}.")
        if (
            self.max_length is not None
            and self.max_prompt_length is not None
            and self.max_prompt_length >= self.max_length
        ):
            raise ValueError(
                f"DPOConfig.max_prompt_length ({self.max_prompt_length}) must be smaller than max_length "
                f"({self.max_length}) so that every pair keeps at least one completion token."
            )


def dpo_default(name: str) -> Any:
    """The default of ``DPOConfig.<name>``: the one place a default is written, so that the CLI, data
    inspection and evaluation read it from here instead of restating it."""
    for f in dataclasses.fields(DPOConfig):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            if f.default is dataclasses.MISSING:
                raise KeyError(f"DPOConfig.{name} has no default")
            return f.default
    raise KeyError(f"DPOConfig has no field {name!r}")


def dpo_config_from(args: TrainingArguments) -> DPOConfig:
    """An ``hf_dpo`` ``DPOConfig`` with the values of ``args``, a ``TrainingArguments`` of another library
    (e.g. ``trl.DPOConfig``; field names are TRL's). Its fields that ``DPOConfig`` lacks are dropped when
    they hold their default, else ``ValueError`` names them. A one-element ``loss_type`` list (TRL stores the
    loss type as a list) becomes its element."""
    ours = {f.name for f in dataclasses.fields(DPOConfig) if f.init}
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for f in dataclasses.fields(args):
        if not f.init:
            continue
        value = getattr(args, f.name)
        if f.name in ours:
            values[f.name] = value
        elif value != (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default):
            unknown.append(f.name)
    if unknown:
        raise ValueError(f"hf_dpo.DPOConfig has no field {', '.join(sorted(unknown))}; unset it to convert")
    loss_type = values.get("loss_type")
    if isinstance(loss_type, (list, tuple)) and len(loss_type) == 1 and not values.get("loss_weights"):
        values["loss_type"] = loss_type[0]
    return DPOConfig(**values)
