"""On-policy DPO: group-to-pair rules, judges and their errors, prompt drawing, an end-to-end tiny-model run
whose pairs are checked against hand-computed expectations, resume mid-round, config validation, and sharded
generation equal to one process (2 gloo processes)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, TWO_PROCESS_LAUNCH, require_shared
from transformers import TrainerCallback

from hf_dpo.on_policy import (
    JudgeError,
    OnPolicyOptions,
    pick_pairs,
    register_pairwise_judge,
    register_verifier,
)
from hf_dpo.on_policy.judges import arithmetic_verifier, make_judge
from hf_dpo.on_policy.prompts import encode_prompts, load_prompt_rows, round_indices
from hf_dpo.train import RunSetupError, TrainConfig, main, run

SHARD_SCRIPT = Path(__file__).with_name("mp_sample_groups.py")


# ---- pairs -------------------------------------------------------------------------------------------------
def test_best_vs_worst_picks_first_best_over_first_worst():
    got = pick_pairs([0.5, 1.0, 0.0, 1.0, 0.0], list("abcde"))
    assert got.pairs == [(1, 2)] and not got.skipped


def test_all_equal_group_is_skipped_and_counted():
    for rule in ("best_vs_worst", "all_pairs"):
        got = pick_pairs([1.0, 1.0, 1.0], list("abc"), rule)
        assert got.pairs == [] and got.skipped == Counter(all_equal=1)


def test_all_pairs_orders_each_couple_and_skips_ties():
    got = pick_pairs([1.0, 0.0, 1.0, 0.5], list("abcd"), "all_pairs")
    assert sorted(got.pairs) == sorted([(0, 1), (0, 3), (2, 1), (3, 1), (2, 3)])
    assert got.skipped == Counter(tie=1)  # (a, c)


def test_identical_texts_are_never_a_pair():
    got = pick_pairs([1.0, 0.0], ["same", "same"])
    assert got.pairs == [] and got.skipped == Counter(identical=1)


def test_bad_groups_are_errors():
    with pytest.raises(ValueError, match=">= 2 completions"):
        pick_pairs([1.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        pick_pairs([1.0, math.nan], ["a", "b"])
    with pytest.raises(ValueError, match="pair_rule='best'"):
        pick_pairs([1.0, 0.0], ["a", "b"], "best")


# ---- prompts -----------------------------------------------------------------------------------------------
def test_round_indices_draw_every_prompt_once_before_repeating():
    drawn = [round_indices(10, 4, r, seed=3) for r in (1, 2, 3, 4, 5)]
    first_pass = drawn[0] + drawn[1] + drawn[2][:2]
    assert sorted(first_pass) == list(range(10))
    assert drawn == [round_indices(10, 4, r, seed=3) for r in (1, 2, 3, 4, 5)]  # deterministic (resume)
    assert round_indices(10, 4, 1, seed=4) != drawn[0]


def test_prompt_only_files_with_answers(tmp_path):
    from conftest import make_char_tokenizer

    rows = [
        {"prompt": "What is 2 + 3?", "answer": 5},
        {"prompt": [{"role": "user", "content": "1 + 1?"}], "answer": 2},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:1]))
    (tmp_path / "q.jsonl").write_text(json.dumps({"prompt": "x" * 50, "answer": 1}) + "\n")
    train, test = load_prompt_rows(
        "prompts", {"data_files": {"train": str(tmp_path / "p.jsonl"), "test": str(tmp_path / "q.jsonl")}}
    )
    assert train[0]["answer"] == 5 and len(test) == 1
    tokenizer = make_char_tokenizer()
    encoded = encode_prompts(rows[:1], tokenizer, None, max_prompt_length=None)
    assert encoded.prompts[0] == "What is 2 + 3?"
    assert encoded.ids[0] == tokenizer("What is 2 + 3?")["input_ids"]
    long = encode_prompts(test, tokenizer, None, max_prompt_length=20, split="test")
    assert len(long) == 0 and long.skipped_too_long == 1
    with pytest.raises(ValueError, match="train row 0: field 'prompt' is missing"):
        encode_prompts([{"question": "?"}], tokenizer, None)


# ---- judges ------------------------------------------------------------------------------------------------
def test_arithmetic_verifier_reads_the_sum():
    row = {
        "prompt": [{"role": "user", "content": "What is 37 + 48?"}],
        "chosen": [{"role": "assistant", "content": "37 + 48 = 85."}],
        "rejected": [{"role": "assistant", "content": "37 + 48 = 86."}],
    }
    assert arithmetic_verifier(None, "The answer is 85.", row) == 1.0
    assert arithmetic_verifier(None, "37 + 48 = 86", row) == 0.0
    assert arithmetic_verifier(None, "I don't know", {"prompt": "?", "answer": 3}) == 0.0


def test_judge_errors_name_the_judge_and_the_prompt():
    @register_verifier("test_raises")
    def raises(prompt, completion, row):
        raise KeyError("answer")

    @register_verifier("test_nan")
    def nan(prompt, completion, row):
        return math.nan

    prompts = ["What is 1 + 1?"]
    with pytest.raises(
        JudgeError, match=r"judge 'test_raises' raised KeyError: 'answer' \(prompt 7 'What is 1 \+ 1\?'\)"
    ):
        make_judge("test_raises", "verifier").score([7], prompts, [["a", "b"]], [{}])
    with pytest.raises(JudgeError, match=r"judge 'test_nan' returned nan for prompt 7 .*finite number"):
        make_judge("test_nan", "verifier").score([7], prompts, [["a", "b"]], [{}])
    with pytest.raises(ValueError, match="Unknown verifier 'arithmetik'. Did you mean 'arithmetic'"):
        make_judge("arithmetik", "verifier")


def test_wrong_number_of_scores_is_an_error():
    from hf_dpo.eval.generation import Generation
    from hf_dpo.on_policy.judges import GroupJudge
    from hf_dpo.on_policy.prompts import PromptSet
    from hf_dpo.on_policy.rounds import OnPolicySetup, judge_round
    from hf_dpo.on_policy.sampling import SampledGroups

    class ShortJudge(GroupJudge):
        def score(self, indices, prompts, groups, rows):
            return [[1.0] for _ in groups]

    setup = OnPolicySetup(
        OnPolicyOptions(), PromptSet(["p"], [[1]], [{}]), PromptSet(), ShortJudge("short", "verifier")
    )
    groups = SampledGroups([[Generation("a", 1, True), Generation("b", 1, True)]], 0.0)
    with pytest.raises(JudgeError, match="judge 'short' returned 1 scores for the 2 completions of prompt 0"):
        judge_round(setup, [0], groups)


def test_pairwise_judge_scores_are_mean_preferences():
    @register_pairwise_judge("test_longer")
    def longer(prompt, a, b):
        return 0.5 if len(a) == len(b) else float(len(a) > len(b))

    scores = make_judge("test_longer", "pairwise").score([0], ["p"], [["aaa", "a", "aa", "aa"]], [{}])
    # "aaa" beats all 3; "a" loses all; each "aa" beats "a", loses to "aaa", ties the other
    assert scores == [[1.0, 0.0, 0.5, 0.5]]

    @register_pairwise_judge("test_out_of_range")
    def bad(prompt, a, b):
        return 2.0

    with pytest.raises(JudgeError, match=r"returned 2.0 .* in \[0, 1\]"):
        make_judge("test_out_of_range", "pairwise").score([0], ["p"], [["a", "b"]], [{}])


def test_module_function_judge_is_imported():
    judge = make_judge("hf_dpo.on_policy.judges:arithmetic_verifier", "verifier")
    assert judge.fn is arithmetic_verifier
    with pytest.raises(ValueError, match="cannot import the verifier"):
        make_judge("hf_dpo.on_policy.judges:nope", "verifier")


# ---- config ------------------------------------------------------------------------------------------------
def test_options_are_validated():
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        OnPolicyOptions(num_generations=1)
    with pytest.raises(ValueError, match="judge_type='oracle' is unknown"):
        OnPolicyOptions(judge_type="oracle")
    with pytest.raises(ValueError, match="reference_update='latest' is unknown"):
        OnPolicyOptions(reference_update="latest")
    if "vllm" not in sys.modules:
        with pytest.raises(ValueError, match="generation_backend=vllm needs the vllm package"):
            OnPolicyOptions(generation_backend="vllm")


def _base(tmp_path: Path, **on_policy) -> list[str]:
    return [
        f"log_path={tmp_path / 'run'}",
        f"model_name={TINY_MODEL}",
        "dataset=arithmetic",
        "dataset_options={num_train: 24, num_test: 6}",
        *[f"on_policy.{k}={v}" for k, v in on_policy.items()],
    ]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"num_generations": 1}, "num_generations must be >= 2"),
        ({"lr_round_decay": 0}, "lr_round_decay must be in (0, 1]"),
        ({"judge": "arithmetik"}, "Did you mean 'arithmetic'"),
        ({"judge": "test_length", "judge_type": "reward_model"}, "cannot load"),
    ],
)
def test_cli_validates_before_writing(tmp_path, capsys, override, message):
    require_shared(TINY_MODEL)
    code = main(_base(tmp_path, **override))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_round_reference_with_lora_and_missing_test_prompts_are_setup_errors(tmp_path):
    require_shared(TINY_MODEL)
    from hf_dpo.run.cli_config import load_config

    config = load_config(TrainConfig, [*_base(tmp_path, reference_update="round"), "peft.r=4"])
    with pytest.raises(RunSetupError, match="reference_update=round needs a separate reference"):
        run(config)
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "hi"}) + "\n")
    args = [
        f"log_path={tmp_path / 'run'}",
        f"model_name={TINY_MODEL}",
        "dataset=prompts",
        f"data_files={tmp_path / 'p.jsonl'}",
    ]
    with pytest.raises(RunSetupError, match="no test split; give test prompts"):
        run(load_config(TrainConfig, [*args, "on_policy.judge=arithmetic"]))
    assert not (tmp_path / "run").exists()


# ---- end to end --------------------------------------------------------------------------------------------
@register_verifier("test_length")
def length_verifier(prompt, completion, row):
    """Longer is better: a score with spread for a random tiny model's samples."""
    return float(len(completion))


class KillAt(TrainerCallback):
    """Sends SIGTERM to this process at ``step`` of round ``round_number`` (a kill mid-round)."""

    def __init__(self, round_number: int, step: int) -> None:
        self.round_number, self.step = round_number, step

    def on_step_end(self, args, state, control, **kwargs):
        if args.output_dir.endswith(f"round-{self.round_number}") and state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def _e2e_config(log_path: Path, **extra):
    from hf_dpo.run.cli_config import load_config

    keys = {
        "log_path": str(log_path),
        "model_name": str(TINY_MODEL),
        "dataset": "arithmetic",
        "dataset_options": {"num_train": 20, "num_test": 4},
        "on_policy": {
            "num_rounds": 2,
            "prompts_per_round": 6,
            "num_generations": 3,
            "steps_per_round": 3,
            "judge": "test_length",
            "max_new_tokens": 8,
            "eval_prompts": 4,
            "generation_batch_size": 4,
        },
        "per_device_train_batch_size": 2,
        "learning_rate": 1e-3,
        "max_length": 64,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 1,
        "quiet": True,
        "seed": 0,
        **extra,
    }
    return load_config(
        TrainConfig, [f"{k}={json.dumps(v) if isinstance(v, dict) else v}" for k, v in keys.items()]
    )


def test_round_learning_rate_decays_by_round(tmp_path):
    require_shared(TINY_MODEL)
    from hf_dpo.on_policy.rounds import _round_config

    config = _e2e_config(tmp_path / "run")
    config.on_policy.lr_round_decay = 0.5
    rates = [_round_config(config, tmp_path / f"round-{r}", r).dpo_config().learning_rate for r in (1, 2, 3)]
    assert rates == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert config.learning_rate == 1e-3  # the run's own config is left as it was


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_on_policy_run_trains_on_hand_checkable_pairs(tmp_path):
    require_shared(TINY_MODEL)
    from transformers import AutoModelForCausalLM

    result = run(_e2e_config(tmp_path / "run"))
    log_path = result.log_path
    for r in (1, 2):
        records = _records(log_path / f"round-{r}" / "pairs.jsonl")
        assert len(records) == 6
        assert [x["prompt_index"] for x in records] == round_indices(20, 6, r, seed=0)
        for record in records:
            texts = [c["text"] for c in record["completions"]]
            assert [c["score"] for c in record["completions"]] == [float(len(t)) for t in texts]
            lengths = [len(t) for t in texts]
            if max(lengths) == min(lengths):
                assert record["pairs"] == [] and record["skipped"] == {"all_equal": 1}
            else:  # the first longest over the first shortest (unless their texts are equal)
                best, worst = lengths.index(max(lengths)), lengths.index(min(lengths))
                assert record["pairs"] == [[best, worst]]
        state = json.loads((log_path / f"round-{r}" / "checkpoint-3" / "trainer_state.json").read_text())
        assert state["global_step"] == 3
    rows = _records(log_path / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert [r["step"] for r in rows] == [0, 3, 6]
    pairs_1 = sum(len(x["pairs"]) for x in _records(log_path / "round-1" / "pairs.jsonl"))
    assert rows[1]["on_policy/pairs"] == pairs_1 and rows[1]["on_policy/pair_yield"] == pairs_1 / 6
    assert 0 < rows[1]["on_policy/generation_time_share"] < 1
    assert all("heldout/exact_match" in r for r in rows)
    initial = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    final = AutoModelForCausalLM.from_pretrained(result.final_dir)
    changed = [n for n, p in final.named_parameters() if not torch.equal(p, initial.get_parameter(n))]
    assert changed, "training on the pairs changed no weight"
    assert (log_path / "plots" / "on_policy.png").is_file()


def test_resume_mid_round_reuses_the_rounds_pairs(tmp_path, monkeypatch):
    require_shared(TINY_MODEL)
    import hf_dpo.on_policy.rounds as rounds
    from hf_dpo.run.signals import TrainingInterrupted

    log_path = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        run(_e2e_config(log_path), callbacks=[KillAt(2, 2)])
    pairs = (log_path / "round-2" / "pairs.jsonl").read_bytes()
    assert (log_path / "round-1" / "done.json").is_file() and not (
        log_path / "round-2" / "done.json"
    ).exists()
    sampled = []
    real = rounds.sample_groups
    monkeypatch.setattr(rounds, "sample_groups", lambda *a, **k: sampled.append(a[3]) or real(*a, **k))
    result = run(_e2e_config(log_path, resume="auto"))
    assert sampled == [1]  # only the held-out measure generates; round 2's pairs come from its file
    assert (log_path / "round-2" / "pairs.jsonl").read_bytes() == pairs
    rows = _records(log_path / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2] and rows[-1]["step"] == 6
    train_rows = _records(log_path / "round-2" / "metrics.jsonl")
    assert sorted(r["step"] for r in train_rows if "loss" in r or "dpo_loss" in r) == [1, 2, 3]
    assert result.final_dir.is_dir()
    with pytest.raises(Exception, match="has done all 2 rounds"):
        run(_e2e_config(log_path, resume="auto"))


def test_sharded_generation_equals_one_process(tmp_path):
    require_shared(TINY_MODEL)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    outputs = {}
    for n in (1, 2):
        out = tmp_path / f"p{n}.json"
        cmd = [sys.executable, *(TWO_PROCESS_LAUNCH if n == 2 else []), str(SHARD_SCRIPT), str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        outputs[n] = json.loads(out.read_text())
    assert outputs[2]["world_size"] == 2 and outputs[1]["world_size"] == 1
    assert outputs[2]["groups"] == outputs[1]["groups"]
    assert len(outputs[1]["groups"]) == 5 and all(len(g) == 3 for g in outputs[1]["groups"])
    assert len({t for g in outputs[1]["groups"] for t in g}) > 3  # samples, not one greedy text repeated


def test_pairwise_heldout_before_training_is_one_half_without_judging(tmp_path):
    from hf_dpo.eval.generation import Generation
    from hf_dpo.on_policy.prompts import PromptSet
    from hf_dpo.on_policy.rounds import OnPolicySetup, heldout_metrics
    from hf_dpo.on_policy.sampling import SampledGroups

    calls = []

    @register_pairwise_judge("test_counting")
    def counting(prompt, a, b):
        calls.append((a, b))
        return 1.0

    setup = OnPolicySetup(
        OnPolicyOptions(judge="test_counting", judge_type="pairwise"),
        PromptSet(),
        PromptSet(["p", "q"], [[1], [2]], [{}, {}]),
        make_judge("test_counting", "pairwise"),
    )
    fake = SampledGroups([[Generation("x", 1, True)], [Generation("y", 1, True)]], 0.0)
    import hf_dpo.on_policy.rounds as rounds

    original = rounds.sample_groups
    rounds.sample_groups = lambda *a, **k: fake
    try:
        before, texts = heldout_metrics(None, None, setup, tmp_path / "round-0", None)
        after, _ = heldout_metrics(None, None, setup, tmp_path / "round-1", ["x0", "y0"])
    finally:
        rounds.sample_groups = original
    assert before["heldout/win_rate_vs_initial"] == 0.5 and calls == [("x", "x0"), ("y", "y0")]
    assert after["heldout/win_rate_vs_initial"] == 1.0 and texts == ["x", "y"]
