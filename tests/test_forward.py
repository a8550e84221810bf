"""Per-sequence log-probs: concatenated batch == separate forwards; padding never changes a log-prob;
the hidden-state path == the full-logits path (tied, untied, PEFT-wrapped)."""

import pytest
import torch
from conftest import make_tiny_llama, sequence_values

from hf_dpo.batching.collator import DPODataCollator
from hf_dpo.modeling.forward import sequence_logps, uses_hidden_path
from hf_dpo.modeling.logprobs import naive_token_logps

PAIRS = [
    {"prompt_ids": [1, 5, 6, 7], "chosen_ids": [8, 9, 2], "rejected_ids": [10, 2]},
    {"prompt_ids": [1, 11], "chosen_ids": [12, 13, 14, 15, 2], "rejected_ids": [16, 17, 2]},
    {"prompt_ids": [1, 18, 19, 20, 21, 22], "chosen_ids": [2], "rejected_ids": [23, 24, 25, 26, 27, 28, 2]},
]


def separate_logps(model, prompt, completion):
    """Independent computation: one unpadded sequence, full logits, naive log-softmax."""
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0]
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
    return naive_token_logps(logits[positions], torch.tensor(completion)).sum()


@pytest.mark.parametrize("tie", [True, False])
def test_concatenated_forward_equals_separate_forwards(tie):
    model = make_tiny_llama(64, seed=1, tie=tie).eval()
    batch = DPODataCollator(pad_token_id=0)(PAIRS)
    assert uses_hidden_path(model)
    out = sequence_logps(model, batch, chunk_size=5)
    expected = [separate_logps(model, p["prompt_ids"], p["chosen_ids"]) for p in PAIRS] + [
        separate_logps(model, p["prompt_ids"], p["rejected_ids"]) for p in PAIRS
    ]
    torch.testing.assert_close(sequence_values(out), torch.stack(expected), atol=1e-5, rtol=1e-5)
    lengths = [len(p["chosen_ids"]) for p in PAIRS] + [len(p["rejected_ids"]) for p in PAIRS]
    assert torch.cat([out.chosen_num_tokens, out.rejected_num_tokens]).tolist() == lengths


def test_padding_never_changes_a_logprob():
    model = make_tiny_llama(64, seed=2).eval()
    base = sequence_values(sequence_logps(model, DPODataCollator(0)(PAIRS)))
    padded = sequence_values(sequence_logps(model, DPODataCollator(0, pad_to_multiple_of=64)(PAIRS)))
    other_pad_id = sequence_values(sequence_logps(model, DPODataCollator(pad_token_id=63)(PAIRS)))
    alone = (
        torch.cat([sequence_values(sequence_logps(model, DPODataCollator(0)([p]))) for p in PAIRS])
        .view(3, 2)
        .t()
        .flatten()
    )
    for other in (padded, other_pad_id, alone):
        torch.testing.assert_close(other, base, atol=1e-5, rtol=1e-5)


def test_hidden_path_equals_logits_path_with_gradients():
    model = make_tiny_llama(64, seed=3, tie=False)
    batch = DPODataCollator(0)(PAIRS)
    grads = []
    values = []
    for use_hidden in (True, False):
        model.zero_grad()
        out = sequence_logps(model, batch, chunk_size=4, use_hidden=use_hidden)
        (sequence_values(out) * torch.arange(1.0, 7.0)).sum().backward()
        values.append(sequence_values(out).detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(values[0], values[1], atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_peft_wrapped_model_uses_hidden_path_and_matches():
    from peft import LoraConfig, get_peft_model

    model = make_tiny_llama(64, seed=4)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    peft_model.eval()
    batch = DPODataCollator(0)(PAIRS)
    assert uses_hidden_path(peft_model)
    hidden = sequence_values(sequence_logps(peft_model, batch, use_hidden=True))
    logits = sequence_values(sequence_logps(peft_model, batch, use_hidden=False))
    torch.testing.assert_close(hidden, logits, atol=1e-5, rtol=1e-5)
    with peft_model.disable_adapter():
        base = sequence_values(sequence_logps(peft_model, batch))
    assert not torch.allclose(base, hidden)  # the random LoRA weights do change the model


def test_models_that_scale_logits_after_the_head_take_the_full_logits_path():
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(5)
    config = GraniteConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        logits_scaling=8.0,
    )
    model = GraniteForCausalLM(config).eval()
    assert not uses_hidden_path(model)  # logits = head(hidden) / 8: the probe catches it
    batch = DPODataCollator(0)(PAIRS)
    out = sequence_logps(model, batch)
    expected = [separate_logps(model, p["prompt_ids"], p["chosen_ids"]) for p in PAIRS] + [
        separate_logps(model, p["prompt_ids"], p["rejected_ids"]) for p in PAIRS
    ]
    torch.testing.assert_close(sequence_values(out), torch.stack(expected), atol=1e-5, rtol=1e-5)
