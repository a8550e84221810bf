"""TRL 1.16 DPOConfig surface and the loss wiring: every TRL field exists; every loss type reaches the
trainer (first-step loss == the pure function on independently computed log-probs); reference-free losses
hold no reference; WPO, LD-DPO, the MoE router loss, activation offloading, padding_free, pad_token,
trust_remote_code and truncation_mode do what TRL's do."""

import dataclasses

import pytest
import torch
import trl
from conftest import make_tiny_llama
from datasets import Dataset
from test_trainer import config, copy_task

from hf_dpo import DPOConfig, DPOTrainer
from hf_dpo.objective.losses import LOSS_TYPES, LossConfig, PreferenceLogps, needs_reference, preference_loss
from hf_dpo.reference.policies import NoReference

ROWS = Dataset.from_list(
    [
        {"prompt": "abc=", "chosen": "c", "rejected": "dd"},
        {"prompt": "hello=", "chosen": "olleh", "rejected": "no"},
        {"prompt": "xy=", "chosen": "yx!", "rejected": "xyxyz"},
        {"prompt": "q=", "chosen": "qq", "rejected": "r"},
    ]
)


def test_every_trl_dpo_config_field_exists():
    ours = {f.name for f in dataclasses.fields(DPOConfig)}
    missing = {f.name for f in dataclasses.fields(trl.DPOConfig)} - ours
    assert not missing, missing
    for name in ("batch_layout", "logprob_chunk_size", "max_prompt_length", "renderer_name", "rpo_alpha"):
        assert name in ours


def test_trl_defaults_of_new_fields(tmp_path):
    ours = DPOConfig(output_dir=str(tmp_path))
    theirs = trl.DPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    for name in (
        "f_divergence_type",
        "f_alpha_divergence_coef",
        "discopop_tau",
        "loss_weights",
        "use_weighting",
        "ld_alpha",
        "truncation_mode",
        "padding_free",
        "pad_token",
        "trust_remote_code",
        "activation_offloading",
        "router_aux_loss_coef",
    ):
        assert getattr(ours, name) == getattr(theirs, name), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss_type": ["sigmoid", "kto"]}, "loss_type"),
        ({"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0]}, "loss_weights"),
        ({"f_divergence_type": "hellinger"}, "f_divergence_type"),
        ({"loss_type": "bco_pair", "f_divergence_type": "js_divergence"}, "f_divergence_type"),
        ({"loss_type": "exo_pair"}, "exo_pair"),
        ({"use_weighting": True, "loss_type": "aot"}, "use_weighting"),
        ({"ld_alpha": 1.5}, "ld_alpha"),
        ({"truncation_mode": "middle"}, "truncation_mode"),
        ({"padding_free": True, "batch_layout": "padded"}, "padding_free"),
        ({"router_aux_loss_coef": -1.0}, "router_aux_loss_coef"),
    ],
)
def test_invalid_trl_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(output_dir=str(tmp_path), **kwargs)


def test_padding_free_maps_onto_a_padding_free_layout(tmp_path, char_tokenizer):
    args = config(tmp_path, padding_free=True)
    assert args.batch_layout == "packed"
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)), args=args, processing_class=char_tokenizer, train_dataset=ROWS
    )
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert trainer.data_collator.layout.name == "packed" and "num_pairs" in batch
    assert config(tmp_path, padding_free=True, batch_layout="prefix_shared").batch_layout == "prefix_shared"


# ---- independent log-probs: one unpadded full forward per sequence ----


def _encode(tok, prompt, completion):
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    return p, tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]


def _token_logps(model, tok, prompt, completion):
    p, c = _encode(tok, prompt, completion)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : -1].double()
    logp = torch.log_softmax(logits, -1)
    token = logp.gather(-1, torch.tensor(c)[:, None]).squeeze(-1)
    log_sum_sq = torch.logsumexp(2 * logp, -1)
    return token, log_sum_sq


def _independent(policy, ref, tok, rows, ld_alpha=None):
    """PreferenceLogps (with token counts) and WPO weights per pair from full forwards."""
    values = {k: [] for k in ("pc", "pr", "rc", "rr", "nc", "nr", "wc", "wr")}
    for row in rows:
        per = {}
        for side in ("chosen", "rejected"):
            per[side] = _token_logps(policy, tok, row["prompt"], row[side])
            per["ref_" + side] = _token_logps(ref, tok, row["prompt"], row[side])[0]
        shared = min(len(per["chosen"][0]), len(per["rejected"][0]))

        def total(t, shared=shared):
            return t.sum() if ld_alpha is None else t[:shared].sum() + ld_alpha * t[shared:].sum()

        for side, key in (("chosen", "c"), ("rejected", "r")):
            token, log_sum_sq = per[side]
            values["p" + key].append(total(token))
            values["r" + key].append(total(per["ref_" + side]))
            values["n" + key].append(float(len(token)))
            values["w" + key].append(torch.exp((token - log_sum_sq).mean()))
    t = {k: torch.tensor([float(v) for v in vs], dtype=torch.float64) for k, vs in values.items()}
    logps = PreferenceLogps(t["pc"], t["pr"], t["rc"], t["rr"], t["nc"], t["nr"])
    return logps, t["wc"] * t["wr"]


def _first_step_loss(tmp_path, tok, rows=ROWS, seed=3, **overrides):
    policy, ref = make_tiny_llama(len(tok), seed=seed), make_tiny_llama(len(tok), seed=seed + 1)
    args = config(
        tmp_path, **{"beta": 0.7, "label_smoothing": 0.1, "per_device_train_batch_size": 4, **overrides}
    )
    trainer = DPOTrainer(policy, ref_model=ref, args=args, processing_class=tok, train_dataset=rows)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    return trainer, loss, policy, ref


@pytest.mark.parametrize("loss_type", [*LOSS_TYPES, ["sigmoid", "sft"], ["simpo", "orpo"]])
def test_trainer_first_step_loss_is_the_pure_function(tmp_path, char_tokenizer, loss_type):
    extra = {"loss_weights": [1.0, 0.3]} if isinstance(loss_type, list) else {}
    trainer, loss, policy, ref = _first_step_loss(tmp_path, char_tokenizer, loss_type=loss_type, **extra)
    logps, _ = _independent(policy, ref, char_tokenizer, ROWS)
    expected = preference_loss(logps, LossConfig.from_args(trainer.args)).losses.mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert isinstance(trainer.reference, NoReference) == (not needs_reference(loss_type))


@pytest.mark.parametrize("f_div", ["forward_kl", "js_divergence", "alpha_divergence"])
def test_trainer_f_divergence(tmp_path, char_tokenizer, f_div):
    trainer, loss, policy, ref = _first_step_loss(
        tmp_path, char_tokenizer, f_divergence_type=f_div, f_alpha_divergence_coef=0.3
    )
    logps, _ = _independent(policy, ref, char_tokenizer, ROWS)
    expected = preference_loss(logps, LossConfig.from_args(trainer.args)).losses.mean()
    plain = preference_loss(logps, LossConfig(beta=0.7, label_smoothing=0.1)).losses.mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    assert float(expected) != pytest.approx(float(plain), rel=1e-3)  # the divergence changes the loss


@pytest.mark.parametrize("layout", ["padded", "packed", "prefix_shared"])
def test_ld_dpo_and_wpo_match_independent_values(tmp_path, char_tokenizer, layout):
    trainer, loss, policy, ref = _first_step_loss(
        tmp_path, char_tokenizer, ld_alpha=0.3, use_weighting=True, batch_layout=layout
    )
    logps, pair_weights = _independent(policy, ref, char_tokenizer, ROWS, ld_alpha=0.3)
    losses = preference_loss(logps, LossConfig(beta=0.7, label_smoothing=0.1)).losses
    assert float(loss) == pytest.approx(float((losses * pair_weights).mean()), rel=1e-5)
    plain, _ = _independent(policy, ref, char_tokenizer, ROWS)
    unweighted = preference_loss(plain, LossConfig(beta=0.7, label_smoothing=0.1)).losses.mean()
    assert float(loss) != pytest.approx(float(unweighted), rel=1e-3)
    assert float(pair_weights.min()) > 0


def test_ld_dpo_precompute_matches_live_reference(tmp_path, char_tokenizer, monkeypatch):
    monkeypatch.setenv("HF_DPO_CACHE", str(tmp_path / "cache"))
    _, live, *_ = _first_step_loss(tmp_path / "a", char_tokenizer, ld_alpha=0.5)
    _, pre, *_ = _first_step_loss(tmp_path / "b", char_tokenizer, ld_alpha=0.5, precompute_ref_log_probs=True)
    _, plain, *_ = _first_step_loss(tmp_path / "c", char_tokenizer, precompute_ref_log_probs=True)
    assert float(pre) == pytest.approx(float(live), rel=1e-5)
    assert float(plain) != pytest.approx(float(live), rel=1e-3)  # not a stale cache entry without LD


def test_reference_free_losses_hold_no_reference(tmp_path, char_tokenizer):
    policy = make_tiny_llama(len(char_tokenizer))
    trainer = DPOTrainer(
        policy,
        ref_model=make_tiny_llama(len(char_tokenizer), seed=5),
        args=config(tmp_path, loss_type="simpo", max_steps=2),
        processing_class=char_tokenizer,
        train_dataset=ROWS,
    )
    assert isinstance(trainer.reference, NoReference) and not hasattr(trainer.reference, "model")
    trainer.train()  # NoReference.logps raises if anything asks it for a reference forward
    with pytest.raises(ValueError, match="reference-free"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path, loss_type="orpo", precompute_ref_log_probs=True),
            processing_class=char_tokenizer,
            train_dataset=ROWS,
        )


@pytest.mark.parametrize(
    ("loss_type", "extra"),
    [("ipo", {"beta": 0.5}), ("hinge", {}), ("simpo", {}), ("orpo", {"orpo_lambda": 1.0})],
)
def test_each_loss_family_learns_the_copy_task(tmp_path, char_tokenizer, loss_type, extra):
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer), seed=0, hidden=64),
        args=config(tmp_path, loss_type=loss_type, max_steps=100, logging_steps=50, **extra),
        processing_class=char_tokenizer,
        train_dataset=copy_task(400, seed=1),
        eval_dataset=copy_task(64, seed=2),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_dpo_loss"] < before["eval_dpo_loss"], (before, after)
    # the policy now prefers the right letter on held-out pairs (chosen and rejected have equal lengths, so
    # every family's reward orders them like log π(chosen) vs log π(rejected))
    assert before["eval_accuracy"] <= 0.75 < after["eval_accuracy"], (before, after)
    assert after["eval_logps/chosen"] > after["eval_logps/rejected"], after


# ---- MoE router auxiliary loss ----


def _tiny_mixtral(vocab, coef=0.02):
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    cfg = MixtralConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        router_aux_loss_coef=coef,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return MixtralForCausalLM(cfg).float()


def test_router_aux_loss(tmp_path, char_tokenizer):
    def trainer_for(**overrides):
        return DPOTrainer(
            _tiny_mixtral(len(char_tokenizer)),
            args=config(tmp_path, batch_layout="padded", logging_steps=1, **overrides),
            processing_class=char_tokenizer,
            train_dataset=ROWS,
        )

    default, off, strong = (
        trainer_for(),
        trainer_for(router_aux_loss_coef=0.0),
        trainer_for(router_aux_loss_coef=0.5),
    )
    assert default.aux_loss_enabled and default.router_aux_loss_coef == 0.02  # the model config's, as TRL
    assert not off.aux_loss_enabled
    batch = strong.data_collator([strong.train_dataset[i] for i in range(4)])
    losses = {}
    for name, trainer in (("off", off), ("strong", strong)):
        trainer.model.train()
        losses[name] = float(trainer.compute_loss(trainer.model, batch))
    with torch.no_grad():
        aux = strong.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_router_logits=True
        ).aux_loss
    assert float(aux) > 0
    assert losses["strong"] - losses["off"] == pytest.approx(0.5 * float(aux), rel=1e-4)
    strong.args.max_steps = 1
    strong.train()
    assert any("aux_loss" in h for h in strong.state.log_history)
    with pytest.raises(ValueError, match="not a Mixture-of-Experts"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path, router_aux_loss_coef=0.1),
            processing_class=char_tokenizer,
            train_dataset=ROWS,
        )


def test_router_aux_loss_picks_an_exact_layout_and_reaches_the_final_log(tmp_path, char_tokenizer):
    """The model computes its router loss over a 2D attention_mask: auto falls back to padded (exact), a
    forced packed / prefix-shared layout is a clear error, coef 0 keeps the fast layouts; the train summary
    (log_history[-1]) carries aux_loss even when no step was logged (TRL's contract)."""
    model = _tiny_mixtral(len(char_tokenizer))
    auto = DPOTrainer(
        model, args=config(tmp_path, logging_steps=50), processing_class=char_tokenizer, train_dataset=ROWS
    )
    assert auto.data_collator.layout.name == "padded"
    auto.train()
    assert auto.state.log_history[-1]["aux_loss"] > 0 and "train_loss" in auto.state.log_history[-1]
    for layout in ("packed", "prefix_shared"):
        with pytest.raises(ValueError, match=f"batch_layout='{layout}' is not exact.*router_aux_loss_coef=0"):
            DPOTrainer(
                _tiny_mixtral(len(char_tokenizer)),
                args=config(tmp_path, batch_layout=layout),
                processing_class=char_tokenizer,
                train_dataset=ROWS,
            )
    off = DPOTrainer(
        _tiny_mixtral(len(char_tokenizer)),
        args=config(tmp_path, router_aux_loss_coef=0.0),
        processing_class=char_tokenizer,
        train_dataset=ROWS,
    )
    assert off.data_collator.layout.name == "prefix_shared"
    off.train()
    assert "aux_loss" not in off.state.log_history[-1]


# ---- activation offloading, pad_token, trust_remote_code, truncation_mode ----


def test_activation_offloading_saves_through_cpu_hooks_with_equal_gradients(
    tmp_path, char_tokenizer, monkeypatch
):
    packed = []

    class CountingSaveOnCpu(torch.autograd.graph.save_on_cpu):
        def __init__(self, pin_memory=False, device_type="cuda"):
            super().__init__(pin_memory, device_type)
            pack = self.pack_hook
            self.pack_hook = lambda t: (packed.append(1), pack(t))[1]

    monkeypatch.setattr(torch.autograd.graph, "save_on_cpu", CountingSaveOnCpu)
    grads = {}
    for flag in (False, True):
        trainer, loss, *_ = _first_step_loss(tmp_path, char_tokenizer, activation_offloading=flag)
        loss.backward()
        grads[flag] = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
        assert bool(packed) == flag
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(a, b)


def test_pad_token(tmp_path, char_tokenizer):
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path, pad_token="</s>", batch_layout="padded"),
        processing_class=char_tokenizer,
        train_dataset=ROWS,
    )
    assert char_tokenizer.pad_token == "</s>" and trainer.model.config.pad_token_id == 2
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 2).all()
    with pytest.raises(ValueError, match="not in the vocabulary"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path, pad_token="<no-such-token>"),
            processing_class=char_tokenizer,
            train_dataset=ROWS,
        )


def test_trust_remote_code_reaches_from_pretrained(tmp_path, char_tokenizer, monkeypatch):
    import hf_dpo.modeling.loading as trainer_module

    calls = {}

    def fake_model(name, **kwargs):
        calls["model"] = kwargs
        return make_tiny_llama(len(char_tokenizer))

    def fake_tokenizer(name, **kwargs):
        calls["tokenizer"] = kwargs
        return char_tokenizer

    monkeypatch.setattr(trainer_module, "load_causal_lm", fake_model)
    monkeypatch.setattr(trainer_module, "load_tokenizer", fake_tokenizer)
    DPOTrainer("org/remote-model", args=config(tmp_path, trust_remote_code=True), train_dataset=ROWS)
    assert calls["model"].get("trust_remote_code") is True and calls["tokenizer"] == {
        "trust_remote_code": True
    }
    DPOTrainer("org/remote-model", args=config(tmp_path), train_dataset=ROWS)
    assert "trust_remote_code" not in calls["model"] and calls["tokenizer"] == {}


def test_truncation_mode_keep_end(char_tokenizer):
    from hf_dpo.tokens.tokenization import tokenize_row

    row = {"prompt": "0123456789", "chosen": "abcd", "rejected": "xy"}
    ids = {c: char_tokenizer.convert_tokens_to_ids(list(c)) for c in ("0123456789", "abcd", "xy")}
    eos = [char_tokenizer.eos_token_id]
    start = tokenize_row(row, 0, char_tokenizer, None, 8, None, "keep_start")
    assert start == "prompt_too_long"  # keep_start: the prompt alone fills max_length (TRL drops it too)
    end = tokenize_row(row, 0, char_tokenizer, None, 8, None, "keep_end")
    assert end["prompt_ids"] == ids["0123456789"][-3:]  # 8 − |abcd</s>| = 3 prompt tokens survive
    assert end["chosen_ids"] == ids["abcd"] + eos and end["rejected_ids"] == ids["xy"] + eos
    # a completion longer than max_length keeps its end; one prompt token stays as context
    long = tokenize_row({**row, "chosen": "abcdefghij"}, 0, char_tokenizer, None, 6, None, "keep_end")
    assert long["prompt_ids"] == ids["0123456789"][-1:]
    assert long["chosen_ids"] == char_tokenizer.convert_tokens_to_ids(list("ghij")) + eos  # 6 − 1 prompt
    # composed with max_prompt_length (applied first, keeps the prompt's end)
    both = tokenize_row(row, 0, char_tokenizer, None, 20, 4, "keep_end")
    assert both["prompt_ids"] == ids["0123456789"][-4:]
