"""Batch layouts: how a list of tokenized pairs becomes model inputs plus a map of the scored tokens.

Every layout returns a ``PairBatch``:

- model inputs: ``input_ids`` (R, T) and ``attention_mask`` and/or ``position_ids`` (R, T);
- ``target_index`` (N,): flat index into the (R·T) positions whose final hidden state predicts a completion
  token; ``target_ids`` (N,): that token; ``target_seq`` (N,): which of the 2B sequences it belongs to,
  ordered ``[chosen_1..B ; rejected_1..B]``;
- ``num_pairs`` (int B) and ``num_tokens`` (int, real tokens fed to the model).

Per-sequence log-probs are ``sum_by_sequence(logp(target_ids | hidden[target_index]), target_seq)``; one
position may score several targets (prefix_shared). Layouts and ``choose_layout``: docs/performance.md.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, TypedDict

import torch

from hf_dpo.batching.attention import (
    CHOSEN,
    DENSE_MASK_BACKENDS,
    MASK_FORM_KEY,
    PREFIX_BRANCH_KEY,
    PREFIX_SEGMENT_KEY,
    PROMPT,
    REJECTED,
    MaskForm,
    attention_backend,
    decide_mask_form,
    is_varlen_backend,
    layout_support,
)
from hf_dpo.registry import Registry
from hf_dpo.tokens.tokenization import MASK_COLUMNS

logger = logging.getLogger("hf_dpo")


class PairBatch(TypedDict, total=False):
    """The batch record of every layout (shapes in the module docstring); ``prefix_*``/``mask_form`` for
    prefix_shared, ``ref_*_logps`` (B,) when precomputed, ``target_weight`` (N,) once LD-DPO weights apply."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    target_index: torch.Tensor
    target_ids: torch.Tensor
    target_seq: torch.Tensor
    num_pairs: int
    num_tokens: int
    prefix_segment_ids: torch.Tensor
    prefix_branch_ids: torch.Tensor
    mask_form: MaskForm
    target_weight: torch.Tensor
    ref_chosen_logps: torch.Tensor
    ref_rejected_logps: torch.Tensor


Pair = Mapping[str, Sequence[int]]
LAYOUT_PREFERENCE = ("prefix_shared", "packed", "padded")  # fastest first (docs/performance.md)

_LAYOUTS: Registry[type[BatchLayout]] = Registry("batch_layout")


def _require_prompts(pairs: Sequence[Pair], layout: str) -> None:
    """Raise on a pair with no prompt token: the first completion token is scored from the last one."""
    for i, pair in enumerate(pairs):
        if len(pair["prompt_ids"]) == 0:
            raise ValueError(
                f"pair {i} of the batch has empty prompt_ids; the {layout} layout scores the first "
                "completion token from the last prompt token. Start every prompt with at least one token "
                "(e.g. BOS)."
            )


class BatchLayout(abc.ABC):
    """Strategy that lays out B pairs as model inputs; subclasses register themselves by ``name``.
    ``mask_form``: ``MaskForm.NONE``, or None for a ``custom_mask`` layout until ``choose_layout`` decides."""

    name: ClassVar[str]
    custom_mask: ClassVar[bool] = False
    positions: ClassVar[bool] = False  # rows of several sequences with position_ids, else padded rows

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None):
            _LAYOUTS.register(cls.name, cls)

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.mask_form: MaskForm | None = None if self.custom_mask else MaskForm.NONE

    def __call__(self, pairs: Sequence[Pair]) -> PairBatch:
        """Collate ``pairs`` (each with ``prompt_ids``, ``chosen_ids``, ``rejected_ids``, and optionally the
        ``MASK_COLUMNS`` of ``assistant_only_loss``: completion tokens marked 0 are fed but not scored)."""
        batch = self._collate(pairs)
        if pairs and MASK_COLUMNS[0] in pairs[0]:
            _drop_unscored_targets(batch, pairs)
        return batch

    @abc.abstractmethod
    def _rows(self, lengths: Sequence[int]) -> list[list[int]]:
        """The indices of the items in each row, in order."""

    def _items(self, pairs: Sequence[Pair]) -> list[tuple[Sequence[int], Sequence[int], Sequence[int]]]:
        """The items laid out in rows, each (prompt, completion, rejected branch): here the 2B sequences
        (item s is sequence s) with no branch."""
        return [(prompt, completion, ()) for prompt, completion in _sequences(pairs)]

    def _collate(self, pairs: Sequence[Pair]) -> PairBatch:
        """The layout's batch, every completion token a target."""
        _require_prompts(pairs, self.name)
        items = self._items(pairs)
        lengths = [len(prompt) + len(completion) + len(rejected) for prompt, completion, rejected in items]
        rows = self._rows(lengths)
        width = max(sum(lengths[i] for i in row) for row in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        num_pairs, positions, custom_mask = len(pairs), self.positions, self.custom_mask
        ids, pos, segment, branch, index, targets, seq = [], [], [], [], [], [], []
        for r, row in enumerate(rows):
            offset = r * width
            for j, i in enumerate(row):
                prompt, completion, rejected = items[i]
                n_p, n_c, n_r = len(prompt), len(completion), len(rejected)
                ids.extend(prompt)
                ids.extend(completion)
                if positions:
                    pos.extend(range(n_p + n_c))
                last_prompt = offset + n_p - 1  # predicts the first token of each completion
                index.extend(range(last_prompt, last_prompt + n_c))
                targets.extend(completion)
                seq.extend([i] * n_c)
                if n_r:  # prefix_shared: the rejected branch, positioned and predicted as if after the prompt
                    ids.extend(rejected)
                    pos.extend(range(n_p, n_p + n_r))
                    rejected_start = offset + n_p + n_c
                    index.append(last_prompt)
                    index.extend(range(rejected_start, rejected_start + n_r - 1))
                    targets.extend(rejected)
                    seq.extend([num_pairs + i] * n_r)
                if custom_mask:
                    segment.extend([j] * lengths[i])
                    branch.extend([PROMPT] * n_p + [CHOSEN] * n_c + [REJECTED] * n_r)
                offset += lengths[i]
            if positions:  # the row's padding is its own sequence (positions restart at 0)
                tail = (r + 1) * width - offset
                ids.extend([self.pad_token_id] * tail)
                pos.extend(range(tail))
                if custom_mask:
                    segment.extend([-1] * tail)
                    branch.extend([PROMPT] * tail)
        shape = (len(rows), width)
        if positions:
            grid = {"input_ids": ids, "position_ids": pos}
            if custom_mask:
                grid |= {PREFIX_SEGMENT_KEY: segment, PREFIX_BRANCH_KEY: branch}
            batch = {key: torch.tensor(v, dtype=torch.long).view(shape) for key, v in grid.items()}
        else:  # one sequence per row: its tokens go left-aligned into the padded grid
            real = torch.arange(width) < torch.tensor(lengths).unsqueeze(1)
            input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
            batch = {"input_ids": input_ids.masked_scatter_(real, torch.tensor(ids, dtype=torch.long))}
            batch["attention_mask"] = real.long()
        for key, values in (("target_index", index), ("target_ids", targets), ("target_seq", seq)):
            batch[key] = torch.tensor(values, dtype=torch.long)
        batch |= {"num_pairs": len(pairs), "num_tokens": sum(lengths)}
        if custom_mask and self.mask_form is not None:
            batch[MASK_FORM_KEY] = self.mask_form
        return batch


def _sequences(pairs: Sequence[Pair]) -> list[tuple[Sequence[int], Sequence[int]]]:
    """The 2B (prompt, completion) sequences, ordered ``[chosen_1..B ; rejected_1..B]``."""
    return [(p["prompt_ids"], p[key]) for key in ("chosen_ids", "rejected_ids") for p in pairs]


class PaddedLayout(BatchLayout):
    """2B rows ``[prompt_i + chosen_i]_i ; [prompt_i + rejected_i]_i``, right-padded to the longest row."""

    name = "padded"

    def _rows(self, lengths: Sequence[int]) -> list[list[int]]:
        return [[i] for i in range(len(lengths))]


def _drop_unscored_targets(batch: PairBatch, pairs: Sequence[Pair]) -> None:
    """Remove the targets whose loss-mask entry is 0 (a sequence's k-th target is its completion token k)."""
    masks = [p[column] for column in MASK_COLUMNS for p in pairs]
    for s, (mask, (_, ids)) in enumerate(zip(masks, _sequences(pairs), strict=True)):
        if len(mask) != len(ids):
            raise ValueError(
                f"pair {s % len(pairs)} of the batch: {MASK_COLUMNS[s // len(pairs)]} has {len(mask)} "
                f"entries for {len(ids)} completion tokens; tokenize with assistant_only_loss so both are "
                "cut alike"
            )
    entries = [iter(mask) for mask in masks]  # each sequence's targets come in completion order
    kept = torch.tensor([bool(next(entries[s])) for s in batch["target_seq"].tolist()], dtype=torch.bool)
    for key in ("target_index", "target_ids", "target_seq"):
        batch[key] = batch[key][kept]


class _RowPackingLayout(BatchLayout):
    """Shared row packing of the padding-free layouts; ``row_tokens``: ``"all"`` (one row), ``"longest"``
    (rows no longer than the longest item) or an int token budget (first-fit-decreasing bins)."""

    positions = True

    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None = None, row_tokens: str | int = "all"
    ) -> None:
        super().__init__(pad_token_id, pad_to_multiple_of)
        if row_tokens not in ("all", "longest") and not (isinstance(row_tokens, int) and row_tokens > 0):
            raise ValueError(f"row_tokens must be 'all', 'longest' or a positive int, got {row_tokens!r}")
        self.row_tokens = row_tokens

    def _rows(self, lengths: Sequence[int]) -> list[list[int]]:
        """Items keep their original order within a row."""
        if self.row_tokens == "all":
            return [list(range(len(lengths)))]
        capacity = max(lengths) if self.row_tokens == "longest" else max(int(self.row_tokens), max(lengths))
        rows: list[list[int]] = []
        free: list[int] = []
        for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
            slot = next((r for r, f in enumerate(free) if f >= lengths[i]), None)
            if slot is None:
                rows.append([i])
                free.append(capacity - lengths[i])
            else:
                rows[slot].append(i)
                free[slot] -= lengths[i]
        return [sorted(row) for row in rows]


class PackedLayout(_RowPackingLayout):
    """The 2B sequences ``prompt_i + completion_i`` back to back in rows, ``position_ids`` restarting per
    sequence, no 2D attention mask (transformers keeps the sequences apart)."""

    name = "packed"


class PrefixSharedLayout(_RowPackingLayout):
    """Each pair as one sequence ``prompt + chosen + rejected``, pairs packed in rows. Rejected tokens take
    positions ``len(prompt) + k`` and attend to the prompt and earlier rejected tokens; the (R, T)
    ``prefix_segment_ids``/``prefix_branch_ids`` give ``model_inputs`` the 4D mask (in ``mask_form``)."""

    name = "prefix_shared"
    custom_mask = True

    def _items(self, pairs: Sequence[Pair]) -> list[tuple[Sequence[int], Sequence[int], Sequence[int]]]:
        return [(p["prompt_ids"], p["chosen_ids"], p["rejected_ids"]) for p in pairs]


def get_layout(name: str, pad_token_id: int, pad_to_multiple_of: int | None = None, **options) -> BatchLayout:
    """Instantiate a registered layout by name (``options``: e.g. ``row_tokens`` of the packing layouts)."""
    return _LAYOUTS.get(name)(pad_token_id, pad_to_multiple_of, **options)


def choose_layout(
    models: torch.nn.Module | Iterable[torch.nn.Module | None],
    requested: str = "auto",
    pad_token_id: int = 0,
    pad_to_multiple_of: int | None = None,
    router_aux_loss: bool = False,
) -> BatchLayout:
    """The layout for ``models`` (policy, and reference if separate): ``requested``, or with ``"auto"`` the
    fastest one exact for every model's backend (``LAYOUT_PREFERENCE``), logged once, ``mask_form`` decided.
    ``router_aux_loss``: the MoE router loss is trained, so only ``padded`` (2D ``attention_mask``) is exact.
    ``ValueError`` for an unknown name, or a forced layout that is not exact (with the reason).
    """
    if isinstance(models, torch.nn.Module):
        models = [models]
    models = [m for m in models if m is not None]
    if requested != "auto" and requested not in _LAYOUTS:
        raise ValueError(
            f"unknown batch_layout {requested!r}; use 'auto' or one of {', '.join(available_layouts())}"
        )
    reasons = _not_exact_reasons(models, router_aux_loss)
    backends = sorted({attention_backend(m) for m in models})
    if requested == "auto":
        name = next(n for n in LAYOUT_PREFERENCE if reasons.get(n) is None)
    elif reasons.get(requested) is not None:
        raise ValueError(
            f"batch_layout={requested!r} is not exact for this model: {reasons[requested]}. "
            "Use batch_layout='auto' to pick a supported layout."
        )
    else:
        name = requested
    options = {}
    if name != "padded":  # varlen kernels need one row; block-sparse ones prefer it; dense masks prefer bins
        one_row = any(is_varlen_backend(b) for b in backends) or all(b == "flex_attention" for b in backends)
        options["row_tokens"] = "all" if one_row else "longest"
    layout = get_layout(name, pad_token_id, pad_to_multiple_of, **options)
    if layout.custom_mask:
        forms = {decide_mask_form(m) for m in models}  # several forms: each forward decides for its model
        layout.mask_form = forms.pop() if len(forms) == 1 else None
    if requested == "auto":
        skipped = {n: r for n, r in reasons.items() if r is not None}
        logger.info(
            "batch_layout='auto' chose %r (%s) for attention backend %s%s%s",
            name,
            ", ".join([f"{k}={v!r}" for k, v in options.items()] + _mask_form_note(layout)),
            "/".join(backends),
            f"; not exact here: {skipped}" if skipped else "",
            _flex_hint(backends),
        )
    return layout


def _not_exact_reasons(models: list[torch.nn.Module], router_aux_loss: bool) -> dict[str, str | None]:
    """Per layout, why it is not exact for some model (None: exact for all)."""
    reasons: dict[str, str | None] = {name: None for name in _LAYOUTS}
    for model in models:
        for name, reason in layout_support(model).items():
            reasons[name] = reasons.get(name) or reason
    if router_aux_loss:
        for name in ("packed", "prefix_shared"):
            reasons[name] = reasons.get(name) or (
                "the MoE router load-balancing loss is computed by the model over the tokens of a 2D "
                "attention_mask, which this layout does not pass; set router_aux_loss_coef=0 to use it"
            )
    return reasons


def _mask_form_note(layout: BatchLayout) -> list[str]:
    if not layout.custom_mask:
        return []
    form = layout.mask_form.value if layout.mask_form else "decided per model"
    skip = ", fully masked blocks skipped" if layout.mask_form is MaskForm.BLOCK_MASK else ""
    return [f"mask form {form}{skip}"]


def _flex_hint(backends: Sequence[str]) -> str:
    """Where flex_attention would be exact and faster than a dense mask (CUDA, a dense-mask backend)."""
    if not torch.cuda.is_available() or not set(backends) <= set(DENSE_MASK_BACKENDS):
        return ""
    return (
        "; flex_attention is available and exact here: load the models with "
        "attn_implementation='flex_attention' so masked attention blocks are skipped (docs/performance.md)"
    )


def available_layouts() -> list[str]:
    """Names accepted by :func:`get_layout` (and ``batch_layout``, besides ``"auto"``)."""
    return _LAYOUTS.names()
