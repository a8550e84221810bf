"""Checkpoints that are either complete or absent (written to ``.checkpoint-staging/``, then renamed once
every process has finished), and how ``resume=auto`` chooses one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import safe_open
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from hf_dpo.run.finite import check_weights

logger = logging.getLogger("hf_dpo")

STAGING_DIR = ".checkpoint-staging"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "adapter_model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.bin",
)


@contextlib.contextmanager
def staged_checkpoint(trainer: Any) -> Iterator[str]:
    """Around ``Trainer._save_checkpoint``: yields the staging directory to write ``checkpoint-N`` into,
    then publishes it under ``output_dir`` with one rename and applies ``save_total_limit`` there."""
    name = f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"
    check_weights(trainer.model, name)
    run_dir = Path(trainer.args.output_dir)
    staging = run_dir / STAGING_DIR
    main = trainer.args.should_save
    if main:
        shutil.rmtree(staging / name, ignore_errors=True)  # left by a save that was cut off
    trainer.accelerator.wait_for_everyone()
    yield str(staging)
    trainer.accelerator.wait_for_everyone()  # every process has written its part
    if main:
        target = run_dir / name
        if target.exists():  # an incomplete checkpoint that resume skipped
            shutil.rmtree(target)
        for path in (staging / name).rglob("*"):  # on disk before the rename makes it visible
            if path.is_file():
                with contextlib.suppress(OSError), open(path, "rb") as f:
                    os.fsync(f.fileno())
        os.replace(staging / name, target)
        with contextlib.suppress(OSError):
            staging.rmdir()
        best = trainer.state.best_model_checkpoint
        if best and Path(best).parent == staging:
            trainer.state.best_model_checkpoint = str(run_dir / Path(best).name)
            trainer.state.save_to_json(str(target / TRAINER_STATE))
        rotate_checkpoints(
            output_dir=str(run_dir),
            save_total_limit=trainer.args.save_total_limit,
            best_model_checkpoint=trainer.state.best_model_checkpoint,
            use_mtime=True,
        )
    trainer.accelerator.wait_for_everyone()


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why ``directory`` cannot be resumed from (None if it looks complete and loadable)."""
    directory = Path(directory)
    state_file = directory / TRAINER_STATE
    if not state_file.is_file():
        return f"no {TRAINER_STATE} (the save was cut off)"
    try:
        json.loads(state_file.read_text(encoding="utf-8"))["global_step"]
    except (ValueError, KeyError, UnicodeDecodeError):
        return f"{TRAINER_STATE} is unreadable"
    weights = [directory / f for f in _WEIGHT_FILES if (directory / f).is_file()]
    sharded = any(p.is_dir() for p in directory.iterdir())  # FSDP / DeepSpeed shard directories
    if not weights and not sharded:
        return "no model weights"
    for path in directory.glob("*.safetensors"):
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error type for a cut-off file
            return f"{path.name} is unreadable ({type(e).__name__}: {e})"
    return None


def newest_resumable_checkpoint(run_dir: str | Path) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest ``checkpoint-N`` in ``run_dir`` that :func:`checkpoint_problem` accepts, and the newer
    ones skipped, each with the reason."""
    run_dir = Path(run_dir)
    found = [
        (int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))
    ]
    skipped = []
    for _, path in sorted(found, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return str(path), skipped
        skipped.append((path.name, problem))
    return None, skipped


def _covered_step(state_file: Path, max_steps: int, num_train_epochs: float) -> int | None:
    """The step of the run saved in ``state_file`` if it has trained ``max_steps`` (or, with
    ``max_steps <= 0``, the epochs); None if not, or if the file is unreadable."""
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        if not {"global_step", "max_steps", "num_train_epochs"} <= set(state):
            return None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    step = state["global_step"]
    if max_steps > 0:
        return step if step >= max_steps else None
    return step if step >= state["max_steps"] and num_train_epochs <= state["num_train_epochs"] else None


def finished_step(run_dir: str | Path, max_steps: int, num_train_epochs: float) -> int | None:
    """The step at which an earlier run in ``run_dir`` finished (``final/`` written), if that already covers
    ``max_steps`` (or, with ``max_steps <= 0``, ``num_train_epochs``); None if there is more to do."""
    run_dir = Path(run_dir)
    final = (run_dir / "final").is_dir()
    return _covered_step(run_dir / TRAINER_STATE, max_steps, num_train_epochs) if final else None


def checkpoint_covers(checkpoint: str | Path, max_steps: int, num_train_epochs: float) -> bool:
    """Whether ``checkpoint`` already holds the last step (a run stopped after saving it, before ``final/``):
    resuming it must not train a step past the end."""
    return _covered_step(Path(checkpoint) / TRAINER_STATE, max_steps, num_train_epochs) is not None
