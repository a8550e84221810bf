"""Evaluate a trained policy against its reference on ``TASKS``: ``python -m hf_dpo.eval`` / ``hf-dpo-eval``
(see docs/evaluation.md)."""

from hf_dpo.eval.callback import EndOfTrainingEval
from hf_dpo.eval.config import TASKS, EvalConfig
from hf_dpo.eval.loading import ModelPair, load_models
from hf_dpo.eval.runner import evaluate_model, evaluate_pair, main

__all__ = [
    "TASKS",
    "EndOfTrainingEval",
    "EvalConfig",
    "ModelPair",
    "evaluate_model",
    "evaluate_pair",
    "load_models",
    "main",
]
