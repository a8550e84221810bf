"""DPOTrainer end to end on tiny models built here: it learns, the loss starts at ln 2, gradient
accumulation is exact, the reference stays frozen, metrics are right, bad input is reported."""

import math
import random

import pytest
import torch
from conftest import make_tiny_llama
from datasets import Dataset

from hf_dpo import DPOConfig, DPOTrainer

LETTERS = "abcdefgh"


def copy_task(n: int, seed: int) -> Dataset:
    """Prompt: 5 random letters then '='. Chosen: the last letter; rejected: another letter."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        prompt = "".join(rng.choice(LETTERS) for _ in range(5))
        wrong = rng.choice([c for c in LETTERS if c != prompt[-1]])
        rows.append({"prompt": prompt + "=", "chosen": prompt[-1], "rejected": wrong})
    return Dataset.from_list(rows)


def config(tmp_path, **overrides) -> DPOConfig:
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        learning_rate=3e-3,
        max_steps=10,
        logging_steps=5,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=0,
        beta=0.5,
        lr_scheduler_type="constant",
        disable_tqdm=True,
        max_length=64,
        max_prompt_length=32,
    )
    return DPOConfig(**{**base, **overrides})


def test_initial_eval_is_ln2_then_learns_held_out(tmp_path, char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer), seed=0, hidden=64)
    trainer = DPOTrainer(
        model,
        args=config(tmp_path, max_steps=150, logging_steps=50),
        processing_class=char_tokenizer,
        train_dataset=copy_task(600, seed=1),
        eval_dataset=copy_task(128, seed=2),
    )
    before = trainer.evaluate()
    assert before["eval_dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert before["eval_accuracy"] == 0.5 and before["eval_margin"] == 0.0
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_accuracy"] > 0.9, after
    assert after["eval_dpo_loss"] < 0.4, after
    assert after["eval_margin"] > 0 and after["eval_chosen_reward"] > after["eval_rejected_reward"]
    train_logs = [h for h in trainer.state.log_history if "dpo_loss" in h]
    assert train_logs[-1]["dpo_loss"] < train_logs[0]["dpo_loss"]
    for key in (
        "accuracy",
        "margin",
        "chosen_reward",
        "rejected_reward",
        "logps/chosen",
        "logps/rejected",
        "num_pairs",
        "num_tokens",
        "learning_rate",
        "progress",
        "batch_time",
    ):
        assert key in train_logs[-1]
    assert train_logs[-1]["num_pairs"] == 8 and train_logs[-1]["progress"] == 1.0


def test_eval_metrics_equal_independent_computation(tmp_path, char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer), seed=3)
    ref = make_tiny_llama(len(char_tokenizer), seed=4)
    data = copy_task(20, seed=5)
    trainer = DPOTrainer(
        model,
        ref_model=ref,
        args=config(tmp_path, beta=0.3),
        processing_class=char_tokenizer,
        train_dataset=data,
        eval_dataset=data,
    )
    metrics = trainer.evaluate()

    # independent: full forward per sequence, naive log-softmax
    def logp(m, prompt, completion):
        p = char_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = char_tokenizer(completion, add_special_tokens=False)["input_ids"] + [char_tokenizer.eos_token_id]
        with torch.no_grad():
            logits = m(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).sum().item(), len(c)

    margins, losses, nll, ntok = [], [], 0.0, 0
    for row in data:
        pc, n = logp(model, row["prompt"], row["chosen"])
        pr, _ = logp(model, row["prompt"], row["rejected"])
        rc, _ = logp(ref, row["prompt"], row["chosen"])
        rr, _ = logp(ref, row["prompt"], row["rejected"])
        h = 0.3 * ((pc - rc) - (pr - rr))
        margins.append(h)
        losses.append(math.log1p(math.exp(-h)))
        nll, ntok = nll - pc, ntok + n
    assert metrics["eval_dpo_loss"] == pytest.approx(sum(losses) / 20, abs=1e-5)
    assert metrics["eval_margin"] == pytest.approx(sum(margins) / 20, abs=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 20)
    assert metrics["test/nll"] == pytest.approx(nll / ntok, abs=1e-5)
    assert metrics["eval_num_pairs"] == 20


def _params_after_one_step(tmp_path, tokenizer, batch, accum, rows):
    model = make_tiny_llama(len(tokenizer), seed=7)
    trainer = DPOTrainer(
        model,
        args=config(
            tmp_path,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accum,
            max_steps=1,
            optim="sgd",
            learning_rate=0.5,
            logging_steps=1,
        ),
        processing_class=tokenizer,
        train_dataset=rows,
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "dpo_loss" in h][0]
    return {k: v.detach().clone() for k, v in model.named_parameters()}, logged


def test_gradient_accumulation_matches_one_big_batch(tmp_path, char_tokenizer):
    rows = Dataset.from_list(
        [{"prompt": "x" * (i + 1), "chosen": "a" * (5 - i), "rejected": "b"} for i in range(4)]
    )
    big, log_big = _params_after_one_step(tmp_path / "a", char_tokenizer, 4, 1, rows)
    small, log_small = _params_after_one_step(tmp_path / "b", char_tokenizer, 2, 2, rows)
    moved = max(
        (big[k] - make_tiny_llama(len(char_tokenizer), seed=7).state_dict()[k]).abs().max() for k in big
    )
    assert moved > 1e-4  # the step did something
    for k in big:
        torch.testing.assert_close(small[k], big[k], atol=1e-6, rtol=1e-5)
    assert log_small["num_pairs"] == log_big["num_pairs"] == 4
    assert log_small["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)


def test_reference_is_a_frozen_in_memory_copy(tmp_path, char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer), seed=8)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = DPOTrainer(
        model,
        args=config(tmp_path, max_steps=3),
        processing_class=char_tokenizer,
        train_dataset=copy_task(32, seed=9),
    )
    ref = trainer.reference.model
    assert ref is not model and not ref.training
    assert all(not p.requires_grad for p in ref.parameters())
    trainer.train()
    assert any(not torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    for k, v in ref.state_dict().items():
        assert torch.equal(v, initial[k])


def test_model_given_as_a_local_path(tmp_path, char_tokenizer):
    path = tmp_path / "m"
    make_tiny_llama(len(char_tokenizer), seed=10).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    trainer = DPOTrainer(str(path), args=config(tmp_path, max_steps=1), train_dataset=copy_task(8, seed=1))
    trainer.train()
    assert trainer.processing_class.eos_token == "</s>"


@pytest.mark.parametrize("patience", [0, 2])
def test_non_finite_steps_are_skipped_then_training_stops(tmp_path, char_tokenizer, patience):
    """Every step's loss is NaN: each of the first ``max_nonfinite_steps`` is skipped (no weight moves), the
    next one stops training with the count in the message."""
    model = make_tiny_llama(len(char_tokenizer), seed=11)
    trainer = DPOTrainer(
        model,
        args=config(tmp_path, max_steps=5, max_nonfinite_steps=patience),
        processing_class=char_tokenizer,
        train_dataset=copy_task(16, seed=1),
    )
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "norm" not in n}
    match = "non-finite DPO loss" if patience == 0 else f"{patience + 1} optimizer step\\(s\\) in a row"
    with pytest.raises(FloatingPointError, match=match):
        trainer.train()
    assert trainer.state.global_step == patience
    for name, value in before.items():
        assert torch.equal(value, model.get_parameter(name)), name


def test_nonfinite_steps_count_resets_on_a_finite_step():
    from hf_dpo.run.finite import NonFiniteSteps

    guard = NonFiniteSteps(patience=1)
    nan, ok = torch.tensor(float("nan")), torch.tensor(1.0)
    assert guard.skip(nan, 0, None) and not guard.skip(ok, 1, None) and guard.skip(nan, 2, None)
    assert guard.skipped == 2 and not guard.skip(nan, 3, scaler=object())  # the fp16 scaler skips by itself
    with pytest.raises(FloatingPointError, match="at step 5, 2 optimizer step"):
        guard.skip(float("inf"), 4, None)


def test_bad_rows_fail_at_construction_with_row_and_field(tmp_path, char_tokenizer):
    rows = Dataset.from_list(
        [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "a", "chosen": "", "rejected": "c"}]
    )
    with pytest.raises(ValueError, match=r"row 1, field 'chosen': the text is empty"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path),
            processing_class=char_tokenizer,
            train_dataset=rows,
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 0.0}, "beta must be > 0"),
        ({"label_smoothing": 0.5}, "label_smoothing"),
        ({"loss_type": "kto"}, "loss_type"),
        ({"max_prompt_length": 64, "max_length": 64}, "max_prompt_length"),
    ],
)
def test_invalid_config_values(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(output_dir=str(tmp_path), **kwargs)


def test_dict_of_eval_sets_reports_each_under_its_prefix(tmp_path, char_tokenizer):
    model = make_tiny_llama(len(char_tokenizer), seed=12)
    ref = make_tiny_llama(len(char_tokenizer), seed=13)
    a, b = copy_task(8, seed=14), copy_task(12, seed=15)
    trainer = DPOTrainer(
        model,
        ref_model=ref,
        args=config(tmp_path),
        processing_class=char_tokenizer,
        train_dataset=a,
        eval_dataset={"a": a, "b": b},
    )
    both = trainer.evaluate()
    only_b = trainer.evaluate(eval_dataset=trainer.eval_dataset["b"])
    assert both["eval_a_num_pairs"] == 8 and both["eval_b_num_pairs"] == 12
    assert both["eval_b_dpo_loss"] == pytest.approx(only_b["eval_dpo_loss"], abs=1e-6)
    assert both["test/b/nll"] == pytest.approx(only_b["test/nll"], abs=1e-6)
    assert both["eval_a_dpo_loss"] != pytest.approx(both["eval_b_dpo_loss"])


def test_per_step_metrics_are_right_on_the_first_log_after_resuming(tmp_path, char_tokenizer):
    data = copy_task(32, seed=16)
    args = config(
        tmp_path,
        max_steps=4,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        per_device_train_batch_size=4,
    )
    DPOTrainer(
        make_tiny_llama(len(char_tokenizer), seed=17),
        args=args,
        processing_class=char_tokenizer,
        train_dataset=data,
    ).train()
    resumed = DPOTrainer(
        make_tiny_llama(len(char_tokenizer), seed=17),
        args=args,
        processing_class=char_tokenizer,
        train_dataset=data,
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    step3 = next(h for h in resumed.state.log_history if h.get("step") == 3 and "num_pairs" in h)
    assert step3["num_pairs"] == 4  # one step of 4 pairs, not 4 pairs spread over steps 0..3


def test_reference_runs_in_the_same_mixed_precision_as_the_policy(tmp_path, char_tokenizer):
    # policy == reference at step 0: with bf16 autocast on both forwards the rewards must be exactly 0
    args = config(tmp_path, max_steps=1, logging_steps=1, bf16=True, learning_rate=0.0)
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer), seed=18),
        args=args,
        processing_class=char_tokenizer,
        train_dataset=copy_task(16, seed=19),
    )
    trainer.train()
    log = next(h for h in trainer.state.log_history if "dpo_loss" in h)
    assert log["chosen_reward"] == 0.0 and log["rejected_reward"] == 0.0
    assert log["dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
