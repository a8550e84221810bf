"""DPOTrainer: ``transformers.Trainer`` with the DPO objective in ``compute_loss``."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel, Trainer, TrainerCallback

from hf_dpo.batching.collator import DPODataCollator, PairBatchCollator, pad_token_id_for
from hf_dpo.batching.layouts import choose_layout
from hf_dpo.config import DPOConfig, check_datasets, check_trainer_args
from hf_dpo.modeling.adapters import prepare_peft_model, save_merged_model
from hf_dpo.modeling.loading import load_for_training, prepare_for_training
from hf_dpo.modeling.unwrap import base_causal_lm
from hf_dpo.objective.losses import needs_reference
from hf_dpo.objective.metrics import MetricSums, summarize
from hf_dpo.reference.policies import NoReference, PrecomputedReference, make_reference
from hf_dpo.reference.precompute import precompute_reference, with_reference_columns
from hf_dpo.reference.sync import RefSyncCallback
from hf_dpo.run import finite
from hf_dpo.run.checkpoints import staged_checkpoint
from hf_dpo.run.launch import distributed_mismatch
from hf_dpo.run.master_weights import use_float32_master_weights
from hf_dpo.scoring import Objective, score_batch
from hf_dpo.tokens.tokenization import (
    MASK_COLUMNS,
    REF_COLUMNS,
    TOKEN_COLUMNS,
    select_renderer,
    tokenize_dataset,
    tokenize_iterable,
)

logger = logging.getLogger("hf_dpo")


class DPOTrainer(Trainer):
    """Direct Preference Optimization on top of ``transformers.Trainer``, a drop-in for ``trl.DPOTrainer``
    (TRL 1.16's positional order).

    Args:
        model: a causal LM, or a hub id / local path / ``.gguf`` file (loaded with ``model_init_kwargs``).
        ref_model: the frozen reference. None: a frozen copy of ``model`` (with PEFT: adapters disabled).
        train_dataset, eval_dataset: ``Dataset``/``IterableDataset`` of ``prompt``/``chosen``/``rejected``
            rows (text or conversational) or tokenized ``*_ids``; ``train_dataset=None``: evaluation only.
        data_collator: default ``DPODataCollator``; any other collator is read through ``as_pair_batch``.
        compute_metrics: called on the policy's logits of right-padded ``[chosen rows; rejected rows]`` and
            their ``input_ids``, as TRL 1.16 (an extra forward per eval batch).
        quantization_config, peft_config: ``BitsAndBytesConfig`` for loading by name; ``peft.PeftConfig``.
    """

    _tag_names = ["dpo", "hf_dpo"]

    def __init__(
        self,
        model: PreTrainedModel | str,
        ref_model: PreTrainedModel | str | None = None,
        args: DPOConfig | None = None,
        data_collator: Any = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset: Dataset | IterableDataset | dict[str, Dataset | IterableDataset] | None = None,
        processing_class: Any = None,
        compute_metrics: Callable[[Any], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[Any, Any] = (None, None),
        quantization_config: Any = None,
        peft_config: Any = None,
        *,
        optimizer_cls_and_kwargs: tuple[type, dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        args = check_trainer_args(args, model)
        check_datasets(args, train_dataset, eval_dataset)
        model, ref_model, processing_class = load_for_training(
            model, ref_model, processing_class, args, quantization_config
        )
        model, fresh_adapter = prepare_peft_model(model, peft_config, bool(args.activation_checkpointing))
        prepare_for_training(model, ref_model, args)
        copy_free = args.precompute_ref_log_probs and not (args.fsdp or args.deepspeed or args.sync_ref_model)
        self.reference = make_reference(
            model, ref_model, fresh_adapter, needs_reference(args.loss_type), copy_free
        )
        if data_collator is None:  # the fastest exact layout for both models
            pad_id, multiple = pad_token_id_for(processing_class), args.pad_to_multiple_of
            if compute_metrics is not None:  # and the padded one for eval (logits line up with input_ids)
                self._metrics_collator = DPODataCollator(pad_id, "padded", multiple)
            aux = router_aux_coef(model, args) != 0.0
            layout = choose_layout((model, ref_model), args.batch_layout, pad_id, multiple, aux)
            data_collator = DPODataCollator(pad_id, layout)
        elif not isinstance(data_collator, DPODataCollator):
            data_collator = PairBatchCollator(data_collator)  # e.g. TRL's padded completion_mask form
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=self._tokenize(train_dataset, processing_class, args, "train"),
            eval_dataset=self._tokenize(eval_dataset, processing_class, args, "eval"),
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
            **kwargs,
        )
        self._finish_init(args)

    def _finish_init(self, args: DPOConfig) -> None:
        """Launch checks, the objective, the reference (sharded like the policy or moved to the device, then
        precomputed or synced), and the step state: metric sums, non-finite step count, log window."""
        if (mismatch := distributed_mismatch(args)) is not None:
            raise ValueError(mismatch)
        if args.n_gpu > 1:
            raise ValueError(
                f"{args.n_gpu} GPUs in one process (torch DataParallel) are not supported by "
                "DPOTrainer: one batch is one set of pairs. Launch one process per GPU instead: "
                "`accelerate launch --num_processes N ...` or `torchrun --nproc_per_node N ...`."
            )
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)
        self.loss_is_scaled_for_ga = True  # compute_loss normalises by the pairs of the whole optimizer step
        if isinstance(self.reference, NoReference) and (args.sync_ref_model or args.precompute_ref_log_probs):
            raise ValueError(
                f"loss_type {args.loss_type!r} is reference-free, so there is no reference to sync or "
                "precompute; set sync_ref_model=False and precompute_ref_log_probs=False."
            )
        self.objective = Objective.from_args(args, router_aux_loss_coef=router_aux_coef(self.model, args))
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        if sharded and getattr(self.reference, "model", None) is not None:
            from hf_dpo.reference.sharding import prepare_frozen_model

            self.reference.model = prepare_frozen_model(self.reference.model, self.accelerator)
        else:  # (NoReference.to does nothing)
            self.reference = self.reference.to(self.accelerator.device)
        if args.precompute_ref_log_probs:
            self.reference = precompute_reference(self)
        if args.sync_ref_model:
            sync = RefSyncCallback(self.reference, args.ref_model_mixup_alpha, args.ref_model_sync_steps)
            self.add_callback(sync)
        self._metric_sums = {"train": MetricSums(), "eval": MetricSums()}
        self._nonfinite = finite.NonFiniteSteps(0 if self.is_deepspeed_enabled else args.max_nonfinite_steps)
        self._log_window = _LogWindow()
        self.add_callback(self._log_window)

    @property
    def router_aux_loss_coef(self) -> float:
        """The weight of the MoE router loss in use (TRL's attribute)."""
        return self.objective.router_aux_loss_coef

    @property
    def aux_loss_enabled(self) -> bool:
        """Whether the MoE router loss is added (TRL's attribute)."""
        return self.objective.router_aux_loss_coef != 0.0

    @property
    def ref_model(self) -> torch.nn.Module | None:
        """The separate frozen reference model, as in TRL: None with PEFT and (unless given) with
        ``precompute_ref_log_probs``."""
        return getattr(getattr(self.reference, "source", self.reference), "model", None)

    @staticmethod
    def _tokenize(dataset: Any, tokenizer: Any, args: DPOConfig, split: str) -> Any:
        """Raw rows -> token ids (idempotent: tokenized datasets and ``Trainer``'s split names pass through).
        A streaming ``IterableDataset`` is tokenized lazily."""
        if isinstance(dataset, dict):
            return {k: DPOTrainer._tokenize(v, tokenizer, args, f"{split}[{k}]") for k, v in dataset.items()}
        if dataset is None or isinstance(dataset, str):
            return dataset
        iterable = isinstance(dataset, IterableDataset)
        first = next(iter(dataset), None) if iterable else None
        if iterable and first is None:
            return dataset
        columns = set(first if iterable else dataset.column_names)
        if set(TOKEN_COLUMNS) <= columns:  # already tokenized: its own columns are kept
            if args.assistant_only_loss and not set(MASK_COLUMNS) <= columns:
                logger.warning(
                    "hf_dpo: the %s dataset is already tokenized and has no %s columns, so "
                    "assistant_only_loss cannot apply and every completion token is scored; pass the raw "
                    "rows (or tokenize with assistant_only_loss=True) to leave tool turns out of the loss",
                    split,
                    "/".join(MASK_COLUMNS),
                )
            return dataset
        lengths = (args.max_length, args.max_prompt_length)
        options = {"truncation_mode": args.truncation_mode, "assistant_only_loss": args.assistant_only_loss}
        if iterable:
            renderer = select_renderer(first, tokenizer, args.renderer_name)
            return tokenize_iterable(dataset, tokenizer, renderer, *lengths, split_name=split, **options)
        if len(dataset) == 0:
            raise ValueError(f"the {split} dataset is empty")
        renderer = select_renderer(dataset[0], tokenizer, args.renderer_name)
        with args.main_process_first(desc=f"tokenizing {split}"):
            tokenized, _ = tokenize_dataset(
                dataset, tokenizer, renderer, *lengths, args.dataset_num_proc, split_name=split, **options
            )
        return tokenized

    def _set_signature_columns_if_needed(self) -> None:
        """``remove_unused_columns=True`` keeps the collator's columns, not the model's forward arguments."""
        if self._signature_columns is None:
            self._signature_columns = [*TOKEN_COLUMNS, *MASK_COLUMNS, *REF_COLUMNS]

    def get_train_dataloader(self) -> Any:
        if self.train_dataset is None:
            raise ValueError(
                "DPOTrainer.train() needs a train_dataset, and none was given. Fix: pass "
                "train_dataset=<rows with prompt/chosen/rejected> to DPOTrainer (evaluate() and predict() "
                "work without one)."
            )
        return super().get_train_dataloader()

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        return self._with_eval_collator(super().get_eval_dataloader, eval_dataset)

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        return self._with_eval_collator(super().get_test_dataloader, test_dataset)

    def _with_eval_collator(self, get_dataloader: Callable[[Any], Any], dataset: Any) -> Any:
        """With ``compute_metrics``, eval batches are padded (so logits line up with ``input_ids``)."""
        default = self.data_collator
        self.data_collator = getattr(self, "_metrics_collator", None) or default
        try:
            return get_dataloader(dataset)
        finally:
            self.data_collator = default

    # ---- loss ---------------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean loss of the batch (``score_batch`` under the run's ``objective``). In training, per-pair
        losses are summed, divided by the step's pairs over all processes (``num_items_in_batch``) and times
        the process count, so every pair weighs the same under accumulation and uneven batches."""
        offloading = contextlib.nullcontext()
        if self.args.activation_offloading and torch.is_grad_enabled() and model.training:
            offloading = torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())
        with offloading:  # activation_offloading: tensors saved for backward wait in CPU memory
            scores = score_batch(model, self.reference, inputs, self.objective, self.accelerator.autocast)
        self._metric_sums["train" if model.training else "eval"].add(scores.metric_sums(inputs["num_tokens"]))
        losses, dpo = scores.losses, scores.dpo
        if num_items_in_batch is None:
            loss = losses.mean()
        else:
            loss = losses.sum() / num_items_in_batch * self.accelerator.num_processes
        if return_outputs:
            return loss, {"chosen_rewards": dpo.chosen_rewards, "rejected_rewards": dpo.rejected_rewards}
        return loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        """Pairs in the whole optimizer step, summed over processes (one collective per step)."""
        pairs = torch.tensor(float(sum(b["num_pairs"] for b in batch_samples)), device=device)
        return self._all_reduce_sum(pairs)

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self._nonfinite.patience == 0:  # stop at the micro-batch (DeepSpeed steps by itself: always)
            finite.check_loss(loss, self.state.global_step)
        return loss

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer, with float32 master copies of float16 weights unless DeepSpeed/FSDP."""
        optimizer = super().create_optimizer(model)
        if not (self.is_deepspeed_enabled or self.is_fsdp_enabled):
            use_float32_master_weights(optimizer)
        return optimizer

    def _get_grad_norm(self, model: torch.nn.Module, grad_norm: Any = None) -> Any:
        """Trainer's gradient norm; when NaN/inf the gradients are dropped, so the step changes nothing."""
        grad_norm = super()._get_grad_norm(model, grad_norm)
        if self._nonfinite.skip(grad_norm, self.state.global_step, self.accelerator.scaler):
            model.zero_grad(set_to_none=True)
        return grad_norm

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The DPO loss; with ``compute_metrics`` (and not ``prediction_loss_only``) also the policy logits
        (2B, T, V) and their ``input_ids`` (2B, T), as TRL 1.16."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
            if prediction_loss_only or getattr(self, "_metrics_collator", None) is None:
                return loss.detach(), None, None
            logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        return loss.detach(), logits, inputs["input_ids"]

    # ---- metrics ------------------------------------------------------------------------------------------
    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: Any = None, metric_key_prefix: str = "eval"
    ) -> dict:
        """``Trainer.evaluate`` plus the DPO metrics under ``metric_key_prefix`` and ``test/nll``."""
        eval_dataset = self._with_reference(eval_dataset, "eval")
        if not isinstance(eval_dataset if eval_dataset is not None else self.eval_dataset, dict):
            self._metric_sums["eval"] = MetricSums()  # drop anything a predict() call left behind
            self._eval_prefix = metric_key_prefix
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def _with_reference(self, dataset: Any, split: str) -> Any:
        """``dataset`` tokenized, with the precomputed reference columns if the run uses them (cached)."""
        dataset = self._tokenize(dataset, self.processing_class, self.args, split)
        if not isinstance(self.reference, PrecomputedReference):
            return dataset
        return with_reference_columns(self, self.reference, dataset, split)

    def predict(self, test_dataset: Any, ignore_keys: Any = None, metric_key_prefix: str = "test") -> Any:
        """``Trainer.predict`` on raw or tokenized pairs (raw rows are tokenized like the training data)."""
        return super().predict(
            self._with_reference(test_dataset, metric_key_prefix), ignore_keys, metric_key_prefix
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Adds the DPO metrics (reduced across processes, one collective) to Trainer's train/eval logs."""
        prefix = getattr(self, "_eval_prefix", "eval")
        if f"{prefix}_loss" in logs:
            sums = self._metric_sums["eval"].reduce(self._all_reduce_sum, self.accelerator.device)
            metrics = summarize(sums, num_steps=1, with_nll=True)
            logs.update({f"{prefix}_{k}": v for k, v in metrics.items() if k != "test/nll"})
            if "test/nll" in metrics:  # eval -> test/nll; eval_<name> (dict of eval sets) -> test/<name>/nll
                name = prefix.removeprefix("eval").lstrip("_")
                logs[f"test/{name}/nll" if name else "test/nll"] = logs[f"{prefix}_nll"] = metrics["test/nll"]
        elif "loss" in logs or "train_loss" in logs:  # train()'s summary: the steps not logged yet (as TRL)
            step, now = self.state.global_step, time.perf_counter()
            steps = max(step - self._log_window.step, 1)
            sums = self._metric_sums["train"].reduce(self._all_reduce_sum, self.accelerator.device)
            logs.update(summarize(sums, num_steps=steps, with_nll=False))
            if self._nonfinite.skipped:
                logs["skipped_steps"] = self._nonfinite.skipped
            if "loss" in logs:
                logs["progress"] = step / max(self.state.max_steps, 1)
                logs["batch_time"] = (now - self._log_window.time) / steps
            self._log_window.step, self._log_window.time = step, now
        super().log(logs, start_time)

    # ---- saving -------------------------------------------------------------------------------------------
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        with self.reference.hidden_from_save(self.model, state_dict) as state_dict:  # PEFT: trained adapter
            super()._save(output_dir, state_dict)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Trainer's checkpoint, staged and renamed when complete (``hf_dpo.run.checkpoints``)."""
        if trial is not None:
            return super()._save_checkpoint(model, trial)
        with staged_checkpoint(self) as self._checkpoint_root:
            super()._save_checkpoint(model, trial)
        self._checkpoint_root = None

    def _get_output_dir(self, trial: Any) -> str:
        return getattr(self, "_checkpoint_root", None) or super()._get_output_dir(trial)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``; with ``save_merged_model`` also writes ``<output_dir>/merged`` at the end."""
        output = super().train(*args, **kwargs)
        if self.args.save_merged_model:
            if self.args.should_save:
                merged_dir = os.path.join(self.args.output_dir, "merged")
                save_merged_model(self.model, merged_dir, self.processing_class)
            self.accelerator.wait_for_everyone()
        return output

    def _all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, "sum") if self.accelerator.num_processes > 1 else tensor


class _LogWindow(TrainerCallback):
    """Start (optimizer step, wall time) of the current logging window; reset when training (re)starts."""

    def __init__(self) -> None:
        self.step, self.time = 0, time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.step, self.time = state.global_step, time.perf_counter()


def router_aux_coef(model: torch.nn.Module, args: DPOConfig) -> float:
    """The MoE router loss weight: ``router_aux_loss_coef``, else the model config's; 0 for dense models."""
    model_config = getattr(base_causal_lm(model), "config", None)
    text_config = model_config.get_text_config() if model_config is not None else None
    is_moe = hasattr(text_config, "output_router_logits")
    coef = args.router_aux_loss_coef
    if coef and not is_moe:
        raise ValueError(
            f"router_aux_loss_coef={coef} but {type(base_causal_lm(model)).__name__} is not a "
            "Mixture-of-Experts model that returns router logits; there is no auxiliary loss to weight. "
            "Leave router_aux_loss_coef=None."
        )
    coef = float(getattr(text_config, "router_aux_loss_coef", 0.0) or 0.0 if coef is None else coef)
    return coef if is_moe else 0.0
