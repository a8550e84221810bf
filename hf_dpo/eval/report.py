"""Write evaluation results: ``results.json``, per-example JSON Lines, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_VERSUS = ("metric", "policy", "reference")


def _fmt(entry: Any) -> str:
    if isinstance(entry, Mapping) and "value" in entry:
        return f"{entry['value']:.4g} [{entry['ci_low']:.4g}, {entry['ci_high']:.4g}]"
    return f"{entry:.4g}" if isinstance(entry, float) else str(entry)


def write_jsonl(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")


def _table(title: str, *columns: str) -> list[str]:
    """A markdown section heading and table header with ``columns``."""
    return [f"## {title}", "", f"| {' | '.join(columns)} |", "|" + " --- |" * len(columns)]


def _row(label: str, policy: Any, reference: Any) -> str:
    return f"| {label} | {_fmt(policy)} | {_fmt(reference)} |"


def markdown_report(results: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    """A short markdown summary: one table per task (value and bootstrap CI), then the plots."""
    lines = [f"# Evaluation of `{results['model_path']}`", "", f"Reference: `{results['reference']}`", ""]
    conf = results.get("confidence", 0.95)
    if pref := results.get("preference"):
        title = f"Preference (held-out, {pref['num_pairs']} pairs; {conf:.0%} bootstrap CI)"
        lines += _table(title, "metric", "value [CI]")
        lines += [f"| {k} | {_fmt(v)} |" for k, v in pref.items() if isinstance(v, Mapping) and "value" in v]
        lines.append("")
    if gen := results.get("generation"):
        lines += _table(f"Generation ({gen['num_prompts']} prompts)", *_VERSUS)
        for stat in ("mean", "median", "truncated_fraction"):
            lines.append(_row(f"length {stat}", gen["length/policy"][stat], gen["length/reference"][stat]))
        if "exact_match/policy" in gen:
            lines.append(_row("exact match", gen["exact_match/policy"], gen["exact_match/reference"]))
        if "win_rate" in gen:
            lines.append(_row("judge score (mean)", gen["judge_score/policy"], gen["judge_score/reference"]))
            lines += ["", f"Win rate of the policy over the reference (ties ½): {_fmt(gen['win_rate'])}"]
        lines.append("")
    if ife := results.get("ifeval"):
        lines += _table(f"IFEval ({ife['policy']['num_prompts']} prompts, lm-evaluation-harness)", *_VERSUS)
        metrics = [k for k in ife["policy"] if k != "num_prompts"]
        lines += [f"| {k} | {ife['policy'][k]:.4f} | {ife['reference'][k]:.4f} |" for k in metrics]
        lines.append("")
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


def write_plots(
    out_dir: Path, results: Mapping[str, Any], pref_values: Mapping[str, np.ndarray] | None
) -> list[str]:
    """PNG plots of the preference rewards and policy-vs-reference bars; the file names written (none without
    matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    figures = {}
    if pref_values is not None:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        axes[0].hist(pref_values["chosen_reward"], bins=30, alpha=0.6, label="chosen")
        axes[0].hist(pref_values["rejected_reward"], bins=30, alpha=0.6, label="rejected")
        axes[0].set(title="implicit reward β·log(πθ/πref)", xlabel="reward", ylabel="pairs")
        axes[0].legend()
        axes[1].hist(pref_values["margin"], bins=30, color="tab:green")
        axes[1].axvline(0, color="k", lw=1)
        axes[1].set(title="reward margin (chosen − rejected)", xlabel="margin")
        figures["preference_rewards.png"] = fig
    bars: dict[str, tuple[float, float]] = {}
    gen = results.get("generation") or {}
    if "exact_match/policy" in gen:
        bars["exact match"] = (gen["exact_match/policy"]["value"], gen["exact_match/reference"]["value"])
    for name, value in ((results.get("ifeval") or {}).get("policy") or {}).items():
        if name != "num_prompts":
            bars[f"IFEval {name}"] = (value, results["ifeval"]["reference"][name])
    if bars:
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(bars)), 3.5))
        x = np.arange(len(bars))
        ax.bar(x - 0.2, [v[0] for v in bars.values()], 0.4, label="policy")
        ax.bar(x + 0.2, [v[1] for v in bars.values()], 0.4, label="reference")
        ax.set_xticks(x, list(bars), rotation=20, ha="right", fontsize=8)
        ax.set(ylim=(0, 1), title="policy vs reference")
        ax.legend()
        figures["policy_vs_reference.png"] = fig
    for name, fig in figures.items():
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
    return list(figures)


def write_outputs(
    out_dir: Path,
    results: Mapping[str, Any],
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    pref_values: Mapping[str, np.ndarray] | None,
    plots: bool = True,
) -> None:
    """``results.json``, ``<task>_samples.jsonl``, ``preference_pairs.jsonl`` (in dataset order), plots and
    ``report.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=float), "utf-8")
    for name, rows in records.items():
        write_jsonl(out_dir / f"{name}_samples.jsonl", rows)
    if pref_values is not None:
        columns = {k: np.asarray(v).tolist() for k, v in pref_values.items()}
        pairs = enumerate(zip(*columns.values(), strict=True))
        rows = [{"index": i, **dict(zip(columns, row, strict=True))} for i, row in pairs]
        write_jsonl(out_dir / "preference_pairs.jsonl", rows)
    written = write_plots(out_dir, results, pref_values) if plots else []
    (out_dir / "report.md").write_text(markdown_report(results, written), "utf-8")
