"""hf_dpo: Direct Preference Optimization as a plugin to ``transformers.Trainer``."""

from hf_dpo.batching.collator import DPODataCollator
from hf_dpo.config import DPOConfig
from hf_dpo.objective.losses import DPOLossOutput, PreferenceLogps, dpo_loss
from hf_dpo.trainer import DPOTrainer

__all__ = ["DPOConfig", "DPODataCollator", "DPOLossOutput", "DPOTrainer", "PreferenceLogps", "dpo_loss"]
__version__ = "0.1.0"
