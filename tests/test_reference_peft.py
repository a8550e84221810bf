"""PEFT policies: the adapter-disabled base is the exact reference, only adapters train, an already-
trained adapter is its own frozen reference, saving writes the adapter (+ merged model), QLoRA errors."""

import copy

import pytest
import torch
from conftest import make_tiny_llama, sequence_values
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors import safe_open
from test_trainer import config, copy_task
from transformers import AutoModelForCausalLM

from hf_dpo import DPOConfig, DPOTrainer
from hf_dpo.modeling.forward import sequence_logps
from hf_dpo.reference.policies import REFERENCE_ADAPTER, AdapterDisabledReference, AdapterSnapshotReference


def lora(**overrides) -> LoraConfig:
    return LoraConfig(
        **{**dict(target_modules="all-linear", r=4, lora_alpha=8, lora_dropout=0.0), **overrides}
    )


def a_batch(trainer: DPOTrainer, n: int = 8) -> dict:
    rows = trainer.train_dataset.select(range(n))
    return trainer.data_collator([rows[i] for i in range(n)])


def base_name(peft_name: str) -> str:
    """``base_model.model.X.base_layer.weight`` -> ``X.weight`` (the plain model's parameter name)."""
    return peft_name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def test_adapter_disabled_reference_is_the_exact_base_and_only_adapters_train(tmp_path, char_tokenizer):
    base = make_tiny_llama(len(char_tokenizer))
    untouched = copy.deepcopy(base)
    trainer = DPOTrainer(
        base,
        args=config(tmp_path, max_steps=8, learning_rate=1e-2),
        processing_class=char_tokenizer,
        train_dataset=copy_task(64, 0),
        peft_config=lora(),
    )
    assert isinstance(trainer.reference, AdapterDisabledReference)
    batch = a_batch(trainer)
    expected = sequence_values(sequence_logps(untouched, batch))
    assert torch.equal(sequence_values(trainer.reference.logps(trainer.model, batch, 1024)), expected)
    adapters_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert adapters_before and all("lora_" in n for n in adapters_before)

    trainer.train()

    assert torch.equal(
        sequence_values(trainer.reference.logps(trainer.model, batch, 1024)), expected
    )  # reference never drifts
    plain = dict(untouched.named_parameters())
    for name, param in trainer.model.named_parameters():
        if name in adapters_before:
            continue
        assert torch.equal(param, plain[base_name(name)]), f"base weight {name} changed"
    lora_b = [n for n in adapters_before if "lora_B" in n]
    moved = [
        n for n in lora_b if not torch.equal(dict(trainer.model.named_parameters())[n], adapters_before[n])
    ]
    assert moved == lora_b, "every lora_B (initialised at 0) must receive gradient and move"
    with torch.no_grad():
        policy = sequence_values(sequence_logps(trainer.model, batch))
    assert not torch.allclose(policy, expected), "the trained adapter must change the policy"


@pytest.mark.parametrize("reentrant", [True, False])
def test_adapters_train_under_gradient_checkpointing(tmp_path, char_tokenizer, reentrant):
    args = config(
        tmp_path,
        max_steps=3,
        learning_rate=1e-2,
        activation_checkpointing=True,
        activation_checkpointing_kwargs={"use_reentrant": reentrant},
    )
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=args,
        processing_class=char_tokenizer,
        train_dataset=copy_task(32, 0),
        peft_config=lora(),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert all(not torch.equal(after[n], b) for n, b in before.items()), "some adapter got no gradient"


def trained_adapter_dir(tmp_path, vocab_size: int):
    """A saved LoRA adapter with non-zero weights (so it differs from the bare base)."""
    model = get_peft_model(make_tiny_llama(vocab_size), lora())
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_already_trained_adapter_is_its_own_frozen_reference(tmp_path, char_tokenizer):
    path = trained_adapter_dir(tmp_path, len(char_tokenizer))
    policy = PeftModel.from_pretrained(make_tiny_llama(len(char_tokenizer)), path, is_trainable=True)
    bare_base = make_tiny_llama(len(char_tokenizer))
    trainer = DPOTrainer(
        policy,
        args=config(tmp_path, max_steps=5, learning_rate=1e-2),
        processing_class=char_tokenizer,
        train_dataset=copy_task(64, 0),
    )
    assert isinstance(trainer.reference, AdapterSnapshotReference)
    batch = a_batch(trainer)
    with torch.no_grad():
        start = sequence_values(sequence_logps(trainer.model, batch))
    reference_start = sequence_values(trainer.reference.logps(trainer.model, batch, 1024))
    assert torch.allclose(reference_start, start, atol=1e-6, rtol=0)
    assert not torch.allclose(
        reference_start, sequence_values(sequence_logps(bare_base, batch)), atol=1e-3
    )  # not the base
    snapshot = {
        n: p.detach().clone() for n, p in trainer.model.named_parameters() if f".{REFERENCE_ADAPTER}." in n
    }
    assert snapshot and not any(p.requires_grad for n, p in trainer.model.named_parameters() if n in snapshot)

    trainer.train()

    assert torch.equal(sequence_values(trainer.reference.logps(trainer.model, batch, 1024)), reference_start)
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(params[n], p) for n, p in snapshot.items())
    trained = [n for n in params if ".default." in n and "lora_B" in n]
    assert all(params[n].requires_grad for n in trained)
    assert all(
        not torch.equal(params[n], snapshot[n.replace(".default.", f".{REFERENCE_ADAPTER}.")])
        for n in trained
    )

    out = tmp_path / "saved"
    trainer.save_model(str(out))
    assert (out / "adapter_model.safetensors").is_file() and not (out / REFERENCE_ADAPTER).exists()
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as saved:
        assert sorted(saved.keys()) == sorted(  # the trained adapter's tensors only, not the snapshot's
            n.replace(".default.", ".") for n in dict(trainer.model.named_parameters()) if ".default." in n
        )
    assert REFERENCE_ADAPTER in trainer.model.peft_config  # hidden only while saving
    reloaded = PeftModel.from_pretrained(make_tiny_llama(len(char_tokenizer)), out)
    with torch.no_grad():
        assert torch.allclose(
            sequence_values(sequence_logps(reloaded, batch)),
            sequence_values(sequence_logps(trainer.model, batch)),
            atol=1e-5,
        )


def test_frozen_loaded_adapter_and_double_wrapping_are_refused(tmp_path, char_tokenizer):
    path = trained_adapter_dir(tmp_path, len(char_tokenizer))
    frozen = PeftModel.from_pretrained(make_tiny_llama(len(char_tokenizer)), path)
    with pytest.raises(ValueError, match="is_trainable=True"):
        DPOTrainer(
            frozen, args=config(tmp_path), processing_class=char_tokenizer, train_dataset=copy_task(8, 0)
        )
    trainable = PeftModel.from_pretrained(make_tiny_llama(len(char_tokenizer)), path, is_trainable=True)
    with pytest.raises(ValueError, match="already a PeftModel"):
        DPOTrainer(
            trainable,
            args=config(tmp_path),
            processing_class=char_tokenizer,
            train_dataset=copy_task(8, 0),
            peft_config=lora(),
        )


def test_save_writes_adapter_and_merged_model(tmp_path, char_tokenizer):
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path, max_steps=3, learning_rate=1e-2, save_merged_model=True),
        processing_class=char_tokenizer,
        train_dataset=copy_task(32, 0),
        peft_config=lora(),
    )
    trainer.train()
    trainer.save_model()
    assert (tmp_path / "adapter_config.json").is_file() and not (tmp_path / "model.safetensors").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    batch = a_batch(trainer)
    with torch.no_grad():
        assert torch.allclose(
            sequence_values(sequence_logps(merged, batch)),
            sequence_values(sequence_logps(trainer.model, batch)),
            atol=1e-4,
        )
    assert hasattr(trainer.model, "peft_config")  # merging ran on a copy


def test_save_merged_model_without_peft_is_refused(tmp_path, char_tokenizer):
    with pytest.raises(ValueError, match="save_merged_model=True needs a PEFT model"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path, save_merged_model=True),
            processing_class=char_tokenizer,
            train_dataset=copy_task(8, 0),
        )


def test_qlora_without_bitsandbytes_or_gpu_fails_clearly(tmp_path, char_tokenizer):
    from transformers import BitsAndBytesConfig

    make_tiny_llama(len(char_tokenizer)).save_pretrained(tmp_path / "base")
    char_tokenizer.save_pretrained(tmp_path / "base")
    args = DPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to=[],
        model_init_kwargs={"quantization_config": BitsAndBytesConfig(load_in_4bit=True)},
    )
    try:
        import bitsandbytes  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("bitsandbytes and a GPU exist here: QLoRA is supported, no error to check")
    except ImportError:
        pass
    with pytest.raises((ImportError, RuntimeError), match="QLoRA.*(bitsandbytes|CUDA GPU)"):
        DPOTrainer(str(tmp_path / "base"), args=args, train_dataset=copy_task(8, 0), peft_config=lora())
