"""2 processes x per-device batch 2 (gloo, CPU) take the same optimizer step as 1 process x batch 4.

On a machine without GPUs, `accelerate launch --cpu --num_processes 2` starts a single process (accelerate's
simple launcher); `--multi_gpu` selects its torchrun launcher, and each process then runs on CPU with gloo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, require_shared

SCRIPT = Path(__file__).with_name("mp_one_step.py")


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_processes_match_one_process_with_the_global_batch(tmp_path):
    require_shared(TINY_MODEL)
    _run([sys.executable, str(SCRIPT), str(tmp_path / "one"), "4"])
    _run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--multi_gpu",  # accelerate's torchrun launcher; with no GPU the processes use CPU + gloo
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(SCRIPT),
            str(tmp_path / "two"),
            "2",
        ]
    )
    one, two = torch.load(tmp_path / "one" / "params.pt"), torch.load(tmp_path / "two" / "params.pt")
    start = __import__("transformers").AutoModelForCausalLM.from_pretrained(TINY_MODEL).state_dict()
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-4  # the step changed the weights, so the comparison below can fail
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-5, atol=1e-6, msg=key)
    log_one = json.loads((tmp_path / "one" / "log.json").read_text())[0]
    log_two = json.loads((tmp_path / "two" / "log.json").read_text())[0]
    assert log_one["num_pairs"] == log_two["num_pairs"] == 4  # global: both processes' pairs
    for key in ("dpo_loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "num_tokens"):
        assert log_two[key] == pytest.approx(log_one[key], rel=1e-5, abs=1e-6), key
