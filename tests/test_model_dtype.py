"""Model dtype on load: float32 master weights by default (as TRL), explicit opt-out, and the warning."""

import logging

import pytest
import torch
from conftest import make_tiny_llama

from hf_dpo import DPOConfig
from hf_dpo.modeling.loading import load_causal_lm, resolve_dtype, warn_if_low_precision_training
from hf_dpo.run.master_weights import use_float32_master_weights


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
        assert not warn_if_low_precision_training(model.to(torch.float16))  # trained via a float32 master
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


def _half_precision_trainer(tmp_path, char_tokenizer, dtype, learning_rate, max_steps):
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
        learning_rate=learning_rate,
        per_device_train_batch_size=4,
        max_steps=max_steps,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    return DPOTrainer(str(path), args=args, train_dataset=Dataset.from_list(rows))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_load_trains_with_finite_loss_and_changing_weights(tmp_path, char_tokenizer, dtype):
    trainer = _half_precision_trainer(tmp_path, char_tokenizer, dtype, learning_rate=1e-3, max_steps=4)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    for name, param in trainer.model.named_parameters():
        assert param.dtype == getattr(torch, dtype) and torch.isfinite(param).all(), name
        if "norm" not in name:
            assert not torch.equal(before[name], param), f"{name} did not change"


def _adamw_step(weight: torch.Tensor, grad: torch.Tensor, master: bool) -> torch.Tensor:
    param = torch.nn.Parameter(weight.clone())
    optimizer = torch.optim.AdamW([param], lr=0.1, weight_decay=0.0)
    if master:
        assert use_float32_master_weights(optimizer) == 1
    param.grad = grad.clone()
    optimizer.step()
    return param.detach()


def test_float16_adamw_writes_inf_from_a_finite_gradient_and_the_float32_master_does_not():
    """The cause of fp16 weights going inf at a finite gradient norm: grad² (1e-4² = 1e-8) and eps=1e-8 both
    round to 0 in float16, so Adam divides its first moment by 0. The float32 master copy gives float32
    AdamW's result, rounded once to float16."""
    weight = torch.tensor([0.5, -0.25, 1.0], dtype=torch.float16)
    grad = torch.tensor([1e-4, -1e-4, 0.0], dtype=torch.float16)
    assert torch.isinf(_adamw_step(weight, grad, master=False)[:2]).all()
    expected = _adamw_step(weight.float(), grad.float(), master=False).half()
    updated = _adamw_step(weight, grad, master=True)
    assert updated.dtype == torch.float16 and torch.equal(updated, expected)
    # Adam's first step moves each weight by lr·sign(g) (|g| ≫ eps), and not at all where g = 0
    assert torch.equal(updated, torch.tensor([0.4, -0.15, 1.0], dtype=torch.float16))


def test_float16_weights_train_at_trls_learning_rate(tmp_path, char_tokenizer):
    """TRL's fp16 test setting (lr 0.1, 9 steps): every step finite, none skipped, every weight changes and
    stays float16. Before the float32 master, step 2's AdamW update wrote inf into v_proj."""
    trainer = _half_precision_trainer(tmp_path, char_tokenizer, "float16", learning_rate=0.1, max_steps=9)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 9 and all(torch.isfinite(torch.tensor([h["grad_norm"] for h in logs])))
    assert not any("skipped_steps" in h for h in trainer.state.log_history)
    for name, param in trainer.model.named_parameters():
        assert param.dtype == torch.float16 and torch.isfinite(param).all(), name
        assert not torch.equal(before[name], param), f"{name} did not change"
