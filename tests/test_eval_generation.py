"""hf_dpo.eval generation task, the arithmetic exact match, and the end-to-end command on a run directory."""

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import make_char_tokenizer, make_tiny_llama
from transformers import LlamaConfig, LlamaForSequenceClassification

from hf_dpo.eval import EvalConfig, evaluate_model, main
from hf_dpo.eval.generation import DecodingConfig, evaluate_generation, generate, load_judge
from hf_dpo.eval.loading import ModelPair
from hf_dpo.eval.stats import parse_number

PROMPTS = ["Q: 2+2?", "Say hi.", "Color of sky? Answer:", "Hi"]


def make_judge(tmp_path, tok):
    torch.manual_seed(5)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=0,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    return load_judge(str(tmp_path / "judge"), torch.device("cpu"))


def test_batched_left_padded_generation_equals_one_by_one():
    tok = make_char_tokenizer()
    model = make_tiny_llama(len(tok), seed=0).eval()
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    decoding = DecodingConfig(max_new_tokens=6)
    batched = generate(model, tok, ids, decoding, batch_size=4)
    single = [generate(model, tok, [p], decoding, batch_size=1)[0] for p in ids]
    assert batched == single
    assert all(g.num_tokens <= 6 for g in batched)
    # Without a pad token the tokenizer pads with EOS (masked out) and gets its own settings back.
    tok.pad_token = None
    assert generate(model, tok, ids, decoding, batch_size=4) == batched
    assert tok.pad_token_id is None and tok.padding_side == "right"


def test_win_rate_equals_hand_count_of_judge_scores(tmp_path):
    tok = make_char_tokenizer()
    pair = ModelPair(make_tiny_llama(len(tok), seed=0).eval(), make_tiny_llama(len(tok), seed=1).eval(), tok)
    judge = make_judge(tmp_path, tok)
    ids = [tok(p)["input_ids"] for p in PROMPTS]
    metrics, records = evaluate_generation(
        pair, ids, PROMPTS, DecodingConfig(max_new_tokens=8), judge=judge, bootstrap_samples=100
    )
    judge_model, judge_tok = judge
    wins = 0.0
    with torch.no_grad():
        for prompt, record in zip(PROMPTS, records, strict=True):
            score = {
                w: float(judge_model(**judge_tok(prompt + record[w], return_tensors="pt")).logits[0, 0])
                for w in ("policy", "reference")
            }
            assert record["policy_score"] == pytest.approx(score["policy"], abs=1e-4)
            assert record["reference_score"] == pytest.approx(score["reference"], abs=1e-4)
            wins += (
                1.0
                if score["policy"] > score["reference"]
                else 0.5
                if score["policy"] == score["reference"]
                else 0
            )
    assert metrics["win_rate"]["value"] == pytest.approx(wins / len(PROMPTS))
    assert metrics["num_prompts"] == len(PROMPTS)
    assert metrics["length/policy"]["max"] <= 8


def test_identical_models_tie_everywhere(tmp_path):
    tok = make_char_tokenizer()
    model = make_tiny_llama(len(tok), seed=0).eval()
    pair = ModelPair(model, copy.deepcopy(model), tok)
    decoding = DecodingConfig(max_new_tokens=5, do_sample=True, temperature=0.9, top_p=0.95, seed=3)
    metrics, records = evaluate_generation(
        pair,
        [tok(p)["input_ids"] for p in PROMPTS],
        PROMPTS,
        decoding,
        judge=make_judge(tmp_path, tok),
        bootstrap_samples=50,
    )
    assert all(r["policy"] == r["reference"] for r in records)  # same seed, same weights
    assert metrics["win_rate"]["value"] == 0.5


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as hf_dpo.train writes it: config.yaml + final/ (policy) and a base model elsewhere."""
    tok = make_char_tokenizer()
    make_tiny_llama(len(tok), seed=1).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    run = tmp_path / "run"
    make_tiny_llama(len(tok), seed=0).save_pretrained(run / "final")
    tok.save_pretrained(run / "final")
    config = {
        "log_path": str(run),
        "model_name": str(tmp_path / "base"),
        "dataset": "arithmetic",
        "dataset_options": {"num_train": 4, "num_test": 5, "max_operand": 9},
        "dpo_beta": 0.2,
        "max_length": 64,
        "max_prompt_length": 48,
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def test_evaluate_model_on_a_run_directory_with_arithmetic(run_dir):
    results = evaluate_model(
        EvalConfig(
            model_path=str(run_dir),
            tasks=["preference", "generation"],
            max_new_tokens=6,
            bootstrap_samples=50,
            show_progress=False,
        )
    )
    out = run_dir / "eval"
    assert json.loads((out / "results.json").read_text())["preference"]["num_pairs"] == 5
    assert results["preference"]["beta"] == 0.2  # read from the run's config.yaml
    assert (out / "report.md").read_text().startswith("# Evaluation")
    assert (out / "preference_rewards.png").stat().st_size > 0
    pairs = [json.loads(line) for line in (out / "preference_pairs.jsonl").read_text().splitlines()]
    assert [p["index"] for p in pairs] == list(range(5))
    accuracy = results["preference"]["accuracy"]["value"]
    assert np.mean([p["accuracy"] for p in pairs]) == pytest.approx(accuracy)
    for p in pairs:  # each row's reward is β × its own log-ratio
        log_ratio = p["policy_chosen_logps"] - p["ref_chosen_logps"]
        assert p["chosen_reward"] == pytest.approx(0.2 * log_ratio, abs=1e-5)
    records = [json.loads(line) for line in (out / "generation_samples.jsonl").read_text().splitlines()]
    assert len(records) == 5
    for which in ("policy", "reference"):
        hand = np.mean([parse_number(r[which]) == r["answer"] for r in records])
        assert results["generation"][f"exact_match/{which}"]["value"] == pytest.approx(hand)
    assert [r["answer"] for r in records] == [float(eval(r["prompt"][-1]["content"][8:-1])) for r in records]


def test_cli_main(run_dir, capsys):
    assert (
        main(
            [
                f"model_path={run_dir}",
                "tasks=preference",
                "bootstrap_samples=10",
                "limit=2",
                f"log_path={run_dir / 'cli'}",
                "show_progress=false",
            ]
        )
        == 0
    )
    assert "Preference" in capsys.readouterr().out
    assert json.loads((run_dir / "cli" / "results.json").read_text())["preference"]["num_pairs"] == 2
    assert main([f"model_path={run_dir}", "taks=preference"]) == 2
    assert "tasks" in capsys.readouterr().err  # suggests the closest key
    assert main([f"model_path={run_dir}", "tasks=preferance"]) == 2
    assert "preference" in capsys.readouterr().err


def test_missing_reference_is_a_clear_error(tmp_path):
    tok = make_char_tokenizer()
    make_tiny_llama(len(tok)).save_pretrained(tmp_path / "m")
    with pytest.raises(ValueError, match="model_name="):
        evaluate_model(EvalConfig(model_path=str(tmp_path / "m"), dataset="arithmetic"))
