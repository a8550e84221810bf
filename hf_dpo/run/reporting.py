"""Metric names for the ``report_to`` backends (TensorBoard, wandb, ...).

transformers' reporting callbacks file a logged key under ``eval/`` only when it starts with ``eval_``, and
everything else under ``train/``, so the trainer's ``test/nll`` (an evaluation metric) would show up as
``train/test/nll``. :func:`route_test_metrics` puts a callback in front of the reporting callbacks that
renames ``test/...`` keys to ``eval_test/...`` (shown as ``eval/test/...``); the run's own outputs
(``metrics.jsonl``, plots, console) and ``trainer.state.log_history`` keep the name ``test/nll``.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class EvalPrefixCallback(TrainerCallback):
    """Renames ``test/<...>`` log keys to ``eval_test/<...>`` for the callbacks after it."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any):
        for key in [k for k in logs or {} if k.startswith("test/")]:
            logs[f"eval_{key}"] = logs.pop(key)


def reporting_callback_types() -> tuple[type, ...]:
    """The callback classes of every ``report_to`` backend transformers knows."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return tuple(INTEGRATION_TO_CALLBACK.values())


def route_test_metrics(trainer: Any) -> None:
    """Move the trainer's reporting callbacks to the end of its callback list, behind an
    :class:`EvalPrefixCallback` (every other callback still sees ``test/nll``). No reporters: no change."""
    callbacks = trainer.callback_handler.callbacks
    reporters = [c for c in callbacks if isinstance(c, reporting_callback_types())]
    if not reporters:
        return
    others = [c for c in callbacks if not isinstance(c, (EvalPrefixCallback, *reporting_callback_types()))]
    callbacks[:] = [*others, EvalPrefixCallback(), *reporters]
