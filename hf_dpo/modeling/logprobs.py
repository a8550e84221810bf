"""Token log-probs log p(y_{t+1}) = (h_t Wᵀ + b)[y_{t+1}] − logsumexp(h_t Wᵀ + b), ``chunk_size`` rows at a
time (recomputed in backward): peak extra memory (chunk_size, V) instead of (N, V). Pure math: no model.
"""

from __future__ import annotations

import torch


def naive_token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reference implementation: log_softmax(logits)[targets], (N, V) and (N,) -> (N,) float32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class _ChunkedTokenLogps(torch.autograd.Function):
    """log_softmax(h Wᵀ + b)[y] by row chunks; the backward recomputes each chunk's softmax."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size, with_sum_sq):  # type: ignore[override]
        w, b = _compute_params(hidden, weight, bias)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        sum_sq = torch.empty_like(out) if with_sum_sq else out.new_empty(0)
        for start in range(0, hidden.shape[0], chunk_size):
            sl = slice(start, start + chunk_size)
            logits = _chunk_logits(hidden[sl], w, b)
            lse[sl] = lse_c = torch.logsumexp(logits, dim=-1)
            out[sl] = logits.gather(-1, targets[sl].unsqueeze(-1)).squeeze(-1) - lse_c
            if with_sum_sq:
                sum_sq[sl] = log_sum_squared_probs(logits, lse_c)
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.has_bias = bias is not None
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(sum_sq)
        return out, sum_sq

    @staticmethod
    def backward(ctx, grad_out, grad_sum_sq):  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        w, b = _compute_params(hidden, weight, bias)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        # fp32 accumulators only for what needs a gradient (a frozen LM head, as with PEFT, needs none)
        fp32 = {"dtype": torch.float32, "device": weight.device}
        grad_weight = torch.zeros(weight.shape, **fp32) if need_weight else None
        grad_bias = torch.zeros(weight.shape[0], **fp32) if ctx.has_bias and need_bias else None
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            h = hidden[sl]
            # d logp / d logits = onehot(y) − softmax(logits); scaled by the incoming gradient.
            grad_logits = -torch.exp(_chunk_logits(h, w, b) - lse[sl].unsqueeze(-1))
            grad_logits.scatter_add_(-1, targets[sl].unsqueeze(-1), torch.ones_like(lse[sl]).unsqueeze(-1))
            grad_logits.mul_(grad_out[sl].float().unsqueeze(-1))
            if grad_hidden is not None:
                grad_hidden[sl] = (grad_logits.to(w.dtype) @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.t(), h.float())
            if grad_bias is not None:
                grad_bias.add_(grad_logits.sum(0))
        gw = grad_weight.to(weight.dtype) if grad_weight is not None else None
        gb = grad_bias.to(bias.dtype) if grad_bias is not None else None
        return grad_hidden, gw, gb, None, None, None


def log_sum_squared_probs(logits: torch.Tensor, lse: torch.Tensor | None = None) -> torch.Tensor:
    """log Σ_v p_v² = logsumexp(2·logits) − 2·logsumexp(logits) per row, (n, V) -> (n,) float32 (WPO)."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1) if lse is None else lse
    return torch.logsumexp(2 * logits, dim=-1) - 2 * lse


def _compute_params(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head in the matmul dtype: bf16 with bf16 activations or weights, else float32 (never float16:
    its range overflows the logits of a sharpened model to inf)."""
    low = hidden.dtype == torch.bfloat16 and weight.dtype == torch.float32
    dtype = torch.bfloat16 if low or weight.dtype == torch.bfloat16 else torch.float32
    return weight.to(dtype), (bias.to(dtype) if bias is not None else None)


def _chunk_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """(n, H) x (V, H) -> (n, V) float32 logits (matmul in the weights' dtype, then upcast)."""
    logits = hidden.to(weight.dtype) @ weight.t()
    if bias is not None:
        logits = logits + bias
    return logits.float()


def chunked_token_logps(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    chunk_size: int = 1024,
    with_sum_sq: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``naive_token_logps(hidden @ weight.T + bias, targets)``: hidden (N, H), weight (V, H), targets (N,),
    bias (V,) -> (N,) float32, with gradients. ``with_sum_sq``: also the (N,) ``log_sum_squared_probs``."""
    if hidden.shape[0] == 0:
        empty = hidden.new_zeros(0, dtype=torch.float32)
        return (empty + 0 * weight.sum(), empty) if with_sum_sq else empty + 0 * weight.sum()
    # Precision from ``_compute_params``, never an enclosing autocast: policy and reference score alike.
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        out, sum_sq = _ChunkedTokenLogps.apply(hidden, weight, bias, targets, max(1, chunk_size), with_sum_sq)
    return (out, sum_sq) if with_sum_sq else out


def chunked_logits_token_logps(
    logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024, with_sum_sq: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``naive_token_logps`` ``chunk_size`` rows at a time (one float32 chunk live); ``with_sum_sq``: also the
    (N,) ``log_sum_squared_probs`` (no gradient)."""
    spans = range(0, logits.shape[0], chunk_size)
    parts = [naive_token_logps(logits[s : s + chunk_size], targets[s : s + chunk_size]) for s in spans]
    out = torch.cat(parts) if parts else logits.new_zeros(0, dtype=torch.float32)
    if not with_sum_sq:
        return out
    with torch.no_grad():
        sums = [log_sum_squared_probs(logits[s : s + chunk_size]) for s in spans]
    return out, torch.cat(sums) if sums else logits.new_zeros(0, dtype=torch.float32)


def sum_by_sequence(
    token_logps: torch.Tensor, sequence_index: torch.Tensor, num_sequences: int
) -> torch.Tensor:
    """(N,) per-token values summed by their (N,) int64 ``sequence_index`` -> (num_sequences,)."""
    return token_logps.new_zeros(num_sequences).index_add(0, sequence_index, token_logps)


def ld_token_weights(
    sequence_index: torch.Tensor, target_index: torch.Tensor, num_pairs: int, alpha: float
) -> torch.Tensor:
    """LD-DPO token weights (N,) float32: with ℓ = min(|y_w|, |y_l|), the first ℓ tokens of each sequence
    weigh 1 and later ones α (summed log-prob log π(y_{≤ℓ}) + α · log π(y_{>ℓ})). ``sequence_index`` (N,) is
    ordered ``[chosen_1..B ; rejected_1..B]``; ``target_index`` (N,) increases along a sequence."""
    n = sequence_index.shape[0]
    if n == 0:
        return torch.ones(0, dtype=torch.float32, device=sequence_index.device)
    counts = torch.bincount(sequence_index, minlength=2 * num_pairs)
    order = torch.argsort(sequence_index * (int(target_index.max()) + 1) + target_index)
    starts = torch.cumsum(counts, 0) - counts
    position = torch.empty_like(sequence_index)
    position[order] = torch.arange(n, device=sequence_index.device) - starts[sequence_index[order]]
    shared = torch.minimum(counts[:num_pairs], counts[num_pairs:]).repeat(2)
    ones = torch.ones(n, dtype=torch.float32, device=sequence_index.device)
    return torch.where(position < shared[sequence_index], ones, ones * alpha)
