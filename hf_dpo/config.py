"""DPOConfig: transformers.TrainingArguments plus the DPO hyperparameters."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from hf_dpo.batching.layouts import available_layouts
from hf_dpo.objective.losses import LOSS_TYPES


@dataclass
class DPOConfig(TrainingArguments):
    """Every ``TrainingArguments`` field, plus the DPO fields below. Invalid values raise ``ValueError``.

    Defaults that differ from ``TrainingArguments``: ``learning_rate=1e-6`` (DPO moves a trained policy a
    small distance), ``logging_steps=10``, ``remove_unused_columns=False`` (the trainer uses its own columns).
    """

    learning_rate: float = field(default=1e-6, metadata={"help": "Peak learning rate (DPO: 1e-7 to 1e-5)."})
    logging_steps: float = field(default=10, metadata={"help": "Log metrics every N optimizer steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Kept False: DPO columns are custom."}
    )

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
        if not 0 < self.beta < math.inf:
            raise ValueError(
                f"DPOConfig.beta must be > 0 and finite, got {self.beta}. Typical values: 0.01 to 0.5."
            )
        self._validate_schedule()
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

    def _validate_schedule(self) -> None:
        """Batch sizes, accumulation, learning rate and length of training: values with which a run would
        crash later, train nothing, or diverge at once."""
        counts = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
        for name in counts:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"DPOConfig.{name} must be an integer >= 1, got {value}.")
        if not 0 <= self.learning_rate < math.inf:
            raise ValueError(
                f"DPOConfig.learning_rate must be a finite number >= 0, got {self.learning_rate}. "
                "DPO typically uses 1e-7 to 1e-5."
            )
        if self.max_steps <= 0 and not 0 < self.num_train_epochs < math.inf:
            raise ValueError(
                f"DPOConfig.num_train_epochs must be > 0 when max_steps is not set (got "
                f"num_train_epochs={self.num_train_epochs}, max_steps={self.max_steps}): the run would train "
                "zero steps. Set num_train_epochs=1 or max_steps=<N>."
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
