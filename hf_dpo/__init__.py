"""hf_dpo: Direct Preference Optimization as a plugin to ``transformers.Trainer``."""

from .collator import DPODataCollator
from .config import DPOConfig
from .losses import DPOLossOutput, PreferenceLogps, dpo_loss
from .trainer import DPOTrainer

__all__ = ["DPOConfig", "DPODataCollator", "DPOLossOutput", "DPOTrainer", "PreferenceLogps", "dpo_loss"]
__version__ = "0.1.0"
