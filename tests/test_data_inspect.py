"""``python -m hf_dpo.data``: argument parsing, printed numbers vs independent computation, the example."""

from __future__ import annotations

import os
import random
import re
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import SHARED

from hf_dpo.config import dpo_default
from hf_dpo.data import build_preference_dataset  # noqa: E402
from hf_dpo.data.custom import CustomBuilder  # noqa: E402
from hf_dpo.data.inspection import main, nearest_rank, parse_args  # noqa: E402
from hf_dpo.run.cli_config import ConfigError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HH = SHARED / "data" / "preference" / "hh_rlhf.test.jsonl"
SMOLLM = SHARED / "models" / "smollm2-135m-instruct"
needs_shared = pytest.mark.skipif(
    not (HH.is_file() and SMOLLM.is_dir()), reason=f"shared test material not found under {SHARED}"
)


def lengths_table(out: str) -> dict[str, list[int]]:
    """{"prompt": [p50, p90, p99, max], ...} from the printed table."""
    rows = re.findall(r"^  (prompt|chosen|rejected) +(\d+) / (\d+) / (\d+) / (\d+)$", out, re.MULTILINE)
    return {name: [int(v) for v in values] for name, *values in rows}


def expected_row(values: list[int]) -> list[int]:
    cells = np.percentile(values, [50, 90, 99], method="inverted_cdf")  # the nearest-rank definition
    return [int(v) for v in cells] + [max(values)]


def test_parse_args_types_builder_options() -> None:
    args, builder = parse_args(
        [
            "dataset=custom",
            "model_name=some/tokenizer",
            "data_files.train=a.jsonl",
            "data_files.test=b.jsonl",
            "column_map={question: prompt}",
            "test_size=0.2",
            "max_length=null",
            "num_examples=3",
            "num_proc=2",
        ]
    )
    assert (args.dataset, args.model_name, args.max_length, args.max_prompt_length, args.num_examples) == (
        "custom",
        "some/tokenizer",
        None,
        dpo_default("max_prompt_length"),
        3,
    )
    assert isinstance(builder, CustomBuilder)
    assert builder.data_files == {"train": "a.jsonl", "test": "b.jsonl"}
    assert (builder.column_map, builder.test_size, builder.num_proc) == ({"question": "prompt"}, 0.2, 2)
    _, builder = parse_args(["dataset=hhh", "model_name=m", "data_files=hh.jsonl", "seed=7"])
    assert (builder.data_files, builder.seed, builder.path) == ("hh.jsonl", 7, "Anthropic/hh-rlhf")


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["dataset=hhh", "model_name=m", "max_lenght=5"], r"'hhh': 'max_lenght'\. Did you mean 'max_length'"),
        (["dataset=hhh", "model_name=m", "min_preference_strength=2"], r"'min_preference_strength'\. Valid"),
        (["dataset=arithmetic", "model_name=m", "num_train=ten"], "num_train"),
        (["dataset=hhh", "run.yaml"], "not key=value"),
        (["model_name=m"], "missing required config key.*dataset"),
        (["dataset=hhh", "model_name=m", "split=validation"], "split"),
        (["dataset=helpsteer", "model_name=m"], "Did you mean 'helpsteer3'"),
    ],
)
def test_parse_args_errors(argv: list[str], match: str) -> None:
    with pytest.raises((ConfigError, ValueError), match=match):
        parse_args(argv)


def test_nearest_rank_matches_numpy() -> None:
    rng = random.Random(0)
    for n in (1, 2, 7, 100, 101):
        values = [rng.randrange(1000) for _ in range(n)]
        for q in (50, 90, 99):
            assert nearest_rank(values, q) == np.percentile(values, q, method="inverted_cdf")


def test_inspect_arithmetic_with_char_tokenizer(tmp_path, char_tokenizer, capsys) -> None:
    """No ../shared needed: character-level ids, so every length is a character count."""
    from tokenizers import decoders

    char_tokenizer.backend_tokenizer.decoder = decoders.Fuse()  # decode without spaces between characters
    char_tokenizer.save_pretrained(tmp_path)
    argv = [
        "dataset=arithmetic",
        f"model_name={tmp_path}",
        "num_train=40",
        "num_test=10",
        "split=test",
        "seed=5",
    ]
    assert main([*argv, "max_length=34", "max_prompt_length=20", "num_examples=2"]) == 0
    out = capsys.readouterr().out
    data = build_preference_dataset("arithmetic", num_train=40, num_test=10, seed=5)
    assert "dataset 'arithmetic': 40 train / 10 test pairs; showing test" in out
    assert "source rows skipped: none" in out
    prompts = [f"User: {p[0]['content']}\n\nAssistant:" for p in data.test["prompt"]]
    chosen = [f" {c[0]['content']}</s>" for c in data.test["chosen"]]
    rejected = [f" {r[0]['content']}</s>" for r in data.test["rejected"]]
    table = lengths_table(out)
    assert table["prompt"] == expected_row([len(p) for p in prompts])
    assert table["chosen"] == expected_row([len(c) - 3 for c in chosen])  # "</s>" is one token
    assert table["rejected"] == expected_row([len(r) - 3 for r in rejected])
    prompt_cut = sum(len(p) > 20 for p in prompts)
    chosen_cut = sum(min(len(p), 20) + len(c) - 3 > 34 for p, c in zip(prompts, chosen, strict=True))
    assert (
        f"truncation (max_length=34, max_prompt_length=20): {prompt_cut} prompt, {chosen_cut} chosen" in out
    )
    assert prompt_cut > 0 and chosen_cut > 0
    # the examples: the kept (truncated) prompt, then the trained completion inside [[ ]]
    for i in range(2):
        assert f"--- test pair {i} (tokens: prompt 20, chosen {34 - 20}, rejected {34 - 20})" in out
        assert f"{prompts[i][-20:]}[[{chosen[i][:14]}]]" in out
        assert f"…[[{rejected[i][:14]}]]" in out


@needs_shared
def test_inspect_hh_with_smollm_matches_apply_chat_template(capsys) -> None:
    from transformers import AutoTokenizer

    argv = [
        "dataset=hhh",
        f"data_files={HH}",
        f"model_name={SMOLLM}",
        "renderer_name=chat_template",
        "split=test",
        "max_prompt_length=512",  # the prompt cap (off by default) is part of what this test checks
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "dataset 'hhh': 891 train / 99 test pairs; showing test" in out
    assert "source rows skipped: chosen_equals_rejected=6, empty_reply=1, prompt_mismatch=3" in out
    assert "99 pairs kept" in out and "tokenization skips: none" in out

    tokenizer = AutoTokenizer.from_pretrained(str(SMOLLM))
    test = build_preference_dataset("hhh", data_files=str(HH)).test
    lengths: dict[str, list[int]] = {"prompt": [], "chosen": [], "rejected": []}
    for pair in test:
        prompt = len(tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True)["input_ids"])
        lengths["prompt"].append(prompt)
        for part in ("chosen", "rejected"):
            full = tokenizer.apply_chat_template(pair["prompt"] + pair[part])["input_ids"]
            lengths[part].append(
                len(full) - prompt - 1
            )  # the template's "\n" after <|im_end|> is not trained
    assert lengths_table(out) == {part: expected_row(values) for part, values in lengths.items()}
    prompt_cut = sum(p > 512 for p in lengths["prompt"])
    chosen_cut = sum(
        min(p, 512) + c > 1024 for p, c in zip(lengths["prompt"], lengths["chosen"], strict=True)
    )
    assert f"{prompt_cut} prompt, {chosen_cut} chosen" in out

    first = test[0]
    reply = first["chosen"][0]["content"]
    assert f"<|im_start|>assistant\n[[{reply}<|im_end|>]]" in out
    assert f"<|im_start|>user\n{first['prompt'][-1]['content']}<|im_end|>" in out


def test_module_entry_point_reports_errors(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["hf_dpo.data", "dataset=hh", "model_name=x"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("hf_dpo.data", run_name="__main__")
    assert exit_info.value.code == 2
    assert "error: Unknown dataset 'hh'. Did you mean 'hhh'?" in capsys.readouterr().err
