"""hf_dpo.eval preference task: numbers vs a naive full-logits computation, ties, bootstrap."""

import copy

import numpy as np
import pytest
import torch
from conftest import make_char_tokenizer, make_tiny_llama
from datasets import Dataset

from hf_dpo.eval.loading import ModelPair
from hf_dpo.eval.preference import evaluate_preference
from hf_dpo.eval.stats import bootstrap, exact_match, mean_of, parse_number, ratio_of_sums, win_values
from hf_dpo.tokens.tokenization import tokenize_dataset

ROWS = [
    {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5 maybe"},
    {"prompt": "Say hi.", "chosen": " hi there", "rejected": " no"},
    {"prompt": "Color of sky?", "chosen": " blue", "rejected": " green!"},
    {"prompt": "Capital of France", "chosen": " Paris", "rejected": " Rome"},
    {"prompt": "Count: 1 2", "chosen": " 3", "rejected": " 7 8 9"},
    {"prompt": "Opposite of up", "chosen": " down", "rejected": " left"},
]
BETA = 0.3


def naive_logp(model, prompt_ids, completion_ids):
    """Sum of log p(completion | prompt) from the full logits of one unpadded sequence."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    logprobs = torch.log_softmax(model(ids).logits[0].double(), dim=-1)
    start = len(prompt_ids)
    return sum(float(logprobs[start + j - 1, t]) for j, t in enumerate(completion_ids))


@pytest.fixture
def setup():
    tok = make_char_tokenizer()
    policy, reference = make_tiny_llama(len(tok), seed=0).eval(), make_tiny_llama(len(tok), seed=1).eval()
    return tok, policy, reference, Dataset.from_list(ROWS)


def test_preference_matches_naive_computation(setup):
    tok, policy, reference, data = setup
    metrics, values = evaluate_preference(
        ModelPair(policy, reference, tok), data, None, BETA, batch_size=4, bootstrap_samples=200, seed=3
    )
    tokenized, _ = tokenize_dataset(data, tok, None, 1024, 512)
    pc, pr, rc, rr, nll_tokens = [], [], [], [], []
    with torch.no_grad():
        for row in tokenized:
            pc.append(naive_logp(policy, row["prompt_ids"], row["chosen_ids"]))
            pr.append(naive_logp(policy, row["prompt_ids"], row["rejected_ids"]))
            rc.append(naive_logp(reference, row["prompt_ids"], row["chosen_ids"]))
            rr.append(naive_logp(reference, row["prompt_ids"], row["rejected_ids"]))
            nll_tokens.append(len(row["chosen_ids"]))
    pc, pr, rc, rr = map(np.array, (pc, pr, rc, rr))
    chosen, rejected = BETA * (pc - rc), BETA * (pr - rr)
    np.testing.assert_allclose(values["chosen_reward"], chosen, atol=1e-4)
    np.testing.assert_allclose(values["rejected_reward"], rejected, atol=1e-4)
    assert metrics["num_pairs"] == len(ROWS)
    assert metrics["accuracy"]["value"] == pytest.approx(float(np.mean(chosen > rejected)))
    assert metrics["margin"]["value"] == pytest.approx(float(np.mean(chosen - rejected)), abs=1e-4)
    assert metrics["chosen_reward"]["value"] == pytest.approx(float(chosen.mean()), abs=1e-4)
    assert metrics["rejected_reward"]["value"] == pytest.approx(float(rejected.mean()), abs=1e-4)
    assert metrics["test/nll"]["value"] == pytest.approx(-pc.sum() / sum(nll_tokens), abs=1e-5)
    log_ratio = 0.5 * ((pc - rc) + (pr - rr))
    assert metrics["log_ratio"]["value"] == pytest.approx(float(log_ratio.mean()), abs=1e-4)
    dpo = -np.log(1 / (1 + np.exp(-(chosen - rejected))))
    assert metrics["dpo_loss"]["value"] == pytest.approx(float(dpo.mean()), abs=1e-4)
    for name in ("accuracy", "margin", "test/nll", "log_ratio"):
        m = metrics[name]
        assert m["ci_low"] <= m["value"] <= m["ci_high"], name
    again, _ = evaluate_preference(
        ModelPair(policy, reference, tok), data, None, BETA, batch_size=3, bootstrap_samples=200, seed=3
    )
    assert again["margin"]["ci_low"] == pytest.approx(metrics["margin"]["ci_low"], abs=1e-5)  # seeded


def test_identical_policy_and_reference_tie(setup):
    tok, policy, _, data = setup
    metrics, values = evaluate_preference(
        ModelPair(policy, copy.deepcopy(policy), tok), data, None, BETA, bootstrap_samples=100
    )
    assert metrics["accuracy"] == {**metrics["accuracy"], "value": 0.5, "ci_low": 0.5, "ci_high": 0.5}
    assert metrics["margin"]["value"] == 0.0 and metrics["log_ratio"]["value"] == 0.0
    assert np.all(values["chosen_reward"] == 0)


def test_adapter_disabled_reference_is_the_base_model(setup):
    peft = pytest.importorskip("peft")
    tok, base, _, data = setup
    lora = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    pair = ModelPair(lora.eval(), None, tok)
    _, adapter_values = evaluate_preference(pair, data, None, BETA, bootstrap_samples=0)
    _, copy_values = evaluate_preference(ModelPair(lora, base, tok), data, None, BETA, bootstrap_samples=0)
    np.testing.assert_allclose(adapter_values["ref_chosen_logps"], copy_values["ref_chosen_logps"], atol=1e-5)
    assert np.abs(adapter_values["margin"]).max() > 1e-3  # the adapter changed the policy


def test_bootstrap_interval_matches_normal_approximation():
    x = np.random.default_rng(0).normal(2.0, 1.0, size=400)
    est = bootstrap({"x": x}, mean_of("x"), num_samples=4000, confidence=0.95, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert est.value == pytest.approx(x.mean())
    assert est.low == pytest.approx(x.mean() - half, abs=0.2 * half)
    assert est.high == pytest.approx(x.mean() + half, abs=0.2 * half)
    assert bootstrap({"x": x}, mean_of("x"), 500, seed=7) == bootstrap({"x": x}, mean_of("x"), 500, seed=7)
    ratio = bootstrap({"a": [1.0, 3.0], "b": [2.0, 2.0]}, ratio_of_sums("a", "b"), num_samples=0)
    assert ratio.value == 1.0 and ratio.low == ratio.high == 1.0


def test_win_values_parse_number_and_exact_match():
    np.testing.assert_array_equal(win_values([1.0, 0.0, 2.0], [0.5, 0.0, 3.0]), [1.0, 0.5, 0.0])
    assert parse_number("37 + 48 = 85.") == 85
    assert parse_number("The answer is 1,234") == 1234
    assert parse_number("minus: -7") == -7
    assert parse_number("no digits") is None
    np.testing.assert_array_equal(exact_match(["= 85.", "86", "none"], [85.0, 85.0, None]), [1.0, 0.0, 0.0])
