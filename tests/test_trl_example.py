"""examples/trl_dpo_example.py (TRL's DPO script with only the import changed) runs offline end to end."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import HH_RLHF, TINY_MODEL, require_shared

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("extra", [[], ["--dataset_streaming", "--use_peft", "--lora_r", "4"]])
def test_trl_example_script_trains_and_saves(tmp_path, extra):
    rows = require_shared(HH_RLHF).read_text().splitlines()[:12]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(rows[:8]) + "\n")
    (data / "test.jsonl").write_text("\n".join(rows[8:]) + "\n")
    out = tmp_path / "out"
    argv = [
        *("--dataset_name", str(data), "--model_name_or_path", str(require_shared(TINY_MODEL))),
        *("--learning_rate", "5.0e-7", "--num_train_epochs", "1", "--per_device_train_batch_size", "2"),
        *("--max_steps", "2", "--gradient_accumulation_steps", "2", "--eval_strategy", "steps"),
        *("--eval_steps", "2", "--output_dir", str(out), "--no_remove_unused_columns"),
        *("--use_cpu", "--report_to", "none", "--save_strategy", "no", "--max_length", "96"),
        *("--per_device_eval_batch_size", "4", "--logging_steps", "1", "--disable_tqdm", "true"),
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    script = ROOT / "examples" / "trl_dpo_example.py"
    done = subprocess.run(
        [sys.executable, str(script), *argv], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Training completed." in done.stdout
    weights = "adapter_model.safetensors" if extra else "model.safetensors"
    assert (out / weights).exists(), sorted(p.name for p in out.iterdir())
    source = script.read_text()
    assert "from hf_dpo import DPOConfig, DPOTrainer  # was: from trl import DPOConfig, DPOTrainer" in source
    assert "eval_loss" in done.stdout  # --eval_strategy steps evaluated the test split
