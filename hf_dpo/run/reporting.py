"""Metric names for the ``report_to`` backends: they file only ``eval_*`` keys under ``eval/``, so
``test/nll`` reaches them as ``eval_test/nll`` (the run's own outputs and ``log_history`` keep the name)."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class EvalPrefixCallback(TrainerCallback):
    """Renames ``test/<...>`` log keys to ``eval_test/<...>`` for the callbacks after it."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
        for key in [k for k in logs or {} if k.startswith("test/")]:
            logs[f"eval_{key}"] = logs.pop(key)


def route_test_metrics(trainer: Any) -> None:
    """Move the trainer's reporting callbacks to the end of its callback list, behind an
    :class:`EvalPrefixCallback` (every other callback still sees ``test/nll``). No reporters: no change."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    callbacks = trainer.callback_handler.callbacks
    reporting = tuple(INTEGRATION_TO_CALLBACK.values())  # the callback class of every report_to backend
    reporters = [c for c in callbacks if isinstance(c, reporting)]
    if not reporters:
        return
    others = [c for c in callbacks if not isinstance(c, (EvalPrefixCallback, *reporting))]
    callbacks[:] = [*others, EvalPrefixCallback(), *reporters]
