"""Model dtype on load: float32 master weights by default (as TRL), explicit opt-out, and the warning."""

import logging

import pytest
import torch
from conftest import make_tiny_llama

from hf_dpo import DPOConfig
from hf_dpo.modeling.loading import load_causal_lm, resolve_dtype, warn_if_low_precision_training


@pytest.fixture
def bf16_checkpoint(tmp_path, char_tokenizer):
    """A checkpoint saved in bfloat16, as most Hub checkpoints are."""
    model = make_tiny_llama(len(char_tokenizer)).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(tmp_path)
    char_tokenizer.save_pretrained(tmp_path)
    return tmp_path


def test_load_by_name_defaults_to_float32(bf16_checkpoint):
    model = load_causal_lm(str(bf16_checkpoint))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("spec", ["bfloat16", "torch.bfloat16", torch.bfloat16])
def test_dtype_opt_out(bf16_checkpoint, spec):
    model = load_causal_lm(str(bf16_checkpoint), dtype=spec)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    legacy = load_causal_lm(str(bf16_checkpoint), torch_dtype=spec)
    assert {p.dtype for p in legacy.parameters()} == {torch.bfloat16}


def test_resolve_dtype_rejects_unknown_names():
    assert resolve_dtype("auto") == "auto"
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        resolve_dtype("bf16x")


def test_low_precision_warning(caplog, char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer))
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        assert not warn_if_low_precision_training(model)
        assert warn_if_low_precision_training(model.to(torch.bfloat16))
        assert not warn_if_low_precision_training(model, has_fp32_master=True)
    assert sum("no fp32 master copy" in r.message for r in caplog.records) == 1


def test_short_max_length_needs_no_prompt_cap():
    """max_length <= 512 used to fail against the old max_prompt_length default of 512."""
    for max_length in (128, 256, 512):
        assert DPOConfig(output_dir="x", max_length=max_length).max_prompt_length is None
    with pytest.raises(ValueError, match="must be smaller than max_length"):
        DPOConfig(output_dir="x", max_length=256, max_prompt_length=256)


def test_fp16_head_computes_in_fp32_so_large_logits_do_not_overflow():
    """Logits beyond float16's range (65504) stay finite: the chunked head never multiplies in float16."""
    from hf_dpo.modeling.logprobs import chunked_token_logps, naive_token_logps

    torch.manual_seed(0)
    hidden = (torch.randn(6, 16) * 150).half()
    weight = (torch.randn(40, 16) * 150).half()
    targets = torch.randint(0, 40, (6,))
    assert not torch.isfinite(hidden @ weight.t()).all()  # the float16 matmul overflows
    got = chunked_token_logps(hidden, weight.requires_grad_(), targets, chunk_size=4)
    want = naive_token_logps(hidden.float() @ weight.float().t(), targets)
    assert torch.isfinite(got).all() and torch.allclose(got, want, atol=1e-3)
    got.sum().backward()
    assert torch.isfinite(weight.grad).all()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_load_trains_with_finite_loss_and_changing_weights(tmp_path, char_tokenizer, dtype):
    from datasets import Dataset

    from hf_dpo import DPOTrainer

    path = tmp_path / "model"
    make_tiny_llama(len(char_tokenizer)).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    rows = [
        {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
        for a in range(4)
        for b in range(4)
    ]
    args = DPOConfig(
        output_dir=str(tmp_path / "out"),
        model_init_kwargs={"dtype": dtype},
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(str(path), args=args, train_dataset=Dataset.from_list(rows))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    for name, param in trainer.model.named_parameters():
        assert param.dtype == getattr(torch, dtype) and torch.isfinite(param).all(), name
        if "norm" not in name:
            assert not torch.equal(before[name], param), f"{name} did not change"
