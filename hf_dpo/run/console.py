"""Console output of a run: a progress bar (with ETA) and a metrics table at every log (main process)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table
from transformers.trainer_callback import ProgressCallback

_HIDDEN = {"total_flos", "epoch", "eval_nll"}  # eval_nll duplicates test/nll
_HIDDEN_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second")  # timing noise of evaluate()


def format_value(value: Any) -> str:
    """Integers as is; floats with 6 significant digits (>= 1), 6 decimals, or scientific below 1e-6."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    if abs(value) >= 1:
        return f"{value:.6g}"
    if abs(value) >= 1e-6 or value == 0:
        return f"{value:.6f}"
    return f"{value:.3e}"


def metrics_table(step: int, logs: dict[str, Any], width: int = 80) -> str:
    """``Step N`` and a two-column table of ``logs`` (sorted by name), rendered as plain text."""
    table = Table("Metric", "Value")
    for name in sorted(k for k in logs if k not in _HIDDEN and not k.endswith(_HIDDEN_SUFFIXES)):
        table.add_row(name, format_value(logs[name]))
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, force_terminal=False, color_system=None)
    console.print(f"Step {step}", table)
    return buffer.getvalue().rstrip("\n")


class MetricsTableCallback(ProgressCallback):
    """``ProgressCallback`` printing each log as a table (``show_progress=False``: tables only); a training
    log and the evaluation right after it at the same step share one table (``test/nll`` by the loss)."""

    def __init__(self, show_progress: bool = True) -> None:
        super().__init__()
        self.show_progress = show_progress
        self._pending: dict[str, Any] = {}  # a training log waiting for the evaluation of the same step

    def on_train_begin(self, args, state, control, **kwargs):
        if self.show_progress:
            super().on_train_begin(args, state, control, **kwargs)
        else:
            self.current_step = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.training_bar is not None:
            super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.show_progress:
            super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_train_end(self, args, state, control, **kwargs):
        self._print(state, self._pending)
        if self.training_bar is not None:
            super().on_train_end(args, state, control, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if control.should_evaluate and not any(k.startswith("eval_") for k in logs):
            self._pending = dict(logs)  # Trainer evaluates right after this log: print both together
            return
        self._print(state, {**self._pending, **logs})

    def _print(self, state, logs: dict[str, Any]) -> None:
        self._pending = {}
        if not logs:
            return
        text = metrics_table(state.global_step, logs)
        if self.training_bar is not None:
            self.training_bar.write(text)
        else:
            print(text, flush=True)
