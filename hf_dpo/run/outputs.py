"""Files a run writes to log_path while it trains: ``metrics.jsonl`` and PNG plots of the curves."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger("hf_dpo")

# panel file name -> (title, [(metric key, label)])
PLOTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "loss": ("DPO loss", [("dpo_loss", "train"), ("eval_dpo_loss", "test")]),
    "accuracy": ("Reward accuracy", [("accuracy", "train"), ("eval_accuracy", "test")]),
    "margin": ("Reward margin", [("margin", "train"), ("eval_margin", "test")]),
    "rewards": (
        "Implicit rewards",
        [
            ("chosen_reward", "chosen (train)"),
            ("rejected_reward", "rejected (train)"),
            ("eval_chosen_reward", "chosen (test)"),
            ("eval_rejected_reward", "rejected (test)"),
        ],
    ),
    "test_nll": ("Test NLL of chosen completions (per token)", [("test/nll", "test")]),
    "on_policy": (
        "On-policy judge scores (one point per round)",
        [
            ("on_policy/score_mean", "samples: mean"),
            ("on_policy/score_best", "samples: best of group"),
            ("heldout/exact_match", "held-out: exact match"),
            ("heldout/judge_score", "held-out: judge score"),
            ("heldout/win_rate_vs_initial", "held-out: win rate vs initial"),
        ],
    ),
}


def read_metrics(path: str | Path, whole: bool = False) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` ([] if missing). A cut-off last line (a kill while appending) is dropped
    with a warning unless ``whole`` (a file written whole); other bad lines raise ``ValueError``."""
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text("utf-8", "replace").splitlines()
    lines = [(n, line) for n, line in enumerate(text, 1) if line.strip()]
    rows = []
    for i, (number, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if whole or i < len(lines) - 1:
                raise ValueError(
                    f"{path}, line {number}: not valid JSON ({e.msg}); fix or delete that line"
                ) from None
            logger.warning("%s: dropping the cut-off last line %d (%s)", path, number, e.msg)
    return rows


class MetricsFileCallback(TrainerCallback):
    """Appends one JSON object per train or eval log to ``path`` (main process). On resume from step
    ``resume_step``, rows written after that step by the interrupted run are dropped first (all rows when
    there was no checkpoint: the run starts again from step 0)."""

    def __init__(self, path: str | Path, resume_step: int = 0) -> None:
        self.path = Path(path)
        self.resume_step = resume_step
        self._truncated = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        if not self._truncated:
            last = self.resume_step if self.resume_step > 0 else -1  # no checkpoint: drop every row
            rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= last]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
            self._truncated = True
        row = {"step": state.global_step, "epoch": state.epoch}
        row.update({k: v for k, v in logs.items() if isinstance(v, (int, float, str)) and k != "total_flos"})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def write_plots(rows: list[dict[str, Any]], directory: str | Path) -> list[Path]:
    """One PNG per panel of ``PLOTS`` that has data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    plottable = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    for name, (title, series) in PLOTS.items():
        curves = [
            (label, [(r["step"], r[key]) for r in rows if plottable(r.get(key))]) for key, label in series
        ]
        curves = [(label, points) for label, points in curves if points]
        if not curves:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in curves:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
        ax.set(title=title, xlabel="optimizer step")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        out = directory / f"{name}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written


class PlotCallback(TrainerCallback):
    """Redraws the PNG plots from ``metrics.jsonl`` after each evaluation and at the end of training."""

    def __init__(self, directory: str | Path, metrics_path: str | Path) -> None:
        self.directory = Path(directory)
        self.metrics_path = Path(metrics_path)

    def on_evaluate(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            write_plots(read_metrics(self.metrics_path), self.directory)

    on_train_end = on_evaluate
