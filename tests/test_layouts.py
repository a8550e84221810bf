"""Batch layouts: padded, packed and prefix-shared give the same log-probs and gradients; auto selection."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import HH_RLHF, TINY_MODEL, make_tiny_llama, sequence_values
from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from hf_dpo.batching import attention
from hf_dpo.batching.attention import (
    CHOSEN,
    MASK_FORM_KEY,
    PROMPT,
    REJECTED,
    MaskForm,
    layout_support,
    model_inputs,
    prefix_shared_mask,
)
from hf_dpo.batching.layouts import PackedLayout, PaddedLayout, PrefixSharedLayout, choose_layout, get_layout
from hf_dpo.modeling.forward import sequence_logps

VOCAB = 97

VARIANTS = [
    ("packed", "all"),
    ("packed", "longest"),
    ("packed", 40),
    ("prefix_shared", "all"),
    ("prefix_shared", "longest"),
]


def tiny_llama(attn: str = "sdpa", seed: int = 0) -> LlamaForCausalLM:
    return make_tiny_llama(VOCAB, seed=seed, tie=False, attn=attn).eval()


def random_pairs(lengths: list[tuple[int, int, int]], seed: int = 1) -> list[dict[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(1, VOCAB, (n,), generator=g).tolist()

    return [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)} for p, c, r in lengths]


PAIR_LENGTHS = [(5, 3, 7), (1, 4, 1), (9, 2, 2), (3, 6, 5), (12, 1, 9)]


def independent_logps(model: torch.nn.Module, pairs: list[dict[str, list[int]]]) -> torch.Tensor:
    """Each sequence alone, full logits, plain log_softmax: ordered [chosen_1..B ; rejected_1..B]."""
    out = []
    for key in ("chosen_ids", "rejected_ids"):
        for pair in pairs:
            prompt, completion = pair["prompt_ids"], pair[key]
            ids = torch.tensor([prompt + completion])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
            logps = torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])
            out.append(logps.sum())
    return torch.stack(out)


def logps_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    model.zero_grad()
    logps = sequence_values(sequence_logps(model, batch))
    # A non-uniform weighting so that a swapped sequence would change the gradient.
    weights = torch.linspace(0.5, 1.5, logps.numel())
    (logps * weights).sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return logps.detach(), grads


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(("name", "row_tokens"), VARIANTS)
def test_layouts_match_padded_and_independent_logps_and_grads(attn: str, name: str, row_tokens) -> None:
    model = tiny_llama(attn)
    pairs = random_pairs(PAIR_LENGTHS)
    with torch.no_grad():
        expected = independent_logps(model, pairs)
    ref_logps, ref_grads = logps_and_grads(model, PaddedLayout(0)(pairs))
    logps, grads = logps_and_grads(model, get_layout(name, 0, row_tokens=row_tokens)(pairs))
    torch.testing.assert_close(ref_logps, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(logps, expected, rtol=0, atol=1e-5)
    assert ref_grads.abs().max() > 1e-3  # the comparison below is not vacuous
    torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-5)


def test_packed_structure_positions_restart_and_no_padding_in_one_row() -> None:
    pairs = random_pairs(PAIR_LENGTHS)
    batch = PackedLayout(0)(pairs)
    lengths = [len(p["prompt_ids"]) + len(p[k]) for k in ("chosen_ids", "rejected_ids") for p in pairs]
    assert batch["input_ids"].shape == (1, sum(lengths))
    assert batch["num_tokens"] == sum(lengths)
    assert "attention_mask" not in batch  # transformers detects packing only without a 2D mask
    expected_positions = torch.cat([torch.arange(n) for n in lengths])
    assert torch.equal(batch["position_ids"][0], expected_positions)
    # Every target is the token right after the position that scores it.
    assert torch.equal(batch["input_ids"].flatten()[batch["target_index"] + 1], batch["target_ids"])


def test_longest_rows_never_exceed_padded_width() -> None:
    pairs = random_pairs(PAIR_LENGTHS)
    padded = PaddedLayout(0)(pairs)
    packed = PackedLayout(0, row_tokens="longest")(pairs)
    assert packed["input_ids"].shape[1] == padded["input_ids"].shape[1]
    assert packed["input_ids"].numel() < padded["input_ids"].numel()
    assert packed["num_tokens"] == padded["num_tokens"]


def test_pad_to_multiple_of_keeps_values() -> None:
    model = tiny_llama()
    pairs = random_pairs(PAIR_LENGTHS)
    with torch.no_grad():
        expected = independent_logps(model, pairs)
        for name in ("packed", "prefix_shared"):
            batch = get_layout(name, 0, pad_to_multiple_of=16, row_tokens="longest")(pairs)
            assert batch["input_ids"].shape[1] % 16 == 0
            torch.testing.assert_close(
                sequence_values(sequence_logps(model, batch)), expected, rtol=0, atol=1e-5
            )


def test_prefix_shared_structure_and_mask() -> None:
    pairs = random_pairs([(4, 2, 3)])
    batch = PrefixSharedLayout(0)(pairs)
    assert batch["input_ids"].shape == (1, 9)
    assert batch["num_tokens"] == 9
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 5, 4, 5, 6]
    # chosen scored from positions 3, 4; rejected from 3 (last prompt token), then 6, 7
    assert batch["target_index"].tolist() == [3, 4, 3, 6, 7]
    assert batch["target_seq"].tolist() == [0, 0, 1, 1, 1]
    mask = prefix_shared_mask(batch["prefix_segment_ids"], batch["prefix_branch_ids"])[0, 0]
    branch = batch["prefix_branch_ids"][0]
    chosen, rejected, prompt = branch == CHOSEN, branch == REJECTED, branch == PROMPT
    assert not mask[rejected][:, chosen].any()  # rejected never sees chosen
    assert not mask[chosen][:, rejected].any()  # nor chosen rejected
    assert mask[rejected][:, prompt].all() and mask[chosen][:, prompt].all()
    assert torch.equal(mask[prompt][:, prompt], torch.ones(4, 4, dtype=torch.bool).tril())


def test_prefix_shared_pads_and_separate_pairs_are_isolated() -> None:
    pairs = random_pairs([(3, 2, 2), (2, 1, 1)])
    batch = PrefixSharedLayout(0, pad_to_multiple_of=16)(pairs)
    mask = prefix_shared_mask(batch["prefix_segment_ids"], batch["prefix_branch_ids"])[0, 0]
    seg = batch["prefix_segment_ids"][0]
    assert not mask[seg == 0][:, seg == 1].any() and not mask[seg == 1][:, seg == 0].any()
    assert mask.any(-1).all()  # no fully masked query row (sdpa would return NaN)


def test_empty_prompt_is_a_clear_error() -> None:
    pairs = [{"prompt_ids": [], "chosen_ids": [1], "rejected_ids": [2]}]
    for name in ("packed", "prefix_shared"):
        with pytest.raises(ValueError, match="pair 0 .*empty prompt_ids"):
            get_layout(name, 0)(pairs)


def test_row_tokens_validation() -> None:
    with pytest.raises(ValueError, match="row_tokens"):
        PackedLayout(0, row_tokens="everything")


@pytest.mark.skipif(
    not (TINY_MODEL.exists() and HH_RLHF.exists()), reason="needs ../shared (tiny model, HH-RLHF)"
)
def test_real_hh_rlhf_rows_on_shared_tiny_model() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_dpo.tokens.tokenization import tokenize_row

    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, attn_implementation="sdpa").float().eval()
    rows = [json.loads(line) for line in HH_RLHF.read_text().splitlines()[:6]]
    pairs = [tokenize_row(row, i, tokenizer, None, 384, 256) for i, row in enumerate(rows)]
    pairs = [p for p in pairs if isinstance(p, dict)]
    assert len(pairs) >= 4
    ref_logps, ref_grads = logps_and_grads(model, PaddedLayout(tokenizer.eos_token_id)(pairs))
    for name, row_tokens in [("packed", "all"), ("prefix_shared", "all"), ("prefix_shared", "longest")]:
        batch = get_layout(name, tokenizer.eos_token_id, row_tokens=row_tokens)(pairs)
        logps, grads = logps_and_grads(model, batch)
        torch.testing.assert_close(
            logps, ref_logps, rtol=0, atol=1e-5 * max(1.0, ref_logps.abs().max().item())
        )
        torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-5)
        assert batch["num_tokens"] < PaddedLayout(0)(pairs)["input_ids"].numel()


# ---- selection -------------------------------------------------------------------------------------------


def test_choose_layout_auto_per_backend(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="hf_dpo"):
        layout = choose_layout(tiny_llama("sdpa"), "auto")
    assert isinstance(layout, PrefixSharedLayout) and layout.row_tokens == "longest"
    assert sum("chose 'prefix_shared'" in r.getMessage() for r in caplog.records) == 1
    assert isinstance(choose_layout(tiny_llama("eager")), PrefixSharedLayout)

    flash = tiny_llama("sdpa")
    flash.config._attn_implementation = "flash_attention_2"  # no kernel needed: only the choice is tested
    layout = choose_layout(flash, "auto")
    assert isinstance(layout, PackedLayout) and layout.row_tokens == "all"  # varlen kernels need one row
    with pytest.raises(ValueError, match="prefix_shared.*flash_attention_2"):
        choose_layout(flash, "prefix_shared")
    # Policy sdpa + reference flash: only what both support, in one row.
    layout = choose_layout([tiny_llama("sdpa"), flash, None], "auto")
    assert isinstance(layout, PackedLayout) and layout.row_tokens == "all"


def test_choose_layout_forced_and_errors() -> None:
    model = tiny_llama()
    assert isinstance(choose_layout(model, "padded"), PaddedLayout)
    assert isinstance(choose_layout(model, "packed"), PackedLayout)
    with pytest.raises(ValueError, match="unknown batch_layout 'ragged'"):
        choose_layout(model, "ragged")


def test_sliding_window_model_gets_packed_not_prefix_shared() -> None:
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=8,
        max_window_layers=0,
    )
    model = Qwen2ForCausalLM(config)
    assert "sliding" in (layout_support(model)["prefix_shared"] or "")
    assert isinstance(choose_layout(model), PackedLayout)


def test_unknown_module_falls_back_to_padded() -> None:
    class NotHF(torch.nn.Module):
        pass

    assert isinstance(choose_layout(NotHF()), PaddedLayout)
    with pytest.raises(ValueError, match="cannot isolate packed"):
        choose_layout(NotHF(), "packed")


def test_prefix_shared_batch_on_unsupported_backend_fails_clearly() -> None:
    model = tiny_llama()
    model.config._attn_implementation = "flash_attention_2"
    batch = PrefixSharedLayout(0)(random_pairs([(2, 1, 1)]))
    with pytest.raises(ValueError, match="prefix_shared layout"):
        model_inputs(model, batch)


def test_trainer_auto_layout_gives_padded_loss(tmp_path) -> None:
    from datasets import Dataset

    from hf_dpo import DPOConfig, DPOTrainer

    pairs = random_pairs(PAIR_LENGTHS * 2, seed=3)

    class Tok:  # the trainer needs only eos/pad ids for pre-tokenized data
        eos_token_id, pad_token_id = 0, 0

        def save_pretrained(self, *args, **kwargs) -> None:
            pass

    losses = {}
    for layout in ("auto", "padded"):
        args = DPOConfig(
            output_dir=str(tmp_path / layout),
            batch_layout=layout,
            per_device_eval_batch_size=4,
            report_to=[],
            use_cpu=True,
        )
        trainer = DPOTrainer(
            tiny_llama(), args=args, eval_dataset=Dataset.from_list(pairs), processing_class=Tok()
        )
        if layout == "auto":
            assert trainer.data_collator.layout.name == "prefix_shared"
        losses[layout] = trainer.evaluate()
    for key in ("eval_loss", "eval_margin", "eval_logps/chosen", "eval_logps/rejected"):
        assert losses["auto"][key] == pytest.approx(losses["padded"][key], abs=1e-5), key


def test_prefix_shared_with_gradient_checkpointing_and_peft() -> None:
    from peft import LoraConfig, get_peft_model

    pairs = random_pairs(PAIR_LENGTHS)
    model = tiny_llama()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ref_logps, ref_grads = logps_and_grads(model, PaddedLayout(0)(pairs))
    logps, grads = logps_and_grads(model, PrefixSharedLayout(0, row_tokens="longest")(pairs))
    torch.testing.assert_close(logps, ref_logps, rtol=0, atol=1e-5)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-5)

    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    layout = choose_layout(peft_model)
    assert isinstance(layout, PrefixSharedLayout)  # the backend is read through the PEFT wrapper
    with torch.no_grad(), peft_model.disable_adapter():
        torch.testing.assert_close(
            sequence_values(sequence_logps(peft_model, layout(pairs))),
            independent_logps(peft_model, pairs),
            rtol=0,
            atol=1e-5,
        )


@pytest.mark.parametrize(("attn", "form"), [("sdpa", MaskForm.BOOLEAN_4D), ("eager", MaskForm.ADDITIVE_4D)])
def test_choose_layout_decides_the_mask_form_once(attn: str, form: MaskForm, monkeypatch) -> None:
    model = tiny_llama(attn)
    pairs = random_pairs(PAIR_LENGTHS)
    layout = choose_layout(model)
    assert isinstance(layout, PrefixSharedLayout) and layout.mask_form is form
    batch = layout(pairs)
    assert batch[MASK_FORM_KEY] is form
    with torch.no_grad():
        expected = independent_logps(model, pairs)

    def no_redecision(*args, **kwargs):
        raise AssertionError("the forward re-decided the mask form")

    monkeypatch.setattr(attention, "layout_support", no_redecision)
    with torch.no_grad():
        torch.testing.assert_close(sequence_values(sequence_logps(model, batch)), expected, rtol=0, atol=1e-5)
    # Layouts whose own inputs say it all carry no custom mask form.
    assert choose_layout(model, "packed").mask_form is MaskForm.NONE
    assert MASK_FORM_KEY not in choose_layout(model, "packed")(pairs)


def test_batch_without_a_decided_mask_form_is_decided_from_the_model(monkeypatch) -> None:
    model = tiny_llama("eager")
    pairs = random_pairs(PAIR_LENGTHS)
    batch = PrefixSharedLayout(0)(pairs)  # built without choose_layout: undecided
    assert MASK_FORM_KEY not in batch
    decided = []
    original = attention.decide_mask_form
    monkeypatch.setattr(attention, "decide_mask_form", lambda m: decided.append(1) or original(m))
    with torch.no_grad():
        logps = sequence_values(sequence_logps(model, batch))
        torch.testing.assert_close(logps, independent_logps(model, pairs), rtol=0, atol=1e-5)
    assert decided == [1]


def test_batch_laid_out_for_another_backend_fails_clearly() -> None:
    batch = choose_layout(tiny_llama("sdpa"))(random_pairs([(2, 1, 1)]))
    with pytest.raises(ValueError, match="mask form 'boolean_4d' was decided for other models"):
        model_inputs(tiny_llama("eager"), batch)


def test_policy_and_reference_with_different_mask_forms_each_decide() -> None:
    policy, reference = tiny_llama("sdpa"), tiny_llama("eager", seed=1)
    layout = choose_layout((policy, reference))
    assert isinstance(layout, PrefixSharedLayout) and layout.mask_form is None
    pairs = random_pairs(PAIR_LENGTHS)
    with torch.no_grad():
        for model in (policy, reference):
            torch.testing.assert_close(
                sequence_values(sequence_logps(model, layout(pairs))),
                independent_logps(model, pairs),
                rtol=0,
                atol=1e-5,
            )


@pytest.mark.parametrize(("name", "row_tokens"), [("padded", None), *VARIANTS])
def test_loss_masks_leave_tokens_out_of_every_layout(name: str, row_tokens) -> None:
    """assistant_only_loss masks: the masked tokens are still fed (they change later log-probs) but neither
    scored nor counted; each layout equals the independent per-token sum over the unmasked positions."""
    model = tiny_llama()
    pairs = random_pairs(PAIR_LENGTHS)
    g = torch.Generator().manual_seed(3)
    for pair in pairs:
        for key in ("chosen", "rejected"):
            mask = torch.randint(0, 2, (len(pair[f"{key}_ids"]),), generator=g).tolist()
            mask[-1] = 1
            pair[f"{key}_loss_mask"] = mask
    expected, counts = [], []
    for key in ("chosen", "rejected"):
        for pair in pairs:
            prompt, completion = pair["prompt_ids"], pair[f"{key}_ids"]
            logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
            token_logps = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion)[:, None])
            mask = torch.tensor(pair[f"{key}_loss_mask"], dtype=torch.bool)
            expected.append(token_logps[:, 0][mask].sum())
            counts.append(int(mask.sum()))
    options = {} if row_tokens is None else {"row_tokens": row_tokens}
    with torch.no_grad():
        out = sequence_logps(model, get_layout(name, 0, **options)(pairs))
    torch.testing.assert_close(sequence_values(out), torch.stack(expected).detach(), atol=1e-5, rtol=1e-5)
    assert torch.cat([out.chosen_num_tokens, out.rejected_num_tokens]).tolist() == counts
    pairs[2]["rejected_loss_mask"] = pairs[2]["rejected_loss_mask"][:-1]
    with pytest.raises(ValueError, match="pair 2 of the batch: rejected_loss_mask has 1 entries for 2"):
        get_layout(name, 0, **options)(pairs)
