"""A whole tiny run through hf_dpo.train.run: log_path layout, metrics.jsonl, plots, console table, resume."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_MODEL, require_shared
from transformers import AutoModelForCausalLM, TrainerCallback

from hf_dpo.run.cli_config import config_to_dict, load_config
from hf_dpo.run.console import format_value, metrics_table
from hf_dpo.run.outputs import read_metrics
from hf_dpo.train import RunSetupError, TrainConfig, run


def _config(log_path, *extra):
    return load_config(
        TrainConfig,
        [
            f"log_path={log_path}",
            f"model_name={require_shared(TINY_MODEL)}",
            "dataset=arithmetic",
            "dataset_options.num_train=16",
            "dataset_options.num_test=4",
            "max_steps=6",
            "logging_steps=1",
            "per_device_train_batch_size=4",
            "learning_rate=1e-3",
            "save_steps=3",
            "eval_strategy=steps",
            "eval_steps=3",
            "seed=3",
            "dataloader_pin_memory=false",
            *extra,
        ],
    )


class StopAt(TrainerCallback):
    """Simulates an interrupted job: training stops after step ``step`` (its checkpoint is written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def _train_losses(path):
    return {r["step"]: r["loss"] for r in read_metrics(path / "metrics.jsonl") if "loss" in r}


def test_run_writes_log_path_and_resume_continues_exactly(tmp_path, capsys):
    full = run(_config(tmp_path / "full"))
    log = full.log_path
    # layout
    assert {"config.yaml", "metrics.jsonl", "final", "plots", "checkpoint-3", "checkpoint-6"} <= {
        p.name for p in log.iterdir()
    }
    assert config_to_dict(load_config(TrainConfig, [str(log / "config.yaml")])) == config_to_dict(
        _config(tmp_path / "full")
    )
    rows = read_metrics(log / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    evals = [r for r in rows if "eval_loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6] and [r["step"] for r in evals] == [3, 6]
    assert all(r["num_pairs"] == 4 and 0 <= r["accuracy"] <= 1 for r in train)
    assert all(r["test/nll"] == r["eval_nll"] > 0 and r["eval_num_pairs"] == 4 for r in evals)
    assert full.eval_metrics["eval_loss"] == evals[-1]["eval_loss"]  # the step-6 eval is reused, not redone
    for name in ("loss", "accuracy", "margin", "rewards", "test_nll"):
        assert (log / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = AutoModelForCausalLM.from_pretrained(log / "final")
    assert model.num_parameters() > 0 and (log / "final" / "tokenizer.json").exists()
    card = (log / "final" / "README.md").read_text()
    assert f"`{TINY_MODEL.name}`" in card and str(TINY_MODEL.parent) not in card  # no local paths
    assert card.split("---", 2)[2].startswith("\n\n# full\n") and "arithmetic" in card
    assert "| dpo_beta | 0.1 |" in card
    assert "eval_accuracy" in card and "AutoModelForCausalLM.from_pretrained" in card
    out = capsys.readouterr()
    assert "Step 6" in out.out + out.err and "┃ Metric" in out.out + out.err

    # interrupted after step 3, then resumed: the loss curve equals the uninterrupted one
    run(_config(tmp_path / "resumed"), callbacks=[StopAt(3)])
    assert max(_train_losses(tmp_path / "resumed")) == 3
    with pytest.raises(RunSetupError, match="already holds a run"):
        run(_config(tmp_path / "resumed"))
    run(_config(tmp_path / "resumed", "resume=auto"))
    resumed, reference = _train_losses(tmp_path / "resumed"), _train_losses(log)
    assert list(resumed) == [1, 2, 3, 4, 5, 6]
    for step, loss in reference.items():
        assert resumed[step] == pytest.approx(loss, rel=1e-5, abs=1e-6), step
    assert reference[6] != pytest.approx(reference[1], abs=1e-4)  # the run moved: the check can fail

    # overwrite starts over
    run(_config(tmp_path / "resumed", "resume=overwrite", "max_steps=2", "eval_strategy=no"))
    assert list(_train_losses(tmp_path / "resumed")) == [1, 2]


def test_console_table_format():
    assert [format_value(v) for v in (255, 27.95371, 0.0536214, 9e-6, 5e-8, 112638.0)] == [
        "255",
        "27.9537",
        "0.053621",
        "0.000009",
        "5.000e-08",
        "112638",
    ]
    text = metrics_table(50, {"dpo_loss": 0.683825, "accuracy": 0.568627, "epoch": 1.0, "test/nll": 1.87})
    lines = text.splitlines()
    assert lines[0] == "Step 50" and "Metric" in lines[2] and "Value" in lines[2]
    body = [line for line in lines if "│" in line]
    assert [b.split("│")[1].strip() for b in body] == ["accuracy", "dpo_loss", "test/nll"]  # sorted, no epoch
    assert "0.683825" in body[1]


def test_metrics_file_drops_rows_after_the_resumed_checkpoint(tmp_path):
    from hf_dpo.run.outputs import MetricsFileCallback

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in range(1, 6)))

    class State:
        is_world_process_zero, global_step, epoch = True, 4, 1.0

    MetricsFileCallback(path, resume_step=3).on_log(None, State(), None, logs={"loss": 0.5})
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 1), (2, 2), (3, 3), (4, 0.5)]


def test_metrics_file_restarts_when_resuming_without_a_checkpoint(tmp_path):
    from hf_dpo.run.outputs import MetricsFileCallback

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "eval_loss": 0.69}) + "\n" for s in (0, 0)))

    class State:
        is_world_process_zero, global_step, epoch = True, 0, 0.0

    MetricsFileCallback(path, resume_step=0).on_log(None, State(), None, logs={"eval_loss": 0.7})
    assert [r["eval_loss"] for r in read_metrics(path)] == [0.7]  # the old step-0 rows are gone
