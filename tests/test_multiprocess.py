"""2 processes x per-device batch 2 (gloo, CPU) take the same optimizer step as 1 process x batch 4, under DDP
and under FSDP2 (FULL_SHARD, policy and reference sharded): the CPU proxy for multi-GPU training.

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
from conftest import TINY_MODEL, TWO_PROCESS_LAUNCH, require_shared

SCRIPT = Path(__file__).with_name("mp_one_step.py")


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """1 process x batch 4: the reference run of the multi-process tests."""
    require_shared(TINY_MODEL)
    out = tmp_path_factory.mktemp("mp") / "one"
    _run([sys.executable, str(SCRIPT), str(out), "4"])
    return out


def _two_processes(out: Path, mode: str) -> None:
    _run(
        [
            sys.executable,
            *TWO_PROCESS_LAUNCH,
            str(SCRIPT),
            str(out),
            "2",
            mode,
        ]
    )


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_two_processes_match_one_process_with_the_global_batch(one_process: Path, tmp_path, mode: str):
    """DDP, and FSDP2 FULL_SHARD with the policy and the reference sharded (asserted in mp_one_step.py)."""
    two_process = tmp_path / mode
    _two_processes(two_process, mode)
    one, two = torch.load(one_process / "params.pt"), torch.load(two_process / "params.pt")
    start = __import__("transformers").AutoModelForCausalLM.from_pretrained(TINY_MODEL).state_dict()
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-4  # the step changed the weights, so the comparison below can fail
    assert set(two) == set(one)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-6, msg=key)
    log_one = json.loads((one_process / "log.json").read_text())[0]
    log_two = json.loads((two_process / "log.json").read_text())[0]
    assert log_one["num_pairs"] == log_two["num_pairs"] == 4  # global: both processes' pairs
    for key in ("loss", "dpo_loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "num_tokens"):
        assert log_two[key] == pytest.approx(log_one[key], rel=1e-6, abs=1e-6), key
