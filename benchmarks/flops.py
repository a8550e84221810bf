"""FLOPs of one DPO training step per hf_dpo batch layout and for TRL 1.16's default step, without weights.

A step is the policy's forward + backward plus the reference model's forward (no precomputed reference).
Two independent ways to get the same number:

- **Counted**: the real code runs on fake tensors (``FakeTensorMode``: meta storage, so no weights are
  allocated, but tensors report device ``cpu``, so sdpa dispatches the CPU fused kernel and autocast guards
  work) under ``torch.utils.flop_counter.FlopCounterMode``. hf_dpo: ``hf_dpo.modeling.forward.sequence_logps``
  on batches collated by ``hf_dpo.batching.layouts``. TRL: the Qwen2 backbone on TRL's padded batch of
  chosen + rejected rows (the same rows as hf_dpo's ``padded`` layout), gradient checkpointing on, and TRL's
  own ``trl.kernels.ChunkedLogProbFunction`` LM head. Registered here because ``FlopCounterMode`` lacks
  them: ``aten._scaled_dot_product_flash_attention_for_cpu`` and its backward (the op sdpa dispatches on CPU,
  with a boolean mask or none; on the bare meta device sdpa instead decomposes into ``bmm`` with a 2x
  backward rather than the fused kernels' 2.5x) and ``aten.addmm_`` (the in-place LM-head weight-gradient
  accumulation of both hf_dpo and TRL).
- **Analytic**: closed forms over a batch's ``Geometry`` (rows, positions, attention pairs, scored
  positions); equal to the counted numbers (``tests/test_bench_flops.py``). They also give the *useful* work
  and what block-sparse ``flex_attention`` would execute, and are what ``gpu_run.py`` uses for MFU.

Conventions (those of ``FlopCounterMode``): matmul FLOPs only (2 per multiply-add); sdpa with a dense mask
executes every (query, key) pair of its rows, forward 4·heads·head_dim per pair, backward 2.5x that (scores
recomputed); flex_attention executes every 128x128 tile that is not fully masked. *Useful* = linear layers on
real (non-pad) tokens, attention on the (query, key) pairs the mask allows, the LM head on completion
positions, backward 2x forward with no recomputation. Masks are the ones transformers builds for sdpa.

TRL 1.16 on a GPU (Triton available) runs its LM head on completion positions only (``compact``); without
Triton (CPU) on every position: both are reported.

    python benchmarks/flops.py                                  # Qwen2.5-0.5B shape, 8 batches of 8 pairs
    python benchmarks/flops.py --shape micro --batches 2 --count all --json flops.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from synthetic import PAD_ID, PROFILES, SHAPES, Pair, make_pairs, model_config
from torch.utils.flop_counter import FlopCounterMode, addmm_flop, sdpa_backward_flop_count, sdpa_flop_count

TRL_POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # what TRL's DPO policy head computes
BLOCK = 128  # flex_attention's default block size (queries and keys)
ATTN_BACKWARD = 2.5  # fused attention backward / forward (scores recomputed)


# ---- batches and their geometry ----------------------------------------------------------------------------


def collate(pairs: Sequence[Pair], layout: str, row_tokens: str | None = None) -> dict[str, Any]:
    """hf_dpo's batch of ``pairs`` (``layout``; ``row_tokens`` of the packing layouts), PAD_ID padding."""
    from hf_dpo.batching.layouts import get_layout

    options = {"row_tokens": row_tokens} if layout != "padded" else {}
    return get_layout(layout, PAD_ID, **options)(pairs)


def sdpa_mask(config: Any, model: torch.nn.Module, batch: dict[str, Any]) -> torch.Tensor | None:
    """The (R, 1, T, T) boolean mask sdpa gets for ``batch`` (None: plain causal), built on the batch's device
    as hf_dpo and transformers build it (data-dependent, so on real tensors, never fake ones). For other
    backends (flex_attention) it is the same mask, as a dense tensor."""
    from transformers.masking_utils import create_causal_mask

    from hf_dpo.batching.attention import model_inputs

    inputs = model_inputs(model, batch)
    mask = inputs.get("attention_mask")
    if mask is not None and mask.dim() == 4:
        return mask
    sdpa_config = copy.copy(config)
    sdpa_config._attn_implementation = "sdpa"
    ids = inputs["input_ids"]
    embeds = torch.empty(*ids.shape, 1, device=ids.device)
    return create_causal_mask(sdpa_config, embeds, mask, None, position_ids=inputs.get("position_ids"))


@dataclass(frozen=True)
class Geometry:
    """What one forward over a batch computes, in the units the FLOP formulas multiply.

    ``positions`` = rows x width (pads included); ``dense_pairs`` = sum over rows of width² (sdpa with a
    mask); ``block_pairs`` = 128² x the 128x128 tiles with at least one allowed pair (flex_attention);
    ``allowed_pairs`` = allowed (query, key) pairs among real tokens; ``scored`` = LM-head positions with a
    gradient, ``last_logits`` = more LM-head positions without one (hf_dpo's ``logits_to_keep=1`` call).
    """

    rows: int
    width: int
    positions: int
    real_tokens: int
    dense_pairs: int
    block_pairs: int
    allowed_pairs: int
    scored: int
    completion_tokens: int
    last_logits: int = 0


def geometry(
    input_ids: torch.Tensor,
    mask: torch.Tensor | None,
    scored: int,
    completion_tokens: int,
    last_logits: int = 0,
) -> Geometry:
    """Geometry of a batch of ``input_ids`` (R, T) under ``mask`` ((R, 1, T, T) boolean or None = causal)."""
    rows, width = input_ids.shape
    real = input_ids != PAD_ID
    tiles = -(-width // BLOCK)
    block_pairs = allowed = 0
    for r in range(rows):
        causal = torch.ones(width, width, dtype=torch.bool, device=real.device).tril()
        m = mask[r, 0] if mask is not None else causal
        allowed += int((m & real[r].unsqueeze(1) & real[r].unsqueeze(0)).sum())
        padded = torch.zeros(tiles * BLOCK, tiles * BLOCK, dtype=torch.bool, device=real.device)
        padded[:width, :width] = m
        block_pairs += int(padded.view(tiles, BLOCK, tiles, BLOCK).any(dim=(1, 3)).sum()) * BLOCK * BLOCK
    return Geometry(
        rows=rows,
        width=width,
        positions=rows * width,
        real_tokens=int(real.sum()),
        dense_pairs=rows * width * width,
        block_pairs=block_pairs,
        allowed_pairs=allowed,
        scored=scored,
        completion_tokens=completion_tokens,
        last_logits=last_logits,
    )


def _on(batch: dict[str, Any], device: str | torch.device) -> dict[str, Any]:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def hf_dpo_geometry(
    config: Any, model: torch.nn.Module, batch: dict[str, Any], device: str | torch.device = "cpu"
) -> Geometry:
    """Geometry of an hf_dpo batch: the LM head scores the completion tokens (``target_index``); the model
    call itself (``logits_to_keep=1``) also computes the logits of each row's last position. The masks are
    built on ``device`` (a GPU makes the long rows of ``row_tokens="all"`` quick)."""
    batch = _on(batch, device)
    n = int(batch["target_index"].numel())
    ids = batch["input_ids"]
    return geometry(ids, sdpa_mask(config, model, batch), n, n, last_logits=ids.shape[0])


def trl_geometry(
    config: Any,
    model: torch.nn.Module,
    padded: dict[str, Any],
    scored: str,
    device: str | torch.device = "cpu",
) -> Geometry:
    """Geometry of TRL's step on the padded batch: its LM head scores the completion positions (``compact``,
    on GPUs) or every position but the last of each row (``all``, without Triton)."""
    padded = _on(padded, device)
    rows, width = padded["input_ids"].shape
    n = int(padded["target_index"].numel())
    scored_positions = n if scored == "completion" else rows * (width - 1)
    return geometry(padded["input_ids"], sdpa_mask(config, model, padded), scored_positions, n)


# ---- analytic FLOPs ----------------------------------------------------------------------------------------


def linear_flops_per_token(config: Any) -> int:
    """Forward matmul FLOPs of the decoder layers per token position: 2 x their weight-matrix entries."""
    h, inter, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    q = config.num_attention_heads * _head_dim(config)
    kv = config.num_key_value_heads * _head_dim(config)
    return 2 * layers * (h * q + 2 * h * kv + q * h + 3 * h * inter)


def down_proj_flops_per_token(config: Any) -> int:
    """The part of ``linear_flops_per_token`` that gradient checkpointing does not recompute: the MLP down
    projection, each layer's last matmul, whose output no backward needs (non-reentrant checkpointing, the
    transformers 5 default, stops recomputing once every saved tensor is back)."""
    return 2 * config.num_hidden_layers * config.intermediate_size * config.hidden_size


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def forward_flops(config: Any, g: Geometry, attention: str = "dense") -> dict[str, float]:
    """One forward: decoder linears, attention (``dense`` | ``flex`` | ``useful`` pairs), LM head at the
    scored positions, and at ``g.last_logits`` more positions (``logits_to_keep=1``: one per row, unused)."""
    useful = attention == "useful"
    tokens = g.real_tokens if useful else g.positions
    pairs = {"dense": g.dense_pairs, "flex": g.block_pairs, "useful": g.allowed_pairs}[attention]
    head = 2 * config.hidden_size * config.vocab_size
    return {
        "linear": float(linear_flops_per_token(config) * tokens),
        "attention": float(
            4 * config.num_hidden_layers * config.num_attention_heads * _head_dim(config) * pairs
        ),
        "lm_head": float(head * (g.completion_tokens if useful else g.scored + g.last_logits)),
    }


def step_flops(
    config: Any, g: Geometry, attention: str = "dense", gradient_checkpointing: bool = False
) -> dict[str, float]:
    """One training step: policy forward + backward plus the reference forward.

    Executed (``dense`` / ``flex``): linear backward 2x forward, attention 2.5x, LM head 3x at the scored
    positions (logits recomputed, then both gradients); gradient checkpointing adds the layers' forward again
    but for the down projection (``down_proj_flops_per_token``). ``useful``: every backward 2x forward.
    """
    fwd = forward_flops(config, g, attention)
    if attention == "useful":
        out = {part: 4 * value for part, value in fwd.items()}
    else:
        head_backward = 3 * 2 * config.hidden_size * config.vocab_size * g.scored
        recompute = 0.0
        if gradient_checkpointing:
            recompute = fwd["linear"] - down_proj_flops_per_token(config) * g.positions
        out = {
            "linear": 4 * fwd["linear"] + recompute,
            "attention": (2 + ATTN_BACKWARD + gradient_checkpointing) * fwd["attention"],
            "lm_head": 2 * fwd["lm_head"] + head_backward,
        }
    out["total"] = sum(out.values())
    return out


# ---- counted FLOPs -----------------------------------------------------------------------------------------


# FlopCounterMode's custom_mapping calls these with the shapes of the op's arguments and output.
def _cpu_sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_backward_flop(
    grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _addmm_inplace_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return addmm_flop(self_shape, a_shape, b_shape)


EXTRA_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward_flop,
    torch.ops.aten.addmm_: _addmm_inplace_flop,
}


def flop_counter() -> FlopCounterMode:
    """A quiet ``FlopCounterMode`` that also counts CPU sdpa and in-place ``addmm_``."""
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)


class FakeModel:
    """A causal LM of ``config`` on fake tensors (no storage), with its ``FakeTensorMode``."""

    def __init__(self, config: Any) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from transformers import AutoModelForCausalLM

        self.config = config
        self.mode = FakeTensorMode()
        with self.mode:
            self.model = AutoModelForCausalLM.from_config(config)
        self.model.train()

    @contextlib.contextmanager
    def gradient_checkpointing(self, enabled: bool) -> Iterator[None]:
        if enabled:
            self.model.activation_checkpointing_enable()
        try:
            yield
        finally:
            self.model.activation_checkpointing_disable()

    def fake(self, tensors: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
        return {k: self.mode.from_tensor(v) for k, v in tensors.items() if v is not None}


def _dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """Sigmoid DPO loss from TRL's (2B,) sequence log-probs ordered [chosen ; rejected]."""
    margin = (policy - reference).view(2, -1)
    return -torch.nn.functional.logsigmoid(beta * (margin[0] - margin[1])).mean()


def count_hf_dpo_step(fake: FakeModel, batch: dict[str, Any], gradient_checkpointing: bool = False) -> float:
    """Counted FLOPs of hf_dpo's step on a collated ``batch``: ``sequence_logps`` for the policy (with
    backward) and the reference, on the mask the backend would get."""
    from hf_dpo.modeling.forward import sequence_logps
    from hf_dpo.objective.losses import PreferenceLogps, dpo_loss

    mask = sdpa_mask(fake.config, fake.model, batch)
    keys = ("input_ids", "target_index", "target_ids", "target_seq")
    tensors = {k: batch[k] for k in keys}
    if mask is not None:
        tensors.update(attention_mask=mask, position_ids=batch.get("position_ids"))
    with fake.mode, fake.gradient_checkpointing(gradient_checkpointing), flop_counter() as counter:
        inputs = {**fake.fake(tensors), "num_pairs": batch["num_pairs"]}
        policy = sequence_logps(fake.model, inputs, use_hidden=True)
        with torch.no_grad():
            reference = sequence_logps(fake.model, inputs, use_hidden=True)
        dpo_loss(PreferenceLogps.from_records(policy, reference), beta=0.1).losses.mean().backward()
    return float(counter.get_total_flops())


def count_trl_step(
    fake: FakeModel, padded: dict[str, Any], scored: str = "completion", gradient_checkpointing: bool = True
) -> float:
    """Counted FLOPs of TRL 1.16's DPO step on its padded batch (``padded``: hf_dpo's padded layout, the
    same rows): backbone, then ``trl.kernels.ChunkedLogProbFunction`` on the completion positions or all."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    ids = padded["input_ids"]
    rows, width = ids.shape
    if scored == "completion":  # flat index into hidden[:, :-1] of positions predicting a completion token
        index = padded["target_index"]
        index = index // width * (width - 1) + index % width
        targets = padded["target_ids"]
    else:
        index = torch.arange(rows * (width - 1))
        targets = ids[:, 1:].reshape(-1)
    mask = sdpa_mask(fake.config, fake.model, padded)
    head = fake.model.get_output_embeddings()

    def logps(inputs: dict[str, torch.Tensor], outputs: tuple[str, ...]) -> torch.Tensor:
        model_kwargs = {k: inputs[k] for k in ("input_ids", "attention_mask") if k in inputs}
        hidden = fake.model.model(**model_kwargs, use_cache=False).last_hidden_state[:, :-1]
        flat = hidden.reshape(-1, hidden.shape[-1])[inputs["index"]]
        token = ChunkedLogProbFunction.apply(
            flat,
            head.weight,
            head.bias,
            inputs["targets"],
            1.0,
            _CHUNKED_LOGPROB_CHUNK_SIZE,
            None,
            1.0,
            outputs,
        )[0]
        return torch.zeros(2 * padded["num_pairs"]).index_add(0, inputs["seq"], token)

    seq = index // (width - 1)
    with fake.mode, fake.gradient_checkpointing(gradient_checkpointing), flop_counter() as counter:
        inputs = fake.fake(
            {"input_ids": ids, "attention_mask": mask, "index": index, "targets": targets, "seq": seq}
        )
        policy = logps(inputs, TRL_POLICY_OUTPUTS)
        with torch.no_grad():
            reference = logps(inputs, ("log_probs",))
        _dpo_loss(policy, reference).backward()
    return float(counter.get_total_flops())


def run_flops(
    model: torch.nn.Module,
    batches: Sequence[Sequence[Pair]],
    layout: Any | None,
    attention: str = "dense",
    gradient_checkpointing: bool = False,
    trl_scored: str = "completion",
    device: str | torch.device = "cpu",
) -> list[float]:
    """Executed FLOPs of each training step of a run, from the pairs of its batches: ``layout`` is the hf_dpo
    ``BatchLayout`` the run used (None: TRL's step), ``attention`` ``dense`` (sdpa, eager) or ``flex``."""
    config = model.config
    out = []
    for pairs in batches:
        if layout is None:
            g = trl_geometry(config, model, collate(pairs, "padded"), trl_scored, device)
        else:
            g = hf_dpo_geometry(config, model, layout(pairs), device)
        out.append(step_flops(config, g, attention, gradient_checkpointing)["total"])
    return out


# ---- the comparison ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One step to account: hf_dpo with a layout, or TRL (``layout`` None)."""

    name: str
    layout: str | None = None
    row_tokens: str | None = None
    gradient_checkpointing: bool = False
    trl_scored: str = "completion"

    @property
    def is_trl(self) -> bool:
        return self.layout is None


VARIANTS = (
    Variant("trl default", gradient_checkpointing=True),
    Variant(
        "trl default, LM head on all positions (no Triton)", gradient_checkpointing=True, trl_scored="all"
    ),
    Variant("trl, gradient checkpointing off"),
    Variant("hf_dpo padded", "padded"),
    Variant("hf_dpo packed[longest]", "packed", "longest"),
    Variant("hf_dpo packed[all] (auto on flash)", "packed", "all"),
    Variant("hf_dpo prefix_shared[longest] (auto on sdpa)", "prefix_shared", "longest"),
    Variant("hf_dpo prefix_shared[all] (auto on flex)", "prefix_shared", "all"),
)
BASELINE, AUTO_SDPA, PACKED_FLEX, AUTO_FLEX = VARIANTS[0], VARIANTS[6], VARIANTS[5], VARIANTS[7]


def variant_geometry(config: Any, model: torch.nn.Module, v: Variant, pairs: Sequence[Pair]) -> Geometry:
    if v.is_trl:
        return trl_geometry(config, model, collate(pairs, "padded"), v.trl_scored)
    return hf_dpo_geometry(config, model, collate(pairs, v.layout, v.row_tokens))


def count_variant(fake: FakeModel, v: Variant, pairs: Sequence[Pair]) -> float:
    if v.is_trl:
        return count_trl_step(fake, collate(pairs, "padded"), v.trl_scored, v.gradient_checkpointing)
    return count_hf_dpo_step(fake, collate(pairs, v.layout, v.row_tokens), v.gradient_checkpointing)


def account(
    config: Any,
    batches: Sequence[Sequence[Pair]],
    count: str = "first",
    variants: Sequence[Variant] = VARIANTS,
) -> list[dict[str, Any]]:
    """Per variant: executed (sdpa and flex), useful and, for ``count`` = ``first`` | ``all`` batches,
    counted TFLOPs per pair, summed over ``batches``."""
    fake = FakeModel(config)
    num_pairs = sum(len(b) for b in batches)
    rows = []
    for v in variants:
        totals: dict[str, float] = {}
        counted = analytic_of_counted = 0.0
        for i, pairs in enumerate(batches):
            g = variant_geometry(config, fake.model, v, pairs)
            parts = {
                "sdpa": step_flops(config, g, "dense", v.gradient_checkpointing),
                "flex": step_flops(config, g, "flex", v.gradient_checkpointing),
                "useful": step_flops(config, g, "useful"),
            }
            for kind, flops in parts.items():
                for part, value in flops.items():
                    totals[f"{kind}_{part}"] = totals.get(f"{kind}_{part}", 0.0) + value
            if count == "all" or (count == "first" and i == 0):
                counted += count_variant(fake, v, pairs)
                analytic_of_counted += parts["sdpa"]["total"]
        row: dict[str, Any] = {"variant": v.name, **asdict(v)}
        row.update({k: val / num_pairs / 1e12 for k, val in totals.items()})
        if count != "none":
            row["counted_equals_analytic"] = counted == analytic_of_counted
            row["counted_tflops"] = counted / 1e12
            row["analytic_tflops"] = analytic_of_counted / 1e12
        rows.append(row)
    base = next(r for r in rows if r["variant"] == BASELINE.name)
    for r in rows:
        r["sdpa_vs_trl_default"] = r["sdpa_total"] / base["sdpa_total"]
        r["flex_vs_trl_default"] = r["flex_total"] / base["sdpa_total"]
    return rows


def render(rows: Sequence[dict[str, Any]], header: str) -> str:
    lines = [
        header,
        "",
        "| step | executed TFLOPs/pair (sdpa) | attention | LM head | vs TRL default | useful TFLOPs/pair "
        "| executed / useful | flex_attention TFLOPs/pair | flex vs TRL default | counted = analytic |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flex = "-" if r["layout"] is None else f"{r['flex_total']:.2f}"
        flex_ratio = "-" if r["layout"] is None else f"{r['flex_vs_trl_default']:.2f}x"
        check = {True: "yes", False: "NO"}.get(r.get("counted_equals_analytic"), "-")
        lines.append(
            f"| {r['variant']} | {r['sdpa_total']:.2f} | {r['sdpa_attention']:.2f} | {r['sdpa_lm_head']:.2f} "
            f"| {r['sdpa_vs_trl_default']:.2f}x | {r['useful_total']:.2f} "
            f"| {r['sdpa_total'] / r['useful_total']:.2f} | {flex} | {flex_ratio} | {check} |"
        )
    by_name = {r["variant"]: r for r in rows}
    sdpa = by_name[AUTO_SDPA.name]["sdpa_vs_trl_default"]
    flex = by_name[AUTO_FLEX.name]["flex_vs_trl_default"]
    packed_flex = by_name[PACKED_FLEX.name]["flex_vs_trl_default"]
    lines += [
        "",
        f"Target auto (sdpa) <= 0.40x TRL default: {sdpa:.2f}x, {'met' if sdpa <= 0.40 else 'NOT met'}.",
        f"Target flex <= 0.30x TRL default: auto on flex (prefix_shared[all], block mask) {flex:.2f}x, "
        f"{'met' if flex <= 0.30 else 'NOT met'} (packed[all] on flex: {packed_flex:.2f}x).",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="loguniform")
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="seeded batches averaged over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--count",
        choices=["none", "first", "all"],
        default="first",
        help="batches also counted by FlopCounterMode",
    )
    parser.add_argument("--json", default=None, help="also write the rows here")
    cli = parser.parse_args(argv)
    config = model_config(cli.shape)
    pairs = make_pairs(cli.profile, cli.pairs_per_step * cli.batches, 1.0, config.vocab_size, cli.seed)
    k = cli.pairs_per_step
    batches = [pairs[i : i + k] for i in range(0, len(pairs), k)]
    rows = account(config, batches, cli.count)
    lengths = [len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs]
    header = (
        f"shape={cli.shape}, profile={cli.profile} {PROFILES[cli.profile]}, "
        f"{cli.batches} batches of {k} pairs (seed {cli.seed}), "
        f"{sum(lengths) / len(lengths):.0f} real tokens per pair on average"
    )
    print(render(rows, header))
    if cli.json:
        with open(cli.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
