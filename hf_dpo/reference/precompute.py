"""Precomputed reference log-probs: one no-grad pass before training, stored as dataset columns, cached.

Cache: ``<cache_dir>/<key>.safetensors``, ``key = sha256(reference fingerprint, data fingerprint, precision)``
(see docs/reference_policies.md). Rank ``r`` computes rows ``r, r+W, ...``; the results are all-gathered.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyarrow.compute as pc
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from hf_dpo.modeling.forward import ChosenRejectedLogps
from hf_dpo.reference.policies import PrecomputedReference, eval_no_grad
from hf_dpo.scoring import prepare_batch, reference_logps
from hf_dpo.tokens.tokenization import MASK_COLUMNS, REF_COLUMNS, TOKEN_COLUMNS

logger = logging.getLogger("hf_dpo")


def default_cache_dir() -> str:
    hf_home = os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface"))
    return os.environ.get("HF_DPO_CACHE") or os.path.join(hf_home, "hf_dpo", "ref_logps")


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 of the token columns and any loss masks (lengths and values of every row, in order)."""
    if missing := [c for c in TOKEN_COLUMNS if c not in dataset.column_names]:
        raise ValueError(
            f"cannot precompute reference log-probs: the dataset lacks the token columns {missing}"
        )
    hasher = hashlib.sha256(f"rows={len(dataset)}".encode())
    columns = [*TOKEN_COLUMNS, *(c for c in MASK_COLUMNS if c in dataset.column_names)]
    for table in dataset.select_columns(columns).with_format("arrow").iter(batch_size=10_000):
        for column in columns:
            for array in (pc.list_value_length(table[column]), pc.list_flatten(table[column])):
                hasher.update(np.asarray(array.to_numpy(zero_copy_only=False), np.int64).tobytes())
    return hasher.hexdigest()


def compute_reference_logps(
    dataset: Dataset,
    reference_logps: Callable[[Mapping[str, Any]], ChosenRejectedLogps],
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
    batch_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    desc: str = "reference log-probs",
    show_progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference log-probs of this rank's rows ``rank, rank+W, ...`` as ``(indices, logps (n, 2))``, longest
    rows first (less padding, and an out-of-memory error shows up at once)."""
    indices = list(range(rank, len(dataset), world_size))
    lengths = [0] * len(indices)  # tokens of the pair's two rows: the prompt twice, chosen, rejected
    if indices:
        table = dataset.select_columns(list(TOKEN_COLUMNS)).with_format("arrow")[indices]
        counts = [pc.list_value_length(table[c]).to_numpy(zero_copy_only=False) for c in TOKEN_COLUMNS]
        lengths = (2 * counts[0] + counts[1] + counts[2]).tolist()
    order = sorted(range(len(indices)), key=lambda i: -lengths[i])
    out = torch.empty((len(indices), 2), dtype=torch.float32)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not show_progress):
        positions = order[start : start + batch_size]
        rows = {k: v for k, v in dataset[[indices[p] for p in positions]].items() if k not in REF_COLUMNS}
        features = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in collator(features).items()}
        logps = reference_logps(batch)
        out[positions] = torch.stack([logps.chosen_logps, logps.rejected_logps], dim=1).float().cpu()
    return torch.tensor(indices, dtype=torch.long), out


def add_reference_columns(
    dataset: Dataset,
    score: Callable[[Mapping[str, Any]], ChosenRejectedLogps],
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
    reference_key: str,
    batch_size: int,
    accelerator: Any = None,
    cache_dir: str | None = None,
    desc: str = "reference log-probs",
    show_progress: bool = True,
) -> Dataset:
    """``dataset`` with ``ref_chosen_logps``/``ref_rejected_logps`` (float32) from the cache or one pass of
    ``score`` (a collated batch -> the reference's log-probs) over it. ``reference_key`` names the reference
    (and every setting that changes its log-probs) in the cache key."""
    if not isinstance(dataset, Dataset):
        raise ValueError(ITERABLE_ERROR.format(what=type(dataset).__name__))
    rank, world, device, precision = 0, 1, torch.device("cpu"), "no"
    if accelerator is not None:  # the precision is in the key: bf16 log-probs != fp32
        rank, world = accelerator.process_index, accelerator.num_processes
        device, precision = accelerator.device, accelerator.mixed_precision
    key = hashlib.sha256(f"{reference_key}|{data_fingerprint(dataset)}|{precision}".encode()).hexdigest()
    path = os.path.join(cache_dir or default_cache_dir(), f"{key}.safetensors")
    values = _load(path, len(dataset))
    if world > 1:  # every rank must take the same branch, or the gather below would hang
        hit = torch.tensor(float(values is not None), device=device)
        if accelerator.reduce(hit, "min").item() < 1:
            values = None
    if values is None:
        autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
        with autocast:  # the precision of the training forward, so cached == live reference log-probs
            indices, logps = compute_reference_logps(
                dataset, score, collator, batch_size, device, rank, world, desc, show_progress
            )
        values = _gather(indices, logps, len(dataset), accelerator) if world > 1 else logps
        if accelerator is None or accelerator.is_main_process:  # written whole, then renamed
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp{os.getpid()}"
            save_file({"ref_logps": values.contiguous()}, tmp)
            os.replace(tmp, path)
        logger.info(
            "precomputed reference log-probs for %d pairs (%s); cached at %s", len(dataset), desc, path
        )
    else:
        logger.info("loaded cached reference log-probs for %d pairs (%s) from %s", len(dataset), desc, path)
    dataset = dataset.remove_columns([c for c in REF_COLUMNS if c in dataset.column_names])
    dataset = dataset.add_column(REF_COLUMNS[0], values[:, 0].tolist())
    return dataset.add_column(REF_COLUMNS[1], values[:, 1].tolist())


ITERABLE_ERROR = (
    "precompute_ref_log_probs=True is not supported with IterableDataset (got {what}): the reference "
    "log-probs are stored as dataset columns. Fix: use a map-style datasets.Dataset (load without "
    "streaming=True), or set precompute_ref_log_probs=False."
)


def precompute_reference(trainer: Any, cache_dir: str | None = None) -> PrecomputedReference:
    """Add the reference columns to ``trainer``'s train and eval datasets; return the ``PrecomputedReference``
    that answers from them (its source offloaded to the CPU, or released when sharded)."""
    source = trainer.reference
    reference = PrecomputedReference(source, _reference_key(trainer, source))
    trainer.train_dataset = with_reference_columns(
        trainer, reference, trainer.train_dataset, "train", cache_dir
    )
    trainer.eval_dataset = with_reference_columns(trainer, reference, trainer.eval_dataset, "eval", cache_dir)
    reference.at_init = set(reference.cache)
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        source.release(trainer.model)
        reference.source = None
    elif getattr(source, "model", None) is not None:
        source.to(torch.device("cpu"))
        reference.offload = True  # later evaluation sets: to the device and back
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return reference


def with_reference_columns(
    trainer: Any, reference: PrecomputedReference, dataset: Any, split: str, cache_dir: str | None = None
) -> Any:
    """``dataset`` (a ``Dataset``, a dict of them, a split name, or None) with the reference columns:
    as given if it has them, from ``reference.cache`` by the dataset's fingerprint, else computed once."""
    if isinstance(dataset, dict):
        return {
            k: with_reference_columns(trainer, reference, v, f"{split}[{k}]", cache_dir)
            for k, v in dataset.items()
        }
    if dataset is None or isinstance(dataset, str):
        return dataset
    if not isinstance(dataset, Dataset):
        raise ValueError(ITERABLE_ERROR.format(what=f"the {split} dataset, a {type(dataset).__name__}"))
    if all(c in dataset.column_names for c in REF_COLUMNS):
        return dataset
    source = reference.source
    gone = source is None or (not source.valid_after_training and trainer.state.global_step > 0)
    if gone and dataset._fingerprint not in reference.at_init:
        # TRL's contract: a set first seen by evaluate() raises after training even if cached before it
        raise ValueError(
            f"Cannot compute reference log-probs for a dataset passed to evaluate()/predict() ({split}): "
            "training has started and the reference was the initial policy (precompute_ref_log_probs=True "
            "without ref_model), which no longer exists. Fix: pass this dataset as eval_dataset to "
            "DPOTrainer, pass ref_model=..., or set precompute_ref_log_probs=False."
        )
    if (cached := reference.cache.get(dataset._fingerprint)) is not None:
        return cached
    device, offloaded = trainer.accelerator.device, getattr(source, "model", None) is not None
    objective, policy, args = trainer.objective, trainer.model, trainer.args
    if offloaded:
        source.to(device)
    try:
        with eval_no_grad(policy):
            result = add_reference_columns(
                dataset,
                lambda b: reference_logps(source, policy, prepare_batch(b, objective), objective),
                trainer.data_collator,
                reference.key,
                args.precompute_ref_batch_size or args.per_device_eval_batch_size,
                trainer.accelerator,
                cache_dir,
                desc=f"reference log-probs ({split})",
                show_progress=not args.disable_tqdm and trainer.accelerator.is_local_main_process,
            )
    finally:
        if offloaded and reference.offload:
            source.to(torch.device("cpu"))
    reference.cache[dataset._fingerprint] = result
    return result


def _reference_key(trainer: Any, source: Any) -> str:
    """The reference's fingerprint, one on every rank, with the options that change its log-probs (LD-DPO)."""
    fingerprint = source.fingerprint(trainer.model)
    if trainer.accelerator.num_processes > 1:
        fingerprints = sorted(set(gather_object([fingerprint])))
        fingerprint = fingerprints[0]
        if len(fingerprints) > 1:  # a sharded reference: a hash of all ranks' shards
            fingerprint = hashlib.sha256("|".join(fingerprints).encode()).hexdigest()
    if trainer.args.ld_alpha is not None:  # LD-DPO weighs the reference's tokens too; a different entry
        fingerprint = hashlib.sha256(f"{fingerprint}|ld_alpha={trainer.args.ld_alpha!r}".encode()).hexdigest()
    return fingerprint


def _gather(indices: torch.Tensor, logps: torch.Tensor, total: int, accelerator: Any) -> torch.Tensor:
    """All-gather every rank's ``(indices, logps)`` into the full (total, 2) table (ranks may hold one row
    fewer than others: ``pad_across_processes`` fills with index -1, which is dropped)."""
    local = torch.cat([indices.double()[:, None], logps.double()], dim=1).to(accelerator.device)
    gathered = accelerator.gather(accelerator.pad_across_processes(local, pad_index=-1)).cpu()
    gathered = gathered[gathered[:, 0] >= 0]
    values = torch.empty((total, 2), dtype=torch.float32)
    values[gathered[:, 0].long()] = gathered[:, 1:].float()
    if len(gathered) != total:
        raise RuntimeError(f"reference log-prob gather returned {len(gathered)} rows, expected {total}")
    return values


def _load(path: str, rows: int) -> torch.Tensor | None:
    if not os.path.isfile(path):
        return None
    try:
        values = load_file(path)["ref_logps"]
    except Exception as err:  # a truncated or foreign file is a miss, not a crash
        logger.warning("ignoring unreadable reference log-prob cache %s (%s)", path, err)
        return None
    return values if values.shape == (rows, 2) else None
