"""Reference policies πref: where a batch's reference log-probs come from (docs/reference_policies.md).

A batch with precomputed ``ref_chosen_logps``/``ref_rejected_logps`` columns is answered from them, any other
by the policy's own source (``forward_logps``); ``make_reference`` picks the policy.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from accelerate.utils import extract_model_from_parallel

from hf_dpo.modeling.forward import ChosenRejectedLogps, sequence_logps
from hf_dpo.modeling.unwrap import base_causal_lm
from hf_dpo.tokens.tokenization import REF_COLUMNS

REFERENCE_ADAPTER = "reference"
Batch = Mapping[str, Any]
logger = logging.getLogger("hf_dpo")


class ReferencePolicy(abc.ABC):
    """The summed reference log-probs of a collated batch's chosen and rejected completions (no gradient)."""

    def logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps | None:
        """log πref(y_w|x) and log πref(y_l|x) of the batch's B pairs, each (B,): from its precomputed columns
        (lengths counted from ``target_seq``) when it has them, else from ``forward_logps``."""
        if not all(column in batch for column in REF_COLUMNS):
            return self.forward_logps(policy, batch, chunk_size)
        num_tokens = torch.bincount(batch["target_seq"], minlength=2 * batch["num_pairs"]).float()
        chosen, rejected = (batch[column] for column in REF_COLUMNS)
        return ChosenRejectedLogps(chosen, rejected, *num_tokens.chunk(2))

    @abc.abstractmethod
    def forward_logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps:
        """The log-probs from this policy's own source (a no-grad forward)."""

    valid_after_training = True  # False: the source is the policy itself, which training changes

    def to(self, device: torch.device) -> ReferencePolicy:
        return self

    def named_weights(self, policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor the reference log-probs depend on (used to key the precompute cache)."""
        return iter(())

    def release(self, policy: torch.nn.Module) -> None:  # noqa: B027 (optional hook)
        """Free what this policy holds (called when precomputed log-probs replace it)."""

    def hidden_from_save(
        self, policy: torch.nn.Module, state_dict: dict | None = None
    ) -> contextlib.AbstractContextManager:
        """Context in which saving ``policy`` writes only what the user trains; it yields the state dict to
        save (``state_dict`` as given here)."""
        return contextlib.nullcontext(state_dict)

    def fingerprint(self, policy: torch.nn.Module) -> str:
        """sha256 of the reference weights (names, dtypes, shapes, bytes) and the model config."""
        hasher = hashlib.sha256()
        config = getattr(base_causal_lm(policy), "config", None)
        if config is not None:
            hasher.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.named_weights(policy), key=lambda item: item[0]):
            # a DTensor's local shard; a DeepSpeed ZeRO-3 parameter's local partition (not its empty data)
            tensor = tensor.to_local() if hasattr(tensor, "to_local") else tensor
            tensor = getattr(tensor, "ds_tensor", tensor)
            tensor = tensor.detach().contiguous().cpu()
            hasher.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        return hasher.hexdigest()


class FrozenCopyReference(ReferencePolicy):
    """A separate frozen model (by default an in-memory copy of the initial policy), in eval mode."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model: torch.nn.Module | None = model.eval().requires_grad_(False)

    def forward_logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps:
        with torch.no_grad():
            return sequence_logps(self.model, batch, chunk_size)

    def to(self, device: torch.device) -> FrozenCopyReference:
        self.model.to(device)
        return self

    def named_weights(self, policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        yield from _named_tensors(self.model)

    def fingerprint(self, policy: torch.nn.Module) -> str:
        return super().fingerprint(self.model)

    def release(self, policy: torch.nn.Module) -> None:
        self.model = None


class AdapterDisabledReference(ReferencePolicy):
    """The policy itself with its PEFT adapters disabled: the base model, with no second copy of weights."""

    def forward_logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps:
        with eval_no_grad(policy), extract_model_from_parallel(policy).disable_adapter():
            return sequence_logps(policy, batch, chunk_size)

    def named_weights(self, policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        adapters = set(_peft_model(policy).peft_config)
        return ((n, t) for n, t in _named_tensors(policy) if not _adapter_of(n, adapters))


class AdapterSnapshotReference(ReferencePolicy):
    """An already-adapted ``PeftModel`` as it was at the start: base + a frozen copy of the initial adapter,
    added as the adapter ``"reference"`` and switched in for the reference forward (never saved)."""

    def __init__(self, policy: torch.nn.Module) -> None:
        peft_model = _peft_model(policy)
        self.adapter = peft_model.active_adapter
        if not isinstance(self.adapter, str):
            raise ValueError(
                f"the PeftModel has several active adapters {self.adapter}; activate exactly one"
            )
        if REFERENCE_ADAPTER in peft_model.peft_config:
            raise ValueError(
                f"the PeftModel already has an adapter named {REFERENCE_ADAPTER!r}, which hf_dpo uses for"
                " the frozen reference snapshot; delete or rename it (model.delete_adapter) before training"
            )
        config = copy.deepcopy(peft_model.peft_config[self.adapter])
        config.inference_mode = True
        peft_model.add_adapter(REFERENCE_ADAPTER, config)
        tensors = dict(_named_tensors(peft_model))
        snapshot = [name for name in tensors if _adapter_of(name, {REFERENCE_ADAPTER})]
        with torch.no_grad():
            for name in snapshot:
                parts = (self.adapter if part == REFERENCE_ADAPTER else part for part in name.split("."))
                source = tensors.get(".".join(parts))
                if source is None:
                    raise RuntimeError(f"cannot find the trained adapter's tensor for {name}")
                tensors[name].copy_(source).requires_grad_(False)
        if not snapshot:
            raise ValueError(f"adapter {self.adapter!r} has no weights that could be copied as the reference")
        peft_model.set_adapter(self.adapter)  # keeps the trained adapter trainable, the snapshot frozen

    def forward_logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps:
        peft_model = _peft_model(policy)
        with eval_no_grad(policy):
            peft_model.set_adapter(REFERENCE_ADAPTER, inference_mode=True)
            try:
                return sequence_logps(policy, batch, chunk_size)
            finally:
                peft_model.set_adapter(self.adapter)

    def named_weights(self, policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        others = set(_peft_model(policy).peft_config) - {REFERENCE_ADAPTER}
        return ((n, t) for n, t in _named_tensors(policy) if not _adapter_of(n, others))

    def release(self, policy: torch.nn.Module) -> None:
        _peft_model(policy).delete_adapter(REFERENCE_ADAPTER)
        _peft_model(policy).set_adapter(self.adapter)

    @contextlib.contextmanager
    def hidden_from_save(self, policy: torch.nn.Module, state_dict: dict | None = None) -> Iterator[dict]:
        """Without the snapshot's config (no ``reference/`` folder) and its tensors (PEFT drops only the
        tensors of adapters still in ``peft_config``)."""
        if state_dict is None:
            state_dict = _peft_model(policy).state_dict()
        state_dict = {k: v for k, v in state_dict.items() if not _adapter_of(k, {REFERENCE_ADAPTER})}
        configs = _peft_model(policy).peft_config
        snapshot = configs.pop(REFERENCE_ADAPTER, None)
        try:
            yield state_dict
        finally:
            if snapshot is not None:
                configs[REFERENCE_ADAPTER] = snapshot


class InitialPolicyReference(ReferencePolicy):
    """The policy itself, valid only until its first update (``valid_after_training`` is False)."""

    valid_after_training = False

    def forward_logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps:
        with eval_no_grad(policy):
            return sequence_logps(policy, batch, chunk_size)

    def named_weights(self, policy: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
        yield from _named_tensors(policy)


class PrecomputedReference(ReferencePolicy):
    """Reference log-probs live in the dataset columns ``ref_chosen_logps``/``ref_rejected_logps``.
    ``source`` (None once released) computes later datasets; ``cache``: datasets with columns by fingerprint;
    ``at_init``: the fingerprints computed before training; ``offload``: the source waits on the CPU."""

    def __init__(self, source: ReferencePolicy | None = None, key: str = "") -> None:
        self.source, self.key = source, key
        self.cache: dict[str, Any] = {}
        self.at_init: set[str] = set()
        self.offload = False

    def forward_logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps:
        raise ValueError(
            "this batch has no ref_chosen_logps/ref_rejected_logps columns, and precompute_ref_log_probs="
            "True scores the reference from them. Evaluate with DPOTrainer.evaluate(eval_dataset=...) or "
            "predict(...), which add them, or add the columns with hf_dpo.reference.precompute."
        )

    def hidden_from_save(
        self, policy: torch.nn.Module, state_dict: dict | None = None
    ) -> contextlib.AbstractContextManager:
        return (self.source or super()).hidden_from_save(policy, state_dict)


class NoReference(ReferencePolicy):
    """No reference policy: the loss is reference-free. Holds nothing and answers None."""

    def logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> None:
        return None

    def forward_logps(self, policy: torch.nn.Module, batch: Batch, chunk_size: int) -> ChosenRejectedLogps:
        raise RuntimeError("the loss is reference-free (NoReference): no reference log-probs exist")


def make_reference(
    policy: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    fresh_adapter: bool,
    needed: bool = True,
    copy_free: bool = False,
) -> ReferencePolicy:
    """The reference for ``policy``: ``NoReference`` if not ``needed``; else ``ref_model``; the
    adapter-disabled base (fresh or untrained adapter); the policy itself if ``copy_free`` (read only before
    training); else the initial adapter snapshot (PEFT) or a frozen deep copy."""
    if not needed:
        if ref_model is not None:
            logger.warning("hf_dpo: the loss is reference-free, so ref_model is not used (and not kept)")
        return NoReference()
    is_peft = _is_peft(policy)
    if ref_model is not None:
        if _is_peft(ref_model):
            raise ValueError(
                "ref_model must be a plain model, not a PeftModel; merge it first (merge_and_unload)"
            )
        return FrozenCopyReference(ref_model)
    if is_peft and (fresh_adapter or _is_identity_lora(policy)):
        return AdapterDisabledReference()
    if copy_free:
        return InitialPolicyReference()
    return AdapterSnapshotReference(policy) if is_peft else FrozenCopyReference(copy.deepcopy(policy))


@contextlib.contextmanager
def eval_no_grad(policy: torch.nn.Module) -> Iterator[None]:
    """No dropout and no graph inside; the training mode is restored after."""
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        policy.train(was_training)


def _is_peft(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(extract_model_from_parallel(model), PeftModel)


def _is_identity_lora(policy: torch.nn.Module) -> bool:
    """True if the active adapter is a plain LoRA with an all-zero factor in every adapted module (PEFT's
    default start), so that the adapted model is exactly the base."""
    peft_model = _peft_model(policy)
    adapter = peft_model.active_adapter
    config = peft_model.peft_config.get(adapter) if isinstance(adapter, str) else None
    if config is None or getattr(config, "peft_type", None) != "LORA" or getattr(config, "use_dora", False):
        return False
    factors: dict[str, list[torch.Tensor]] = {}
    for name, tensor in _named_tensors(policy):
        parts = name.split(".")
        kind = next((i for i, part in enumerate(parts) if part.startswith("lora_")), None)
        if kind is not None and _adapter_of(name, {adapter}):
            factors.setdefault(".".join(parts[:kind]), []).append(tensor)
    return bool(factors) and all(any(not t.detach().any() for t in ts) for ts in factors.values())


def _peft_model(policy: torch.nn.Module) -> Any:
    model = extract_model_from_parallel(policy)
    if not _is_peft(model):
        raise TypeError(f"expected a peft.PeftModel, got {type(model).__name__}")
    return model


def _named_tensors(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Parameters and buffers (shared tensors once)."""
    model = extract_model_from_parallel(model)
    yield from model.named_parameters()
    yield from model.named_buffers()


def _adapter_of(name: str, adapters: set[str]) -> bool:
    """True if tensor ``name`` belongs to one of ``adapters`` (PEFT names them ``...<kind>.<adapter>.*``)."""
    parts = name.split(".")
    return any(part in adapters for part in parts[:-1]) or parts[-1] in adapters
