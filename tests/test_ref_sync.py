"""Reference sync (TR-DPO): πref ← α·πθ + (1−α)·πref exactly every k optimizer steps; refused where it
cannot apply."""

import pytest
import torch
from conftest import make_tiny_llama
from peft import LoraConfig
from test_trainer import config, copy_task
from transformers import TrainerCallback

from hf_dpo import DPOConfig, DPOTrainer
from hf_dpo.reference.sync import RefSyncCallback, mix_into_reference


def test_mix_matches_the_formula(char_tokenizer):
    reference = make_tiny_llama(len(char_tokenizer), seed=0)
    policy = make_tiny_llama(len(char_tokenizer), seed=1)
    old = {n: p.detach().clone() for n, p in reference.named_parameters()}
    mix_into_reference(reference, policy, 0.3)
    for name, param in reference.named_parameters():
        expected = 0.3 * dict(policy.named_parameters())[name] + 0.7 * old[name]
        assert torch.allclose(param, expected, atol=1e-7, rtol=1e-6), name
    mix_into_reference(reference, policy, 1.0)
    assert all(torch.equal(p, q) for p, q in zip(reference.parameters(), policy.parameters(), strict=True))


class Recorder(TrainerCallback):
    """Snapshots policy and reference after every optimizer step (runs after the sync callback)."""

    def __init__(self, reference: torch.nn.Module) -> None:
        self.reference, self.steps = reference, []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        clone = lambda m: {n: p.detach().clone() for n, p in m.named_parameters()}  # noqa: E731
        self.steps.append((state.global_step, clone(model), clone(self.reference)))


def test_reference_is_synced_every_k_steps_during_training(tmp_path, char_tokenizer):
    alpha, k = 0.25, 2
    args = config(
        tmp_path,
        max_steps=5,
        learning_rate=1e-2,
        sync_ref_model=True,
        ref_model_mixup_alpha=alpha,
        ref_model_sync_steps=k,
    )
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=args,
        processing_class=char_tokenizer,
        train_dataset=copy_task(64, 0),
    )
    reference = trainer.reference.model
    previous = {n: p.detach().clone() for n, p in reference.named_parameters()}
    recorder = Recorder(reference)
    trainer.add_callback(recorder)
    trainer.train()

    assert [s for s, _, _ in recorder.steps] == [1, 2, 3, 4, 5]
    for step, policy, ref in recorder.steps:
        for name, value in ref.items():
            if step % k:
                assert torch.equal(value, previous[name]), f"reference changed off-schedule at step {step}"
            else:
                expected = alpha * policy[name] + (1 - alpha) * previous[name]
                assert torch.allclose(value, expected, atol=1e-7, rtol=1e-6), (step, name)
        if step % k == 0:
            assert any(not torch.equal(ref[n], previous[n]) for n in ref), "sync did not move the reference"
        previous = ref
    assert not any(p.requires_grad for p in reference.parameters())


def test_sync_is_refused_where_it_cannot_apply(tmp_path, char_tokenizer):
    with pytest.raises(ValueError, match="precompute_ref_log_probs"):
        DPOConfig(output_dir=str(tmp_path), sync_ref_model=True, precompute_ref_log_probs=True)
    with pytest.raises(ValueError, match="sync_ref_model=True needs a separate reference model"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path, sync_ref_model=True),
            processing_class=char_tokenizer,
            train_dataset=copy_task(8, 0),
            peft_config=LoraConfig(target_modules="all-linear", r=4),
        )
    for bad in (
        dict(ref_model_mixup_alpha=0.0),
        dict(ref_model_mixup_alpha=1.5),
        dict(ref_model_sync_steps=0),
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            DPOConfig(output_dir=str(tmp_path), **bad)
    with pytest.raises(ValueError, match="needs a separate reference model"):
        from hf_dpo.reference.policies import PrecomputedReference

        RefSyncCallback(PrecomputedReference(), 0.5, 1)
