"""Token log-probabilities from final hidden states without materialising full logits.

A causal LM scores token t+1 from the final hidden state at position t: logits = h · Wᵀ (+ b), and
log p(y_{t+1}) = logits[y_{t+1}] − logsumexp(logits). DPO needs these only for completion tokens, summed per
sequence. Materialising the (2B, L, V) float32 logits (V = 50k–250k) dominates memory, so
``chunked_token_logps`` computes them ``chunk_size`` rows at a time in the forward pass and recomputes each
chunk in the backward pass: peak extra memory is (chunk_size, V) instead of (N, V). Pure math: no model.
"""

from __future__ import annotations

import torch


def naive_token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Reference implementation: log_softmax(logits)[targets] in float32.

    Args:
        logits: (N, V) scores of the positions that predict ``targets``.
        targets: (N,) token ids.
    Returns:
        (N,) float32 log-probabilities.
    """
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


class _ChunkedTokenLogps(torch.autograd.Function):
    """log_softmax(h Wᵀ + b)[y] by row chunks; the backward recomputes each chunk's softmax."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):  # type: ignore[override]
        w, b = _compute_params(hidden, weight, bias)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for start in range(0, hidden.shape[0], chunk_size):
            logits = _chunk_logits(hidden[start : start + chunk_size], w, b)
            lse_c = torch.logsumexp(logits, dim=-1)
            tgt = targets[start : start + chunk_size]
            out[start : start + chunk_size] = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - lse_c
            lse[start : start + chunk_size] = lse_c
        ctx.save_for_backward(hidden, weight, bias if bias is not None else torch.empty(0), targets, lse)
        ctx.has_bias = bias is not None
        ctx.chunk_size = chunk_size
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        w, b = _compute_params(hidden, weight, bias)
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_bias = ctx.has_bias and ctx.needs_input_grad[2]
        grad_hidden = torch.zeros_like(hidden) if need_hidden else None
        # fp32 accumulators only for what needs a gradient (a frozen LM head, as with PEFT, needs none)
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        )
        grad_bias = (
            torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_bias else None
        )
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
        return grad_hidden, gw, gb, None, None


def _compute_params(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The LM head in the matmul dtype: the hidden states' half precision under mixed precision (fp32
    weights, bf16/fp16 activations, as autocast would compute the head), else the weights' own dtype."""
    low = hidden.dtype in (torch.bfloat16, torch.float16) and weight.dtype == torch.float32
    dtype = hidden.dtype if low else weight.dtype
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
) -> torch.Tensor:
    """log p(targets | hidden) under the output layer (weight, bias), ``chunk_size`` rows at a time.

    Args:
        hidden: (N, H) final hidden states of the positions that predict ``targets``.
        weight: (V, H) output embedding (the LM head; tied or not).
        targets: (N,) next-token ids.
        bias: optional (V,) output bias.
        chunk_size: rows per chunk; peak extra memory is about chunk_size · V · 4 bytes (twice in backward).
    Returns:
        (N,) float32 log-probabilities, equal to ``naive_token_logps(hidden @ weight.T + bias, targets)``,
        with gradients to ``hidden``, ``weight`` and ``bias``.
    """
    if hidden.shape[0] == 0:
        return hidden.new_zeros(0, dtype=torch.float32) + 0 * weight.sum()
    # The head's precision is decided here (see ``_compute_params``), never by an enclosing autocast, so the
    # policy and the reference (whose forwards may sit in different autocast contexts) score tokens alike.
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _ChunkedTokenLogps.apply(hidden, weight, bias, targets, max(1, chunk_size))


def chunked_logits_token_logps(
    logits: torch.Tensor, targets: torch.Tensor, chunk_size: int = 1024
) -> torch.Tensor:
    """``naive_token_logps`` computed ``chunk_size`` rows at a time, so only one float32 chunk is live.

    For models whose logits are not a plain linear map of the final hidden state (logit soft-capping or
    scaling), or whose output layer is sharded (FSDP, ZeRO-3). Shapes as in ``naive_token_logps``.
    """
    parts = [
        naive_token_logps(logits[s : s + chunk_size], targets[s : s + chunk_size])
        for s in range(0, logits.shape[0], chunk_size)
    ]
    return torch.cat(parts) if parts else logits.new_zeros(0, dtype=torch.float32)


def sum_by_sequence(
    token_logps: torch.Tensor, sequence_index: torch.Tensor, num_sequences: int
) -> torch.Tensor:
    """Sum per-token values into per-sequence totals.

    Args:
        token_logps: (N,) values, one per completion token.
        sequence_index: (N,) int64, which of ``num_sequences`` sequences each token belongs to.
    Returns:
        (num_sequences,) sums.
    """
    out = token_logps.new_zeros(num_sequences)
    return out.index_add(0, sequence_index, token_logps)
