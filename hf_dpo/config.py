"""DPOConfig: transformers.TrainingArguments plus the DPO hyperparameters."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from hf_dpo.batching.layouts import available_layouts
from hf_dpo.objective.losses import LOSS_TYPES, LossConfig

logger = logging.getLogger("hf_dpo")

TRUNCATION_MODES = ("keep_start", "keep_end")


def _field(default: Any, help_text: str) -> Any:
    """A dataclass field with its ``--help`` text (read by ``HfArgumentParser``)."""
    return field(default=default, metadata={"help": help_text})


@dataclass
class DPOConfig(TrainingArguments):
    """Every ``TrainingArguments`` field, plus the DPO fields below. Invalid values raise ``ValueError``.
    Defaults that differ from ``TrainingArguments``: ``learning_rate=1e-6``, ``logging_steps=10``."""

    learning_rate: float = _field(1e-6, "Peak learning rate (DPO: 1e-7 to 1e-5).")
    logging_steps: float = _field(10, "Log metrics every N optimizer steps.")

    beta: float = _field(0.1, "β: strength of the implicit KL penalty (> 0).")
    loss_type: str | list[str] = _field("sigmoid", f"One of {', '.join(LOSS_TYPES)}, or a list of them.")
    loss_weights: list[float] | None = _field(None, "One weight per loss_type entry (None: 1.0 each).")
    label_smoothing: float = _field(
        0.0, "ε in [0, 0.5): label-flip rate (sigmoid, robust, aot); exo_pair: (0, 1)."
    )
    f_divergence_type: str = _field("reverse_kl", "reverse_kl, forward_kl, js_divergence, alpha_divergence.")
    f_alpha_divergence_coef: float = _field(0.5, "α of alpha_divergence.")
    discopop_tau: float = _field(0.05, "τ of the discopop loss.")
    simpo_beta: float = _field(2.0, "β of loss_type='simpo' (SimPO: 2 to 10).")
    simpo_gamma: float = _field(1.0, "Target reward margin γ of loss_type='simpo' (SimPO: γ/β ≈ 0.5).")
    orpo_lambda: float = _field(0.1, "λ, weight of the odds-ratio term of loss_type='orpo' (ORPO: 0.1).")
    use_weighting: bool = _field(False, "WPO: weight each pair's loss by its own-likelihood weights.")
    ld_alpha: float | None = _field(None, "LD-DPO: weight α in [0, 1] of tokens past the shorter completion.")
    rpo_alpha: float = _field(0.0, "Weight of the per-token NLL of the chosen completion (RPO); 0 = off.")
    max_length: int | None = _field(1024, "Max prompt+completion tokens per sequence.")
    max_prompt_length: int | None = _field(None, "Max prompt tokens (None: no cap); keeps a prompt's end.")
    truncation_mode: str = _field(
        "keep_start", "keep_start: cut completions' ends; keep_end: the prompt's start."
    )
    assistant_only_loss: bool = _field(
        False,
        "Score only the tokens the assistant wrote: tool turns inside a tool-calling completion "
        "(tool outputs and the generation prompt after them) are fed to the model but left out of the "
        "log-probs. False (TRL's behaviour) scores every completion token.",
    )
    padding_free: bool = _field(False, "True: a padding-free batch_layout ('packed' under 'auto').")
    pad_token: str | None = _field(None, "Tokenizer pad token (default: its own, else EOS).")
    trust_remote_code: bool = _field(False, "Passed to from_pretrained of model, reference and tokenizer.")
    activation_offloading: bool = _field(False, "Keep activations saved for backward in CPU memory.")
    router_aux_loss_coef: float | None = _field(None, "MoE router loss weight (None: config's; 0: off).")
    disable_dropout: bool = _field(True, "Zero all dropout in policy and reference.")
    renderer_name: str | None = _field(None, "Chat format of conversational rows (default: chat template).")
    batch_layout: str = _field("auto", "auto (fastest exact layout), padded, packed or prefix_shared.")
    pad_to_multiple_of: int | None = _field(None, "Round padded lengths up.")
    logprob_chunk_size: int = _field(1024, "Completion tokens per LM-head chunk when computing log-probs.")
    dataset_num_proc: int | None = _field(None, "Processes for tokenization.")
    precompute_ref_log_probs: bool = _field(False, "Compute reference log-probs once before training.")
    precompute_ref_batch_size: int | None = _field(None, "Precompute batch size (default: eval batch size).")
    sync_ref_model: bool = _field(False, "TR-DPO: every ref_model_sync_steps, πref ← α·πθ + (1−α)·πref.")
    ref_model_mixup_alpha: float = _field(0.6, "α of the reference sync, in (0, 1].")
    ref_model_sync_steps: int = _field(512, "Optimizer steps between reference syncs.")
    save_merged_model: bool = _field(False, "With PEFT: also save the adapter merged into the base weights.")
    model_init_kwargs: dict[str, Any] | None = _field(
        None, "from_pretrained kwargs when `model` is a name or path."
    )
    max_nonfinite_steps: int = _field(
        16,
        "Optimizer steps in a row with a NaN/inf loss or gradient norm that are skipped (weights "
        "not updated, counted as skipped_steps) before training stops; 0 stops at the first.",
    )

    def __post_init__(self) -> None:
        self._validate_dpo_fields()
        self._validate_objective_fields()
        super().__post_init__()

    def _validate_dpo_fields(self) -> None:
        if not 0 < self.beta < math.inf:
            raise ValueError(
                f"DPOConfig.beta must be > 0 and finite, got {self.beta}. Typical values: 0.01 to 0.5."
            )
        # Batch sizes, accumulation, learning rate, run length: values that crash, train nothing, diverge.
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
        if self.batch_layout != "auto" and self.batch_layout not in available_layouts():
            raise ValueError(
                f"DPOConfig.batch_layout {self.batch_layout!r} is unknown; use 'auto' or one of "
                f"{', '.join(available_layouts())}."
            )
        if self.rpo_alpha < 0:
            raise ValueError(f"DPOConfig.rpo_alpha must be >= 0, got {self.rpo_alpha}.")
        if self.max_nonfinite_steps < 0:
            raise ValueError(f"DPOConfig.max_nonfinite_steps must be >= 0, got {self.max_nonfinite_steps}.")
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
        max_length, max_prompt_length = self.max_length, self.max_prompt_length
        if max_length is not None and max_prompt_length is not None and max_prompt_length >= max_length:
            raise ValueError(
                f"DPOConfig.max_prompt_length ({max_prompt_length}) must be smaller than max_length "
                f"({max_length}) so that every pair keeps at least one completion token."
            )

    def _validate_objective_fields(self) -> None:
        """The loss fields (checked by building ``LossConfig``), WPO / LD-DPO, truncation, padding-free."""
        if self.loss_type is None:  # HfArgumentParser's default for a list-typed field
            self.loss_type = "sigmoid"
        types = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        unknown = [t for t in types if t not in LOSS_TYPES]
        if unknown or not types:
            raise ValueError(
                f"DPOConfig.loss_type {self.loss_type!r} is unknown; use one of {', '.join(LOSS_TYPES)} "
                "or a list of them."
            )
        smoothing_range = (0.0, 1.0) if types == ["exo_pair"] else (0.0, 0.5)
        if not smoothing_range[0] <= self.label_smoothing < smoothing_range[1]:
            raise ValueError(
                f"DPOConfig.label_smoothing must be in [{smoothing_range[0]}, {smoothing_range[1]}) for loss "
                f"types {types}, got {self.label_smoothing}."
            )
        try:
            LossConfig.from_args(self)
        except ValueError as err:
            raise ValueError(f"DPOConfig: {err}") from err
        if self.use_weighting and {"aot", "aot_unpaired"} & set(types):
            raise ValueError(
                "DPOConfig.use_weighting=True (WPO) cannot be combined with loss_type 'aot'/'aot_unpaired': "
                "those losses sort pairs across the batch, so per-pair weights would be misaligned."
            )
        if self.ld_alpha is not None and not 0.0 <= self.ld_alpha <= 1.0:
            raise ValueError(f"DPOConfig.ld_alpha must be in [0, 1] or None, got {self.ld_alpha}.")
        if self.truncation_mode not in TRUNCATION_MODES:
            raise ValueError(
                f"DPOConfig.truncation_mode {self.truncation_mode!r} is unknown; use one of "
                f"{', '.join(TRUNCATION_MODES)}."
            )
        if self.router_aux_loss_coef is not None and self.router_aux_loss_coef < 0:
            raise ValueError(
                f"DPOConfig.router_aux_loss_coef must be >= 0 or None, got {self.router_aux_loss_coef}."
            )
        if self.padding_free:
            if self.batch_layout == "auto":
                self.batch_layout = "packed"
            elif self.batch_layout == "padded":
                raise ValueError(
                    "DPOConfig.padding_free=True contradicts batch_layout='padded'; use batch_layout='auto', "
                    "'packed' or 'prefix_shared' (all padding-free)."
                )


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def dpo_default(name: str) -> Any:
    """The default of ``DPOConfig.<name>`` (the CLI, data inspection and evaluation read it from here)."""
    fields = {f.name: f for f in dataclasses.fields(DPOConfig)}
    if name not in fields:
        raise KeyError(f"DPOConfig has no field {name!r}")
    if (default := _default_of(fields[name])) is dataclasses.MISSING:
        raise KeyError(f"DPOConfig.{name} has no default")
    return default


def dpo_config_from(args: TrainingArguments) -> DPOConfig:
    """An ``hf_dpo`` ``DPOConfig`` with the values of ``args`` (e.g. a ``trl.DPOConfig``). Fields that
    ``DPOConfig`` lacks are dropped when at their default, else ``ValueError`` names them; a one-element
    ``loss_type`` list becomes its element."""
    ours = {f.name for f in dataclasses.fields(DPOConfig) if f.init}
    theirs = [f for f in dataclasses.fields(args) if f.init]
    values = {f.name: getattr(args, f.name) for f in theirs if f.name in ours}
    unknown = [f.name for f in theirs if f.name not in ours and getattr(args, f.name) != _default_of(f)]
    if unknown:
        raise ValueError(f"hf_dpo.DPOConfig has no field {', '.join(sorted(unknown))}; unset it to convert")
    loss_type = values.get("loss_type")
    if isinstance(loss_type, (list, tuple)) and len(loss_type) == 1 and not values.get("loss_weights"):
        values["loss_type"] = loss_type[0]
    return DPOConfig(**values)


def check_trainer_args(args: Any, model: Any) -> DPOConfig:
    """``args``, or TRL's default ``<model name>-DPO`` output directory when None; ``TypeError`` for a
    ``TrainingArguments`` of another library (e.g. ``trl.DPOConfig``)."""
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "model"
        return DPOConfig(output_dir=f"{os.path.basename(name.rstrip('/')) or 'model'}-DPO")
    if isinstance(args, DPOConfig):
        return args
    if isinstance(args, TrainingArguments):
        kind = f"{type(args).__module__}.{type(args).__qualname__}"
        raise TypeError(
            f"args is a {kind}, but hf_dpo.DPOTrainer needs an hf_dpo.DPOConfig (hf_dpo.config.DPOConfig), "
            "which has the same TRL field names. Fix: build hf_dpo.DPOConfig(...) with the same arguments or "
            "convert with `hf_dpo.dpo_config_from(args)`."
        )
    raise TypeError(f"args must be an hf_dpo.DPOConfig, got {type(args).__name__}")


def check_datasets(args: DPOConfig, train_dataset: Any, eval_dataset: Any) -> None:
    """Refuse no dataset at all and precompute with a streaming dataset (TRL's contracts); turn off batch
    dispatching for a streaming train set. No ``train_dataset`` but an ``eval_dataset``: evaluation only."""
    from datasets import Dataset, IterableDataset

    evals = eval_dataset if isinstance(eval_dataset, dict) else {None: eval_dataset}
    named = {"train_dataset": train_dataset}
    named.update({"eval_dataset" if k is None else f"eval_dataset[{k!r}]": d for k, d in evals.items()})
    for name, dataset in named.items():
        if dataset is not None and not isinstance(dataset, (Dataset, IterableDataset)):
            raise TypeError(
                f"{name} must be a datasets.Dataset or IterableDataset, got {type(dataset).__name__}. Fix: "
                "wrap the rows, e.g. datasets.Dataset.from_list(rows) for a list of dicts."
            )
    if train_dataset is None and not eval_dataset:
        raise ValueError(
            "`train_dataset` is required: DPOTrainer got no train_dataset (and no eval_dataset). Pass "
            "train_dataset=<a Dataset of prompt/chosen/rejected pairs>; for evaluation only, pass "
            "eval_dataset=... and call trainer.evaluate()."
        )
    streaming = [d for d in named.values() if isinstance(d, IterableDataset)]
    if streaming and args.precompute_ref_log_probs:
        raise ValueError(
            "precompute_ref_log_probs=True is not supported with IterableDataset: the reference log-probs "
            "are stored as dataset columns. Fix: use a map-style datasets.Dataset (load without "
            "streaming=True), or set precompute_ref_log_probs=False."
        )
    if isinstance(train_dataset, IterableDataset):
        if args.accelerator_config.dispatch_batches:
            logger.warning("hf_dpo: dispatch_batches=True is turned off for a streaming train_dataset")
        args.accelerator_config.dispatch_batches = False
