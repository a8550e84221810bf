"""Preference data: dataset builders that turn raw datasets into TRL-style conversational pairs.

>>> from hf_dpo.data import build_preference_dataset
>>> data = build_preference_dataset("arithmetic", num_train=8, num_test=2)
>>> data.train[0]["chosen"][0]["role"]
'assistant'

Built-ins: ``hhh``, ``helpsteer3``, ``ultrafeedback``, ``custom``, ``arithmetic``, ``mixture``;
see docs/datasets.md.
"""

from hf_dpo.data import arithmetic, custom, helpsteer3, hh_rlhf, mixture, ultrafeedback  # noqa: F401  (registers)
from hf_dpo.data.builder import PAIR_FEATURES, DatasetBuilder, PreferenceData
from hf_dpo.data.registry import (
    available_builders,
    build_preference_dataset,
    builder_class,
    builder_options,
    get_builder,
    register_builder,
)
from hf_dpo.data.rows import PreferencePair, Skip, as_messages, require, row_error, split_conversations

__all__ = [
    "PAIR_FEATURES",
    "DatasetBuilder",
    "PreferenceData",
    "PreferencePair",
    "Skip",
    "as_messages",
    "available_builders",
    "build_preference_dataset",
    "builder_class",
    "builder_options",
    "get_builder",
    "register_builder",
    "require",
    "row_error",
    "split_conversations",
]
