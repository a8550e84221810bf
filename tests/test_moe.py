"""Mixture-of-experts models as TRL users train them: tiny GPT-OSS, Qwen3-MoE and Mixtral built from config
(no download). With router logits on, training adds and logs the router loss on an exact layout; LoRA on the
expert weights (``target_parameters``) trains every adapter matrix; with the router loss off the fast
layouts are used and give the padded layout's loss."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, GptOssConfig, MixtralConfig, Qwen3MoeConfig

from hf_dpo import DPOConfig, DPOTrainer

ROWS = Dataset.from_list(
    [
        {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
        for a in range(4)
        for b in range(4)
    ]
)
COMMON = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    output_router_logits=True,
)


def _config(family: str, vocab: int):
    if family == "gpt_oss":
        return GptOssConfig(
            vocab_size=vocab, **COMMON, num_local_experts=4, num_experts_per_tok=2, head_dim=8,
            layer_types=["full_attention"] * 2,
        )  # fmt: skip
    if family == "qwen3_moe":
        return Qwen3MoeConfig(
            vocab_size=vocab,
            **COMMON,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            head_dim=8,
        )
    return MixtralConfig(vocab_size=vocab, **COMMON, num_local_experts=4, num_experts_per_tok=2)


def _trainer(family, tokenizer, tmp_path, peft_config=None, **overrides):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(family, len(tokenizer))).float()
    args = DPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        **overrides,
    )
    return DPOTrainer(
        model, args=args, processing_class=tokenizer, train_dataset=ROWS, peft_config=peft_config
    )


def _expert_weights(model) -> list[str]:
    """The fused 3D expert weights, named as ``target_parameters`` takes them (``mlp.experts.down_proj``)."""
    return sorted(
        {
            n.split(".layers.")[1].split(".", 1)[1]
            for n, p in model.named_parameters()
            if ".experts." in n and p.ndim == 3
        }
    )


FAMILIES = ["gpt_oss", "qwen3_moe", "mixtral"]


@pytest.mark.parametrize("family", FAMILIES)
def test_router_loss_is_added_logged_and_trained_on_an_exact_layout(family, char_tokenizer, tmp_path):
    trainer = _trainer(family, char_tokenizer, tmp_path)
    assert trainer.data_collator.layout.name == "padded"  # the router statistic is not exact packed
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    logged = [h for h in trainer.state.log_history if "dpo_loss" in h]
    assert len(logged) == 3 and all(h["aux_loss"] > 0 for h in logged)
    # loss = dpo_loss + coef * aux_loss at every step (the model config's coefficient, as TRL)
    coef = trainer.model.config.router_aux_loss_coef
    for h in logged:
        assert h["loss"] == pytest.approx(h["dpo_loss"] + coef * h["aux_loss"], rel=1e-3)
    router = [n for n in before if "router" in n or "gate.weight" in n]
    assert router and all(
        not torch.equal(before[n], dict(trainer.model.named_parameters())[n]) for n in router
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_on_expert_weights_trains_every_adapter_matrix(family, char_tokenizer, tmp_path):
    probe = AutoModelForCausalLM.from_config(_config(family, len(char_tokenizer)))
    targets = _expert_weights(probe)
    assert targets, "no fused expert weights found"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=[], target_parameters=targets)
    trainer = _trainer(family, char_tokenizer, tmp_path, peft_config=lora)
    adapters = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {n.split("lora_")[1].split(".")[0] for n in adapters} == {"A", "B"}
    assert len(adapters) == 2 * len(targets) * 2  # lora_A and lora_B, per target, per layer
    trainer.train()
    now = dict(trainer.model.named_parameters())
    unchanged = [n for n, p in adapters.items() if torch.equal(p, now[n])]
    assert not unchanged  # lora_A moves too once lora_B is off zero (step 2 on)


@pytest.mark.parametrize("family", FAMILIES)
def test_router_loss_off_uses_fast_layouts_with_the_padded_loss(family, char_tokenizer, tmp_path):
    losses = {}
    for layout in ("padded", "packed", "prefix_shared", "auto"):
        trainer = _trainer(family, char_tokenizer, tmp_path, router_aux_loss_coef=0.0, batch_layout=layout)
        if layout == "auto":
            assert trainer.data_collator.layout.name == "prefix_shared"
            continue
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():  # move the policy off its reference, the same way for every layout
            for param in trainer.model.parameters():
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        trainer.model.train()
        losses[layout] = float(trainer.compute_loss(trainer.model, batch))
    assert abs(losses["padded"] - 0.6931) > 1e-3  # not the trivial policy == reference value
    assert losses["packed"] == pytest.approx(losses["padded"], abs=1e-5)
    assert losses["prefix_shared"] == pytest.approx(losses["padded"], abs=1e-5)


def test_an_adapted_moe_peft_model_keeps_its_initial_expert_adapter_as_the_reference(char_tokenizer):
    """TRL falls back to the adapter-disabled base for an already-adapted PeftModel with ``target_parameters``
    (it assumes PEFT cannot hold a second such adapter); hf_dpo's frozen snapshot adapter works there: adding
    it leaves the policy as it was, the reference is the initial adapted model (not the base), and it stays
    so when the trained adapter moves."""
    from peft import get_peft_model

    from hf_dpo.reference.policies import AdapterSnapshotReference

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config("gpt_oss", len(char_tokenizer))).float().eval()
    targets = _expert_weights(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=[], target_parameters=targets))
    with torch.no_grad():  # an adapter that was trained already: lora_B away from zero
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    ids = torch.randint(3, len(char_tokenizer), (2, 10))

    def logits(adapter: str | None = None) -> torch.Tensor:
        with torch.no_grad():
            if adapter is None:
                return peft_model(input_ids=ids).logits
            peft_model.set_adapter(adapter, inference_mode=True)
            try:
                return peft_model(input_ids=ids).logits
            finally:
                peft_model.set_adapter("default")

    initial = logits()
    with peft_model.disable_adapter():
        base = logits()
    AdapterSnapshotReference(peft_model)
    assert torch.allclose(logits(), initial, atol=1e-6)
    assert torch.allclose(logits("reference"), initial, atol=1e-6)
    assert not torch.allclose(initial, base, atol=1e-3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B.default" in name:
                param.add_(1.0)
    assert not torch.allclose(logits(), initial, atol=1e-3)
    assert torch.allclose(logits("reference"), initial, atol=1e-6)


def test_an_untrained_expert_adapter_uses_the_exact_base_as_reference_and_every_adapter_trains(
    char_tokenizer, tmp_path
):
    """A ``PeftModel`` passed in straight from ``get_peft_model`` (every ``lora_B`` still zero) is exactly the
    base, so the reference is the adapter-disabled base: no snapshot adapter is added, every adapter matrix
    trains and the base weights stay put."""
    from peft import get_peft_model

    from hf_dpo.reference.policies import REFERENCE_ADAPTER, AdapterDisabledReference

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config("gpt_oss", len(char_tokenizer))).float()
    peft_model = get_peft_model(
        model, LoraConfig(r=4, target_modules=[], target_parameters=_expert_weights(model))
    )
    args = DPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2,
        report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = DPOTrainer(peft_model, args=args, processing_class=char_tokenizer, train_dataset=ROWS)
    assert isinstance(trainer.reference, AdapterDisabledReference)
    assert set(trainer.model.peft_config) == {"default"} != {REFERENCE_ADAPTER}
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    with torch.no_grad(), trainer.model.disable_adapter():
        base = trainer.model(input_ids=batch["input_ids"]).logits
    with torch.no_grad():
        assert torch.equal(trainer.model(input_ids=batch["input_ids"]).logits, base)  # exactly the base
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    now = dict(trainer.model.named_parameters())
    adapters = [n for n in before if "lora_" in n]
    assert adapters and all(not torch.equal(before[n], now[n]) for n in adapters)
    assert all(torch.equal(before[n], now[n]) for n in before if "lora_" not in n)
    with torch.no_grad(), trainer.model.disable_adapter():
        assert torch.equal(trainer.model(input_ids=batch["input_ids"]).logits, base)  # reference held still


def test_a_dora_or_trained_adapter_is_not_taken_for_the_base(char_tokenizer):
    """Only a plain LoRA whose every ``lora_B`` is zero counts as the base; the rest keeps the snapshot."""
    from peft import get_peft_model

    from hf_dpo.reference.policies import _is_identity_lora

    vocab = len(char_tokenizer)
    lora = LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"])
    fresh = get_peft_model(AutoModelForCausalLM.from_config(_config("mixtral", vocab)), lora)
    assert _is_identity_lora(fresh)
    params = dict(fresh.named_parameters())
    with torch.no_grad():  # PEFT starts embeddings with a zero A and a random B: the product is still zero
        next(p for n, p in params.items() if "lora_embedding_B" in n).view(-1)[0] = 1e-3
    assert _is_identity_lora(fresh)
    with torch.no_grad():
        next(p for n, p in params.items() if "lora_embedding_A" in n).view(-1)[0] = 1e-3
    assert not _is_identity_lora(fresh)
    dora = get_peft_model(
        AutoModelForCausalLM.from_config(_config("mixtral", vocab)),
        LoraConfig(r=4, target_modules=["q_proj"], use_dora=True),
    )
    assert not _is_identity_lora(dora)
