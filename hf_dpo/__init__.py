"""hf_dpo: Direct Preference Optimization as a plugin to ``transformers.Trainer``; public API: ``__all__``.
Documented subpackages with their own ``__all__``: ``hf_dpo.data``, ``hf_dpo.eval`` and ``hf_dpo.train``."""

from hf_dpo.batching.attention import layout_support, model_inputs
from hf_dpo.batching.collator import DataCollatorForPreference, DPODataCollator
from hf_dpo.batching.layouts import PairBatch, available_layouts, get_layout
from hf_dpo.config import DPOConfig, dpo_config_from
from hf_dpo.data import (
    DatasetBuilder,
    PreferencePair,
    Skip,
    build_preference_dataset,
    register_builder,
    require,
    row_error,
)
from hf_dpo.modeling.forward import ChosenRejectedLogps, sequence_logps
from hf_dpo.modeling.loading import load_causal_lm
from hf_dpo.objective.losses import (
    LOSSES,
    DPOLossOutput,
    LossConfig,
    LossSpec,
    PreferenceLogps,
    dpo_loss,
    needs_reference,
    preference_loss,
)
from hf_dpo.reference.policies import ReferencePolicy
from hf_dpo.run.cli_config import load_config
from hf_dpo.scoring import Objective, PairScores, score_batch
from hf_dpo.tokens.renderers import Renderer, available_renderers, get_renderer, register_renderer
from hf_dpo.tokens.tokenization import tokenize_dataset
from hf_dpo.trainer import DPOTrainer

__all__ = [
    "LOSSES",
    "ChosenRejectedLogps",
    "DPOConfig",
    "DPODataCollator",
    "DPOLossOutput",
    "DPOTrainer",
    "DataCollatorForPreference",
    "DatasetBuilder",
    "LossConfig",
    "LossSpec",
    "Objective",
    "PairBatch",
    "PairScores",
    "PreferenceLogps",
    "PreferencePair",
    "ReferencePolicy",
    "Renderer",
    "Skip",
    "available_layouts",
    "available_renderers",
    "build_preference_dataset",
    "dpo_config_from",
    "dpo_loss",
    "get_layout",
    "get_renderer",
    "layout_support",
    "load_causal_lm",
    "load_config",
    "model_inputs",
    "needs_reference",
    "preference_loss",
    "register_builder",
    "register_renderer",
    "require",
    "row_error",
    "score_batch",
    "sequence_logps",
    "tokenize_dataset",
]
__version__ = "0.1.0"
