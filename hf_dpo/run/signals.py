"""SIGINT / SIGTERM during training: finish the optimizer step, save a checkpoint, stop cleanly; a second
signal stops at once (``KeyboardInterrupt``)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch
from transformers import TrainerCallback

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training stopped on ``signum``; ``checkpoint`` is where it can be resumed from (None: nowhere)."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        where = f"saved {checkpoint}" if checkpoint else "no checkpoint"
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopOnSignal(TrainerCallback):
    """Installs the handlers while training runs; at the end of the step in which a signal arrived (on any
    process: the flag is max-reduced across processes) asks the Trainer to save a checkpoint and stop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # a second signal: stop now
        self.signum = signum

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_step_end(self, args, state, control, **kwargs):
        received = self.signum or 0
        if torch.distributed.is_available() and torch.distributed.is_initialized() and args.world_size > 1:
            flag = torch.tensor([received], device=args.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            received = int(flag.item())
        if received:
            self.signum = received
            control.should_save = True
            control.should_training_stop = True
