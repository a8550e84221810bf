"""One scoring core: ``hf_dpo.eval``'s preference task and ``DPOTrainer.evaluate()`` report the same loss and
accuracy for a trained run, for every objective option and with the reference precomputed or live."""

import copy

import pytest
import torch
from conftest import make_tiny_llama
from test_trainer import config

from hf_dpo import DPOTrainer
from hf_dpo.data import build_preference_dataset
from hf_dpo.eval.config import EvalConfig
from hf_dpo.eval.loading import ModelPair
from hf_dpo.eval.runner import evaluate_pair
from hf_dpo.scoring import Objective, score_batch

DATA = {"num_train": 32, "num_test": 24, "seed": 3}
OBJECTIVES = {
    "sigmoid+use_weighting": dict(loss_type="sigmoid", use_weighting=True),
    "ipo": dict(loss_type="ipo"),
    "sigmoid_norm": dict(loss_type="sigmoid_norm"),
    "weighted loss list": dict(loss_type=["sigmoid", "hinge", "sppo_hard"], loss_weights=[0.6, 0.3, 0.1]),
    "keep_start": dict(truncation_mode="keep_start", max_length=44, max_prompt_length=30),  # truncates
    "keep_end": dict(truncation_mode="keep_end", max_length=44, max_prompt_length=30),
    "ld_alpha+rpo": dict(ld_alpha=0.5, rpo_alpha=0.5),
}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DPO_CACHE", str(tmp_path / "ref_cache"))


@pytest.mark.parametrize("precompute", [False, True], ids=["live", "precomputed"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_hf_dpo_eval_equals_trainer_evaluate(tmp_path, char_tokenizer, name, precompute):
    splits = build_preference_dataset("arithmetic", **DATA)
    model = make_tiny_llama(len(char_tokenizer), seed=2)
    initial = copy.deepcopy(model).eval()
    args = config(
        tmp_path,
        max_steps=3,
        learning_rate=2e-2,
        per_device_train_batch_size=8,
        precompute_ref_log_probs=precompute,
        **OBJECTIVES[name],
    )
    trainer = DPOTrainer(
        model,
        args=args,
        processing_class=char_tokenizer,
        train_dataset=splits.train,
        eval_dataset=splits.test,
    )
    trainer.train()
    expected = trainer.evaluate()

    run_config = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    run_config.update(dataset="arithmetic", dataset_options=DATA, dpo_beta=args.beta)
    options = EvalConfig(model_path=str(tmp_path), tasks=["preference"], bootstrap_samples=0, batch_size=5)
    pair = ModelPair(trainer.model.eval(), initial, char_tokenizer)
    results, _, values = evaluate_pair(pair, options, run_config)
    got = results["preference"]
    assert got["num_pairs"] == len(splits.test) == expected["eval_num_pairs"]
    assert got["dpo_loss"]["value"] == pytest.approx(expected["eval_dpo_loss"], abs=1e-5)
    assert got["accuracy"]["value"] == pytest.approx(expected["eval_accuracy"], abs=1e-5)
    assert got["margin"]["value"] == pytest.approx(expected["eval_margin"], abs=1e-5)
    assert 0.0 < expected["eval_accuracy"] < 1.0 or expected["eval_margin"] != 0.0  # the run moved


def test_objective_options_change_the_scored_loss(char_tokenizer):
    """The options the eval path used to drop do change the numbers (so the test above can fail)."""
    from hf_dpo.batching.collator import DPODataCollator
    from hf_dpo.objective.losses import LossConfig
    from hf_dpo.reference.policies import FrozenCopyReference
    from hf_dpo.tokens.tokenization import select_renderer, tokenize_dataset

    splits = build_preference_dataset("arithmetic", **DATA)
    renderer = select_renderer(splits.test[0], char_tokenizer, None)
    tokenized, _ = tokenize_dataset(splits.test, char_tokenizer, renderer, 1024, None)
    rows = [
        {**r, "rejected_ids": r["rejected_ids"] + r["rejected_ids"][-3:]} for r in tokenized.select(range(6))
    ]
    batch = DPODataCollator(char_tokenizer.pad_token_id)(rows)  # unequal lengths: LD-DPO has an effect
    policy = make_tiny_llama(len(char_tokenizer), seed=2).eval()
    reference = FrozenCopyReference(make_tiny_llama(len(char_tokenizer), seed=4))
    base = Objective(LossConfig("sigmoid", beta=0.5))
    plain = score_batch(policy, reference, batch, base).dpo.losses
    with torch.no_grad():
        for option in (dict(use_weighting=True), dict(ld_alpha=0.3)):
            changed = score_batch(policy, reference, batch, Objective(base.loss, **option)).dpo.losses
            assert not torch.allclose(plain, changed), option
        rpo = score_batch(policy, reference, batch, Objective(base.loss, rpo_alpha=1.0))
        assert torch.allclose(rpo.dpo.losses, plain) and (rpo.losses > plain).all()
