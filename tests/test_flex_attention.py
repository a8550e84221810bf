"""flex_attention: the prefix-shared layout as a block-sparse ``BlockMask`` equals the padded layout.

Forward log-probs are checked on CPU (fp32) with eager flex (``flex_attention`` uncompiled: a dense reference
implementation) and with transformers' compiled flex; flex_attention has no backward on CPU, so the gradient
equality runs on CUDA only.
"""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from conftest import make_tiny_llama, sequence_values
from test_layouts import PAIR_LENGTHS, VOCAB, independent_logps, logps_and_grads, random_pairs

from hf_dpo.batching.attention import (
    MASK_FORM_KEY,
    REJECTED,
    MaskForm,
    layout_support,
    model_inputs,
    prefix_shared_block_mask,
)
from hf_dpo.batching.layouts import PaddedLayout, PrefixSharedLayout, choose_layout, get_layout
from hf_dpo.modeling.forward import sequence_logps

flex_attention_module = pytest.importorskip("torch.nn.attention.flex_attention")


def tiny(attn: str, device: str = "cpu") -> torch.nn.Module:
    return make_tiny_llama(VOCAB, tie=False, attn=attn).to(device).eval()  # same weights for every attn


@pytest.fixture
def eager_flex(monkeypatch):
    """Run transformers' flex_attention integration on uncompiled ``flex_attention``."""
    import transformers.integrations.flex_attention as integration

    def uncompiled(query, key, value, training=False, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "flex_attention called without torch.compile")
            return flex_attention_module.flex_attention(query, key, value, **kwargs)

    monkeypatch.setattr(integration, "compile_friendly_flex_attention", uncompiled)


def test_block_mask_skips_blocks_of_other_pairs_and_the_other_branch() -> None:
    # Four pairs of exactly one 128-token block each: only the 4 diagonal blocks are computed, not the 10 of a
    # causal mask over the row.
    segment = torch.arange(4).repeat_interleave(128)[None]
    block_mask = prefix_shared_block_mask(segment, torch.zeros_like(segment))
    assert block_mask.shape == (1, 1, 512, 512)
    computed = block_mask.kv_num_blocks + block_mask.full_kv_num_blocks
    assert computed.tolist() == [[[1, 1, 1, 1]]]
    # One pair: prompt (block 0), chosen (block 1), rejected (block 2): rejected queries skip chosen keys.
    branch = torch.tensor([0] * 128 + [1] * 128 + [REJECTED] * 128)[None]
    block_mask = prefix_shared_block_mask(torch.zeros_like(branch), branch)
    dense = block_mask.to_dense()[0, 0]  # (query blocks, key blocks), 1 where the block is computed
    assert dense.tolist() == [[1, 0, 0], [1, 1, 0], [1, 0, 1]]


def test_flex_supports_prefix_shared_and_auto_chooses_a_block_mask(caplog) -> None:
    model = tiny("flex_attention")
    assert layout_support(model) == {"padded": None, "packed": None, "prefix_shared": None}
    with caplog.at_level(logging.INFO, logger="hf_dpo"):
        layout = choose_layout(model)
    assert isinstance(layout, PrefixSharedLayout) and layout.row_tokens == "all"
    assert layout.mask_form is MaskForm.BLOCK_MASK
    (line,) = [r.getMessage() for r in caplog.records if "batch_layout='auto'" in r.getMessage()]
    assert "mask form block_mask, fully masked blocks skipped" in line and "flex_attention" in line
    inputs = model_inputs(model, layout(random_pairs(PAIR_LENGTHS)))
    assert isinstance(inputs["attention_mask"], flex_attention_module.BlockMask)


def test_eager_flex_forward_equals_padded_without_a_dense_mask(eager_flex, monkeypatch) -> None:
    from hf_dpo.batching import attention

    pairs = random_pairs(PAIR_LENGTHS)
    with torch.no_grad():
        expected = independent_logps(tiny("sdpa"), pairs)
        padded = sequence_values(sequence_logps(tiny("sdpa"), PaddedLayout(0)(pairs)))
    torch.testing.assert_close(padded, expected, rtol=0, atol=1e-5)

    def no_dense(*args, **kwargs):
        raise AssertionError("dense prefix_shared_mask built for flex_attention")

    monkeypatch.setattr(attention, "prefix_shared_mask", no_dense)  # a flex model never gets the (T, T) mask
    model = tiny("flex_attention")
    layouts = [choose_layout(model), get_layout("prefix_shared", 0, row_tokens=30)]  # one row, several rows
    for layout in layouts:
        batch = layout(pairs)
        with torch.no_grad():
            logps = sequence_values(sequence_logps(model, batch))
        torch.testing.assert_close(logps, padded, rtol=0, atol=1e-5)
    assert batch["input_ids"].shape[0] > 1 and MASK_FORM_KEY not in batch  # decided from the model


def test_compiled_flex_forward_equals_padded() -> None:
    # transformers' own path: flex_attention compiled (inductor on CPU), the BlockMask passed through.
    pairs = random_pairs(PAIR_LENGTHS)
    model = tiny("flex_attention")
    with torch.no_grad():
        padded = sequence_values(sequence_logps(tiny("sdpa"), PaddedLayout(0)(pairs)))
        logps = sequence_values(sequence_logps(model, choose_layout(model)(pairs)))
    torch.testing.assert_close(logps, padded, rtol=0, atol=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="flex_attention has no backward on CPU (NotImplementedError); the gradient check needs CUDA",
)
@pytest.mark.parametrize(("name", "row_tokens"), [("prefix_shared", "all"), ("packed", "all")])
def test_flex_gradients_equal_padded_on_cuda(name: str, row_tokens) -> None:
    pairs = random_pairs(PAIR_LENGTHS)
    ref_logps, ref_grads = logps_and_grads(tiny("sdpa", "cuda").train(), _to(PaddedLayout(0)(pairs), "cuda"))
    model = tiny("flex_attention", "cuda").train()
    layout = choose_layout(model, name)
    logps, grads = logps_and_grads(model, _to(layout(pairs), "cuda"))
    assert ref_grads.abs().max() > 1e-3
    torch.testing.assert_close(logps, ref_logps, rtol=0, atol=1e-4)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-5)


def _to(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
