"""Faults and mistakes cost no data: refused bad values, NaN policy, atomic checkpoints, the log_path lock,
signals, finished runs, multi-process launches, cut-off files (docs/running.md, "Guarantees")."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, require_shared
from safetensors.torch import load_file

from hf_dpo.config import DPOConfig
from hf_dpo.run.checkpoints import STAGING_DIR, checkpoint_problem
from hf_dpo.run.launch import distributed_mismatch
from hf_dpo.run.lock import LOCK_FILE
from hf_dpo.run.outputs import read_metrics
from hf_dpo.train import TrainConfig, main
from hf_dpo.trainer import DPOTrainer

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
ROOT = Path(__file__).resolve().parents[1]


def _args(log_path, *extra):
    return [
        f"log_path={log_path}",
        f"model_name={require_shared(TINY_MODEL)}",
        "dataset=arithmetic",
        "dataset_options.num_train=16",
        "dataset_options.num_test=4",
        "per_device_train_batch_size=2",
        "logging_steps=1",
        "eval_strategy=no",
        "quiet=true",
        "dataloader_pin_memory=false",
        "seed=0",
        *extra,
    ]


def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _train_steps(log_path) -> list[int]:
    return [r["step"] for r in read_metrics(Path(log_path) / "metrics.jsonl") if "loss" in r]


def _all_finite(checkpoint: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


# ---- refused before anything is written ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("option", "needle"),
    [
        ("per_device_train_batch_size=0", "per_device_train_batch_size must be an integer >= 1"),
        ("learning_rate=-1e-5", "learning_rate must be a finite number >= 0"),
        ("learning_rate=nan", "learning_rate must be a finite number >= 0"),
        ("gradient_accumulation_steps=0", "gradient_accumulation_steps must be an integer >= 1"),
        ("dpo_beta=inf", "beta must be > 0 and finite"),
        ("num_train_epochs=0", "would train zero steps"),
    ],
)
def test_bad_values_are_refused_by_the_cli_and_dpo_config(tmp_path, capsys, option, needle):
    log = tmp_path / "run"
    assert main(_args(log, option)) == 2
    err = _error(capsys)
    assert needle in err and err.count("\n") == 1, err
    assert not log.exists()
    key, value = option.split("=")
    key = {"dpo_beta": "beta"}.get(key, key)
    value = float(value) if key in ("learning_rate", "beta", "num_train_epochs") else int(value)
    with pytest.raises(ValueError, match=needle):
        DPOConfig(output_dir=str(log), **{key: value})
    DPOConfig(output_dir=str(log), num_train_epochs=0, max_steps=3)  # max_steps decides: fine


_ROW = b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n'


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.jsonl", b"", "is empty"),
        ("cut.jsonl", _ROW + b'{"prompt": "a", "cho', "line 2: not valid JSON"),
        ("quote.csv", b'prompt,chosen,rejected\na,b,c\n"a,b,c\nd,e,f\n', "line 3:"),
        ("latin.jsonl", _ROW + _ROW.replace(b'"a"', b'"caf\xe9"'), "line 2: bytes that are not UTF-8"),
    ],
)
def test_bad_data_files_name_the_file_and_line(tmp_path, capsys, name, content, needle):
    data = tmp_path / name
    data.write_bytes(content)
    log = tmp_path / "run"
    argv = [
        f"log_path={log}",
        f"model_name={require_shared(TINY_MODEL)}",
        "dataset=custom",
        f"data_files={data}",
    ]
    assert main(argv) == 2
    err = _error(capsys)
    assert str(data) in err and needle in err, err
    assert not log.exists()


# ---- NaN policy -------------------------------------------------------------------------------------------
def test_a_nan_gradient_stops_before_the_update_and_no_checkpoint_is_poisoned(tmp_path, capsys):
    log = tmp_path / "run"
    assert main(_args(log, "max_steps=4", "save_steps=1", "learning_rate=1e6", "max_nonfinite_steps=0")) == 1
    err = _error(capsys)
    assert "non-finite" in err and "before the optimizer step" in err and "learning_rate" in err, err
    checkpoints = sorted(log.glob("checkpoint-*"))
    assert checkpoints and all(_all_finite(c) for c in checkpoints)  # checkpoint-1 was saved, and is sane
    assert not (log / "final").exists()
    assert len(_train_steps(log)) == len(checkpoints) < 4  # the failing step logged nothing


def test_nan_gradient_steps_are_skipped_and_the_run_keeps_its_last_finite_weights(tmp_path):
    """The default NaN policy: steps 2-4 have NaN gradient norms (lr 1e6), each is skipped and counted;
    the run finishes and its final weights are step 1's."""
    log = tmp_path / "run"
    assert main(_args(log, "max_steps=4", "save_steps=1", "learning_rate=1e6")) == 0
    records = read_metrics(log / "metrics.jsonl")
    skipped = [r["skipped_steps"] for r in records if "loss" in r and "skipped_steps" in r]
    assert skipped == [1, 2, 3]
    first, final = (load_file(p / "model.safetensors") for p in (log / "checkpoint-1", log / "final"))
    assert all(torch.equal(first[k], final[k]) and torch.isfinite(final[k]).all() for k in first)


def test_weights_that_are_not_finite_are_never_saved(tmp_path):
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    from hf_dpo.run.finite import check_weights

    with pytest.raises(FloatingPointError, match="not saving checkpoint-7: 1 parameter"):
        check_weights(model, "checkpoint-7")


# ---- atomic checkpoints, resume=auto picks a complete one, cut-off metrics line -------------------------
class _KilledDuringSave(Exception):
    pass


def test_a_save_cut_off_leaves_no_checkpoint_and_resume_skips_a_broken_one(
    tmp_path, capsys, monkeypatch, caplog
):
    log = tmp_path / "run"
    real = DPOTrainer._save_optimizer_and_scheduler

    def killed_at_step_2(self, output_dir):
        if self.state.global_step == 2:
            raise _KilledDuringSave  # the model files of checkpoint-2 are written, the rest is not
        real(self, output_dir)

    monkeypatch.setattr(DPOTrainer, "_save_optimizer_and_scheduler", killed_at_step_2)
    with pytest.raises(_KilledDuringSave):
        main(_args(log, "max_steps=3", "save_steps=1"))
    monkeypatch.undo()
    assert sorted(p.name for p in log.glob("checkpoint-*")) == ["checkpoint-1"]
    assert checkpoint_problem(log / "checkpoint-1") is None
    assert (log / STAGING_DIR / "checkpoint-2" / "model.safetensors").exists()  # the half-written one
    # what a non-atomic writer leaves, and a metrics line cut off by the kill
    (log / "checkpoint-2").mkdir()
    shutil.copy(log / "checkpoint-1" / "config.json", log / "checkpoint-2")
    with (log / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.69')
    with caplog.at_level(logging.INFO, logger="hf_dpo"):
        assert main(_args(log, "max_steps=3", "save_steps=1", "resume=auto")) == 0
    assert "skipping checkpoint-2: no trainer_state.json" in caplog.text
    assert f"resuming from {log / 'checkpoint-1'}" in caplog.text
    assert "dropping the cut-off last line" in caplog.text
    assert _train_steps(log) == [1, 2, 3]
    for step in (1, 2, 3):
        assert checkpoint_problem(log / f"checkpoint-{step}") is None
    assert not (log / STAGING_DIR).exists()


def test_read_metrics_drops_only_a_cut_off_last_line(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        assert read_metrics(path) == [{"step": 1}, {"step": 2}]
    assert "line 3" in caplog.text
    path.write_text('{"step": 1}\n{"st\n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path)
    # a file written whole (on-policy pairs.jsonl) has no cut-off line: a bad last line is an error
    path.write_text('{"step": 1}\n{"st')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path, whole=True)


# ---- finished runs, `..` in log_path ---------------------------------------------------------------------
def test_resume_auto_on_a_finished_run_does_nothing(tmp_path, capsys):
    log = tmp_path / "runs" / "a" / ".." / "b"
    assert main(_args(log, "max_steps=2", "save_steps=1")) == 0
    done = tmp_path / "runs" / "b"
    assert not (tmp_path / "runs" / "a").exists() and (done / "final" / "model.safetensors").exists()
    assert TrainConfig(log_path=str(log), model_name="m", dataset="d").log_path == str(done)
    before = {p.name: p.stat().st_mtime_ns for p in done.rglob("*")}
    capsys.readouterr()
    assert main(_args(done, "max_steps=2", "save_steps=1", "resume=auto")) == 0
    assert "already complete (step 2" in _error(capsys)
    assert {p.name: p.stat().st_mtime_ns for p in done.rglob("*")} == before
    # stopped after saving the last checkpoint but before final/: final/ is written from it, no extra step
    shutil.rmtree(done / "final")
    (done / "trainer_state.json").unlink()
    assert main(_args(done, "max_steps=2", "save_steps=1", "resume=auto")) == 0
    assert (done / "final" / "model.safetensors").exists() and not (done / "checkpoint-3").exists()
    assert _train_steps(done) == [1, 2]
    saved, final = (
        load_file(done / "checkpoint-2" / "model.safetensors"),
        load_file(done / "final" / "model.safetensors"),
    )
    assert all(torch.equal(saved[k], final[k]) for k in final)
    assert main(_args(done, "max_steps=3", "save_steps=1", "resume=auto")) == 0  # more steps: trains on
    assert _train_steps(done) == [1, 2, 3]


# ---- the log_path lock ---------------------------------------------------------------------------------
_HOLD = "import sys, time; from hf_dpo.run.lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"  # noqa: E501


def test_a_second_run_is_refused_while_the_first_holds_log_path(tmp_path, capsys, caplog):
    log = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(log)],
        stdout=subprocess.PIPE,
        text=True,
        env={**ENV, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        for mode in ("refuse", "auto", "overwrite"):
            assert main(_args(log, "max_steps=1", f"resume={mode}")) == 2
            err = _error(capsys)
            assert f"in use by another run (pid {holder.pid})" in err, err
        assert [p.name for p in log.iterdir()] == [LOCK_FILE]
    finally:
        holder.kill()  # dies holding the lock: the kernel drops it, the pid stays in the file
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        assert main(_args(log, "max_steps=1")) == 0
    assert f"took over the lock of pid {holder.pid}" in caplog.text
    assert (log / "final").is_dir() and (log / LOCK_FILE).read_text() == ""  # released at the end


# ---- signals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_with_one_line(tmp_path, signum, code):
    log = tmp_path / "run"
    cmd = [sys.executable, "-m", "hf_dpo.train", *_args(log, "max_steps=100000", "save_strategy=no")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**ENV, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 300
    while not _train_steps(log) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signum)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"hf-dpo-train: stopped by {signal.Signals(signum).name} after step"), last
    checkpoint = Path(last.split("saved ")[1].split(";")[0])
    assert checkpoint.parent == log and checkpoint_problem(checkpoint) is None
    assert int(checkpoint.name.split("-")[1]) == max(_train_steps(log))
    assert not (log / "final").exists()


# ---- several processes ---------------------------------------------------------------------------------
_LAUNCHERS = {
    "accelerate": [
        "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "hf_dpo.train",
    ],
    "torchrun": ["-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "hf_dpo.train"],
}  # fmt: skip


@pytest.mark.parametrize("launcher", sorted(_LAUNCHERS))
def test_two_cpu_processes_without_use_cpu_are_one_data_parallel_run(tmp_path, launcher):
    log = tmp_path / "run"
    cmd = [sys.executable, *_LAUNCHERS[launcher], *_args(log, "max_steps=2", "save_steps=2")]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**ENV, "PYTHONPATH": str(ROOT)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_metrics(log / "metrics.jsonl")
    train = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train] == [1, 2]  # each step logged once, by the main process
    assert all(r["num_pairs"] == 4 for r in train)  # 2 pairs per process x 2 processes
    assert len([r for r in rows if "train_loss" in r]) == 1
    assert checkpoint_problem(log / "checkpoint-2") is None and (log / "final" / "README.md").exists()


def test_a_launch_whose_trainer_is_not_distributed_is_an_error(monkeypatch):
    class Args:
        world_size = 1
        distributed_state = None

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "launched as 2 processes" in distributed_mismatch(Args())
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed_mismatch(Args()) is None


# ---- hf_dpo.eval on damaged runs -----------------------------------------------------------------------
def test_eval_reports_a_corrupt_config_or_a_truncated_model(tmp_path, capsys):
    from hf_dpo.eval.runner import main as eval_main

    run_dir = tmp_path / "run"
    shutil.copytree(require_shared(TINY_MODEL), run_dir / "final")
    (run_dir / "config.yaml").write_text("model_name: [unclosed\n")
    assert eval_main([f"model_path={run_dir}", "tasks=preference"]) == 2
    err = _error(capsys)
    assert "config.yaml is not valid YAML" in err, err
    (run_dir / "config.yaml").unlink()
    weights = run_dir / "final" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert eval_main([f"model_path={run_dir}", f"model_name={TINY_MODEL}", "tasks=preference"]) == 2
    err = _error(capsys)
    assert "cannot load the policy" in err and "truncated" in err, err
