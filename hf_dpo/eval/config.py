"""EvalConfig: the options of ``python -m hf_dpo.eval`` (``key=value`` or YAML, like training)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hf_dpo.config import dpo_default
from hf_dpo.registry import unknown_name_error

TASKS = ("preference", "generation", "ifeval")


@dataclass
class EvalConfig:
    """Options of the evaluation command; ``None`` means the run's config.yaml value where it has one, else
    the documented default."""

    model_path: str
    model_name: str | None = None
    tokenizer_name: str | None = None
    log_path: str | None = None
    tasks: list[str] = field(default_factory=lambda: ["preference"])
    # data
    dataset: str | None = None
    dataset_options: dict[str, Any] | None = None
    renderer_name: str | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    limit: int | None = None
    # preference
    beta: float | None = None
    loss_type: str | None = None  # default: the run's loss_type, else sigmoid
    label_smoothing: float | None = None  # default: the run's label_smoothing, else 0
    batch_size: int = 8
    logprob_chunk_size: int = dpo_default("logprob_chunk_size")
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # generation
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    judge_model: str | None = None
    judge_batch_size: int = 8
    # ifeval
    ifeval_data_files: str | None = None
    ifeval_max_new_tokens: int = 1280
    ifeval_chat_template: bool | None = None
    # runtime
    device: str | None = None
    dtype: str = "float32"
    plots: bool = True
    show_progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        if not self.tasks:
            raise ValueError(f"tasks is empty; pick from {', '.join(TASKS)}")
        for task in self.tasks:
            if task not in TASKS:
                raise unknown_name_error("task", task, TASKS)
        sizes = ("batch_size", "judge_batch_size", "max_new_tokens", "ifeval_max_new_tokens")
        for name in (*sizes, "logprob_chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None (all examples), got {self.limit}")
        if self.beta is not None and not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.bootstrap_samples < 0:
            raise ValueError(f"bootstrap_samples must be >= 0, got {self.bootstrap_samples}")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                f"temperature must be > 0 and top_p in (0, 1]; got temperature={self.temperature}, "
                f"top_p={self.top_p}"
            )
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}")
