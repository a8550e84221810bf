"""Evaluate a trained policy against its reference: ``python -m hf_dpo.eval`` / ``hf-dpo-eval``.

Tasks: ``preference`` (held-out implicit-reward metrics with bootstrap CIs), ``generation`` (sampled
completions, lengths, reward-model win rate, exact match for ``arithmetic``) and ``ifeval`` (through
lm-evaluation-harness). See docs/evaluation.md.
"""

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
