"""Reference policies πref: where the reference log-probs of a batch come from."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel

from .forward import sequence_logps


class ReferencePolicy(abc.ABC):
    """Gives the summed reference log-probs (2B,) of a collated batch, without gradient."""

    @abc.abstractmethod
    def logps(self, policy: torch.nn.Module, batch: Mapping[str, Any], chunk_size: int) -> torch.Tensor:
        """Reference log-probs ordered ``[chosen_1..B ; rejected_1..B]``."""

    def to(self, device: torch.device) -> ReferencePolicy:
        return self


class FrozenCopyReference(ReferencePolicy):
    """A separate frozen model (by default an in-memory copy of the initial policy), in eval mode."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval().requires_grad_(False)

    def logps(self, policy: torch.nn.Module, batch: Mapping[str, Any], chunk_size: int) -> torch.Tensor:
        with torch.no_grad():
            return sequence_logps(self.model, batch, chunk_size).logps

    def to(self, device: torch.device) -> FrozenCopyReference:
        self.model.to(device)
        return self


class AdapterDisabledReference(ReferencePolicy):
    """The policy itself with its PEFT adapters disabled: the base model, with no second copy of weights."""

    def logps(self, policy: torch.nn.Module, batch: Mapping[str, Any], chunk_size: int) -> torch.Tensor:
        was_training = policy.training
        policy.eval()  # the reference never sees dropout
        try:
            with torch.no_grad(), extract_model_from_parallel(policy).disable_adapter():
                return sequence_logps(policy, batch, chunk_size).logps
        finally:
            policy.train(was_training)
