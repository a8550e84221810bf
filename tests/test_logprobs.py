"""Chunked LM-head log-probs equal the naive full-logits computation, values and gradients."""

import pytest
import torch

from hf_dpo.modeling.logprobs import (
    chunked_logits_token_logps,
    chunked_token_logps,
    naive_token_logps,
    sum_by_sequence,
)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
@pytest.mark.parametrize("with_bias", [False, True])
def test_chunked_equals_naive_values_and_grads(chunk_size, with_bias):
    torch.manual_seed(0)
    n, h, v = 53, 16, 301
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(v, h, requires_grad=True)
    bias = torch.randn(v, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,))
    upstream = torch.randn(n)  # an arbitrary downstream gradient

    naive = naive_token_logps(hidden @ weight.t() + (bias if with_bias else 0), targets)
    grads_naive = torch.autograd.grad(
        (naive * upstream).sum(), [hidden, weight] + ([bias] if with_bias else [])
    )
    chunked = chunked_token_logps(hidden, weight, targets, bias, chunk_size)
    grads_chunked = torch.autograd.grad(
        (chunked * upstream).sum(), [hidden, weight] + ([bias] if with_bias else [])
    )

    torch.testing.assert_close(chunked, naive, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_chunked, grads_naive, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_chunked_passes_gradcheck_in_float64():
    torch.manual_seed(1)
    hidden = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (6,))
    # the op returns float32 by design; compare against naive in float64 through a float64 reimplementation
    out = chunked_token_logps(hidden, weight, targets, None, 4).double()
    ref = torch.log_softmax(hidden @ weight.t(), -1).gather(-1, targets[:, None]).squeeze(-1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)


def test_tied_embedding_gets_gradient_from_both_uses():
    torch.manual_seed(2)
    emb = torch.nn.Embedding(50, 8)
    ids = torch.randint(0, 50, (10,))
    targets = torch.randint(0, 50, (10,))
    hidden = torch.tanh(emb(ids))
    chunked = chunked_token_logps(hidden, emb.weight, targets, None, 3).sum()
    (g_chunked,) = torch.autograd.grad(chunked, emb.weight)
    hidden = torch.tanh(emb(ids))
    naive = naive_token_logps(hidden @ emb.weight.t(), targets).sum()
    (g_naive,) = torch.autograd.grad(naive, emb.weight)
    torch.testing.assert_close(g_chunked, g_naive, atol=1e-5, rtol=1e-5)


def test_logits_path_and_sum_by_sequence():
    torch.manual_seed(3)
    logits = torch.randn(11, 20)
    targets = torch.randint(0, 20, (11,))
    torch.testing.assert_close(
        chunked_logits_token_logps(logits, targets, 4), naive_token_logps(logits, targets)
    )
    seq = torch.tensor([0, 0, 1, 2, 2, 2, 1, 0, 3, 3, 3])
    values = torch.arange(11, dtype=torch.float32)
    assert sum_by_sequence(values, seq, 5).tolist() == [0 + 1 + 7, 2 + 6, 3 + 4 + 5, 8 + 9 + 10, 0]


def test_mixed_precision_head_matches_a_bf16_matmul_and_frozen_head_gets_no_gradient():
    torch.manual_seed(4)
    hidden = torch.randn(20, 16, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(40, 16)  # fp32 master weights, frozen (as with a PEFT model)
    targets = torch.randint(0, 40, (20,))
    chunked = chunked_token_logps(hidden, weight, targets, None, 7)
    (g_chunked,) = torch.autograd.grad(chunked.sum(), hidden)
    naive = naive_token_logps(hidden @ weight.bfloat16().t(), targets)  # what autocast would compute
    (g_naive,) = torch.autograd.grad(naive.sum(), hidden)
    torch.testing.assert_close(chunked, naive, atol=1e-5, rtol=1e-5)
    assert g_chunked.dtype == torch.bfloat16
    torch.testing.assert_close(g_chunked.float(), g_naive.float(), atol=2e-2, rtol=2e-2)
