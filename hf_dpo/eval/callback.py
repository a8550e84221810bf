"""``EndOfTrainingEval``: run the heavier evaluation tasks once, when training ends."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel
from transformers import TrainerCallback

from hf_dpo.eval.config import EvalConfig
from hf_dpo.eval.loading import ModelPair
from hf_dpo.eval.report import write_outputs
from hf_dpo.eval.runner import evaluate_pair
from hf_dpo.modeling.loading import load_causal_lm

logger = logging.getLogger("hf_dpo")


class EndOfTrainingEval(TrainerCallback):
    """At ``on_train_end`` (main process only), evaluate the trained policy against ``reference`` (a model, a
    name/path to load, or None: the adapter-disabled policy for PEFT, else ``model_name``), unset options from
    ``run_config``, ``**options`` other ``EvalConfig`` fields; results in ``self.results`` and ``log_path``
    (default ``<output_dir>/eval``)."""

    def __init__(
        self,
        tasks: list[str] | str = ("generation",),
        reference: torch.nn.Module | str | None = None,
        run_config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("model_path", "")
        options.setdefault("show_progress", False)
        self.config = EvalConfig(tasks=tasks if isinstance(tasks, str) else list(tasks), **options)
        self.reference = reference
        self.run_config = dict(run_config or {})
        self.results: dict[str, Any] | None = None

    def on_train_end(
        self,
        args: Any,
        state: Any,
        control: Any,
        model: Any = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or model is None:
            return
        policy = extract_model_from_parallel(model)
        reference = self.reference
        if isinstance(reference, str) or (reference is None and not hasattr(policy, "disable_adapter")):
            name = reference or self.config.model_name or self.run_config.get("model_name")
            if not name:
                raise ValueError(
                    "EndOfTrainingEval needs reference=<model> or model_name=<base> for a full fine-tune"
                )
            reference = load_causal_lm(str(name)).to(next(policy.parameters()).device)
        was_training = policy.training
        policy.eval()
        if reference is not None:
            reference.eval()
        self.config.model_path = self.config.model_path or args.output_dir
        pair = ModelPair(policy, reference, processing_class)
        try:
            results, records, values = evaluate_pair(pair, self.config, self.run_config)
        finally:
            policy.train(was_training)
        out = Path(self.config.log_path or Path(args.output_dir) / "eval")
        write_outputs(out, results, records, values, self.config.plots)
        results["output_dir"] = str(out)
        self.results = results
        logger.info("hf_dpo.eval: end-of-training evaluation written to %s", out)
