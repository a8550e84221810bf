"""Dataset builders on real hub rows (../shared) and on fixture rows written in the exact hub schemas.

Expected numbers are computed independently from the raw JSON in each test, not with the builders' code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import SHARED

from hf_dpo.data import (  # noqa: E402
    DatasetBuilder,
    PreferencePair,
    Skip,
    available_builders,
    build_preference_dataset,
    get_builder,
    register_builder,
    require,
)

PREFERENCE = SHARED / "data" / "preference"
HH = PREFERENCE / "hh_rlhf.test.jsonl"
HELPSTEER3_CARD = PREFERENCE / "card_examples" / "helpsteer3.preference.card_examples.jsonl"
ULTRAFEEDBACK_CARD = PREFERENCE / "card_examples" / "ultrafeedback_binarized.card_example.jsonl"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
needs_shared = pytest.mark.skipif(
    not PREFERENCE.is_dir(), reason=f"shared test data not found at {PREFERENCE}"
)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


# -- hhh --------------------------------------------------------------------------------------------------
def hh_expected(row: dict[str, str]) -> tuple[str, str | None, str | None]:
    """Independent check: split at the LAST "\\n\\nAssistant:" only -> (verdict, chosen, rejected)."""
    chosen_head, chosen_reply = row["chosen"].rsplit("\n\nAssistant:", 1)
    rejected_head, rejected_reply = row["rejected"].rsplit("\n\nAssistant:", 1)
    if chosen_head != rejected_head:
        return "prompt_mismatch", None, None
    if not chosen_reply.strip() or not rejected_reply.strip():
        return "empty_reply", None, None
    if chosen_reply.strip() == rejected_reply.strip():
        return "chosen_equals_rejected", None, None
    return "pair", chosen_reply.strip(), rejected_reply.strip()


@pytest.fixture(scope="module")
def hh_rows() -> list[dict[str, str]]:
    if not HH.is_file():
        pytest.skip(f"shared test data not found at {HH}")
    return read_jsonl(HH)


@pytest.fixture(scope="module")
def hh_data(hh_rows):
    return build_preference_dataset("hhh", data_files=str(HH), test_size=0)


@needs_shared
def test_hhh_counts_match_independent_count(hh_rows, hh_data) -> None:
    verdicts = [hh_expected(row)[0] for row in hh_rows]
    expected_skips = {v: verdicts.count(v) for v in set(verdicts) - {"pair"}}
    assert len(hh_data.train) == verdicts.count("pair") == 990
    assert (
        hh_data.skips
        == expected_skips
        == {"prompt_mismatch": 3, "empty_reply": 1, "chosen_equals_rejected": 6}
    )
    assert len(hh_data.test) == 0


@needs_shared
def test_hhh_pairs_keep_every_turn(hh_rows, hh_data) -> None:
    kept = [row for row in hh_rows if hh_expected(row)[0] == "pair"]
    inner_human = 0
    for row, pair in zip(kept, hh_data.train, strict=True):
        _, chosen, rejected = hh_expected(row)
        assert pair["chosen"] == [assistant(chosen)] and pair["rejected"] == [assistant(rejected)]
        head = row["chosen"].rsplit("\n\nAssistant:", 1)[0]
        markers = re.findall(r"\n\n(Human|Assistant): ?", head)
        prompt = pair["prompt"]
        assert [m["role"] for m in prompt] == [
            {"Human": "user", "Assistant": "assistant"}[m] for m in markers
        ]
        # every earlier turn is there, in order, with its full text
        rebuilt = "".join(
            f"\n\n{'Human' if m['role'] == 'user' else 'Assistant'}: {m['content']}" for m in prompt
        )
        assert re.sub(r"\s+", " ", rebuilt).strip() == re.sub(r"\s+", " ", head).strip()
        inner_human += sum(m["content"].count("Human:") for m in prompt)
    assert max(len(p) for p in hh_data.train["prompt"]) == 15  # 8 human turns
    assert inner_human > 0  # "Human:" inside a turn stayed text


@needs_shared
def test_hhh_identical_rows_skipped_as_chosen_equals_rejected(hh_rows, tmp_path, caplog) -> None:
    same = [row for row in hh_rows if row["chosen"] == row["rejected"]]
    assert len(same) == 6
    good = [row for row in hh_rows if hh_expected(row)[0] == "pair"][:2]
    path = write_jsonl(tmp_path / "hh.jsonl", same + good)
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        data = build_preference_dataset("hhh", data_files=str(path), test_size=0)
    assert data.skips == {"chosen_equals_rejected": 6}
    assert len(data.train) == 2
    logged = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert logged == ["hf_dpo: hhh train: skipped 6 of 8 rows (chosen_equals_rejected=6)"]


@needs_shared
def test_hhh_carves_a_seeded_test_split(hh_data) -> None:
    a = build_preference_dataset("hhh", data_files=str(HH), test_size=0.1, seed=1)
    b = build_preference_dataset("hhh", data_files=str(HH), test_size=0.1, seed=1)
    c = build_preference_dataset("hhh", data_files=str(HH), test_size=0.1, seed=2)
    assert (len(a.train), len(a.test)) == (891, 99)
    assert a.test["chosen"] == b.test["chosen"] != c.test["chosen"]
    all_chosen = sorted(m[0]["content"] for m in hh_data.train["chosen"])
    assert sorted(m[0]["content"] for m in [*a.train["chosen"], *a.test["chosen"]]) == all_chosen


def test_test_only_data_files_give_every_pair_to_test_and_none_to_train(tmp_path) -> None:
    turn = "\n\nHuman: q{}\n\nAssistant: {}"
    rows = [{"chosen": turn.format(i, f"good {i}"), "rejected": turn.format(i, "bad")} for i in range(5)]
    path = tmp_path / "held_out.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = build_preference_dataset("hhh", data_files={"test": str(path)})
    assert len(data.train) == 0
    assert [m[-1]["content"] for m in data.test["chosen"]] == [f"good {i}" for i in range(5)]


def test_unreachable_hub_names_the_local_files_override(monkeypatch) -> None:
    import datasets

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'Anthropic/hh-rlhf' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match=r"Couldn't reach.*Without Hub access.*dataset=hhh data_files="):
        build_preference_dataset("hhh")


@needs_shared
def test_hhh_num_proc_gives_same_pairs(hh_data) -> None:
    parallel = build_preference_dataset("hhh", data_files=str(HH), test_size=0, num_proc=2)
    assert parallel.skips == hh_data.skips
    assert parallel.train["prompt"] == hh_data.train["prompt"]


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (
            {"chosen": 123, "rejected": "\n\nHuman: a\n\nAssistant: b"},
            r"row 0 .*field 'chosen': expected str",
        ),
        ({"chosen": None, "rejected": "\n\nHuman: a\n\nAssistant: b"}, r"row 0 .*field 'chosen': missing"),
        ({"chosen": "Q: a A: b", "rejected": "Q: a A: c"}, r"field 'chosen': not an HH transcript.*custom"),
    ],
)
def test_hhh_malformed_rows_raise(tmp_path, row, match) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [row])
    with pytest.raises(ValueError, match=match):
        build_preference_dataset("hhh", data_files=str(path), test_size=0)


def test_hhh_skip_reasons_on_constructed_rows(tmp_path) -> None:
    rows = [
        {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"},
        {
            "chosen": "\n\nHuman: hi\n\nAssistant: a\n\nHuman: more",
            "rejected": "\n\nHuman: hi\n\nAssistant: b",
        },
        {"chosen": "\n\nAssistant: unprompted", "rejected": "\n\nAssistant: also unprompted"},
        {
            "chosen": "Human: no blank line\n\nAssistant: ok",
            "rejected": "Human: no blank line\n\nAssistant: no",
        },
    ]
    data = build_preference_dataset(
        "hhh", data_files=str(write_jsonl(tmp_path / "hh.jsonl", rows)), test_size=0
    )
    assert data.skips == {"no_final_reply": 1, "empty_prompt": 1}
    assert data.train["prompt"] == [[user("hi")], [user("no blank line")]]


# -- helpsteer3 -----------------------------------------------------------------------------------------
def helpsteer3_expected(rows: list[dict], k: int) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    pairs, skips = [], {}
    for row in rows:
        p = row["overall_preference"]
        reason = "tie" if p == 0 else "weak_preference" if abs(p) < k else None
        if reason:
            skips[reason] = skips.get(reason, 0) + 1
            continue
        better, worse = (
            (row["response1"], row["response2"]) if p < 0 else (row["response2"], row["response1"])
        )
        pairs.append((better, worse, len(row["context"])))
    return pairs, skips


@pytest.mark.parametrize("k", [1, 2, 3])
def test_helpsteer3_fixture_signs_ties_strength(k: int) -> None:
    path = FIXTURES / "helpsteer3.preference.jsonl"
    rows = read_jsonl(path)
    assert {r["overall_preference"] for r in rows} >= {-3, -1, 0, 1, 2, 3}
    data = build_preference_dataset(
        "helpsteer3", data_files=str(path), test_size=0, min_preference_strength=k
    )
    expected, skips = helpsteer3_expected(rows, k)
    assert data.skips == skips
    got = [(p["chosen"][0]["content"], p["rejected"][0]["content"], len(p["prompt"])) for p in data.train]
    assert got == expected
    assert all(p["chosen"][0]["role"] == p["rejected"][0]["role"] == "assistant" for p in data.train)


def test_helpsteer3_multi_turn_context_is_the_prompt() -> None:
    path = FIXTURES / "helpsteer3.preference.jsonl"
    row = read_jsonl(path)[1]
    data = build_preference_dataset("helpsteer3", data_files=str(path), test_size=0)
    pair = next(p for p in data.train if len(p["prompt"]) == 3 and "add" in p["prompt"][0]["content"])
    assert pair["prompt"] == row["context"]
    assert pair["chosen"] == [assistant(row["response2"])]  # overall_preference = +2: response2 is better


def test_helpsteer3_validation_is_the_test_split(tmp_path) -> None:
    rows = read_jsonl(FIXTURES / "helpsteer3.preference.jsonl")
    files = {
        "train": str(write_jsonl(tmp_path / "t.jsonl", rows)),
        "validation": str(FIXTURES / "helpsteer3.preference.jsonl"),
    }
    data = build_preference_dataset("helpsteer3", data_files=files)
    expected = len(helpsteer3_expected(rows, 1)[0])
    assert len(data.train) == len(data.test) == expected
    assert data.skips == {"tie": 4}  # two ties in each split


def test_helpsteer3_blank_or_identical_responses_are_skipped(tmp_path) -> None:
    row = read_jsonl(FIXTURES / "helpsteer3.preference.jsonl")[0]
    rows = [dict(row, response2=" "), dict(row, response1="Same.", response2="Same."), row]
    data = build_preference_dataset(
        "helpsteer3", data_files=str(write_jsonl(tmp_path / "h.jsonl", rows)), test_size=0
    )
    assert data.skips == {"empty_reply": 1, "chosen_equals_rejected": 1}
    assert (len(data.train), len(data.test)) == (1, 0)


def test_helpsteer3_missing_field_names_row_and_field() -> None:
    with pytest.raises(ValueError, match=r"helpsteer3 train' row 1 \(0-based\): field 'response2': missing"):
        build_preference_dataset("helpsteer3", data_files=str(FIXTURES / "helpsteer3.missing_field.jsonl"))


@needs_shared
def test_helpsteer3_card_examples() -> None:
    rows = read_jsonl(HELPSTEER3_CARD)
    data = build_preference_dataset("helpsteer3", data_files=str(HELPSTEER3_CARD), test_size=0)
    assert data.skips == {}
    assert [r["overall_preference"] for r in rows] == [-2, -2]
    for row, pair in zip(rows, data.train, strict=True):
        assert pair["prompt"] == row["context"]
        assert pair["chosen"] == [assistant(row["response1"])]
        assert pair["rejected"] == [assistant(row["response2"])]
    assert [len(p) for p in data.train["prompt"]] == [1, 7]


# -- ultrafeedback ----------------------------------------------------------------------------------------
@needs_shared
def test_ultrafeedback_card_example() -> None:
    row = read_jsonl(ULTRAFEEDBACK_CARD)[0]
    data = build_preference_dataset("ultrafeedback", data_files=str(ULTRAFEEDBACK_CARD), test_size=0)
    assert len(data.train) == 1
    pair = data.train[0]
    assert pair["prompt"] == [user(row["prompt"])] == row["chosen"][:-1]
    assert pair["chosen"] == row["chosen"][-1:] and pair["rejected"] == row["rejected"][-1:]


def test_ultrafeedback_fixture_rows() -> None:
    path = FIXTURES / "ultrafeedback_binarized.prefs.jsonl"
    rows = read_jsonl(path)
    data = build_preference_dataset("ultrafeedback", data_files=str(path), test_size=0)
    assert data.skips == {"prompt_mismatch": 1, "chosen_equals_rejected": 1, "empty_reply": 1}
    assert data.train["prompt"] == [rows[0]["chosen"][:-1], rows[1]["chosen"][:-1]]
    assert len(data.train["prompt"][1]) == 3  # multi-turn prompt kept whole
    assert data.train["rejected"][1] == [assistant("Sad.")]


def test_ultrafeedback_message_without_content_names_row_and_field() -> None:
    path = FIXTURES / "ultrafeedback_binarized.missing_content.jsonl"
    with pytest.raises(ValueError, match=r"row 1 .*field 'rejected'.*rejected\[1\] is missing 'content'"):
        build_preference_dataset("ultrafeedback", data_files=str(path))


def test_ultrafeedback_hub_split_names(tmp_path) -> None:
    path = str(FIXTURES / "ultrafeedback_binarized.prefs.jsonl")
    data = build_preference_dataset("ultrafeedback", data_files={"train_prefs": path, "test_prefs": path})
    assert len(data.train) == len(data.test) == 2


# -- custom ---------------------------------------------------------------------------------------------
def test_custom_strings_with_column_map() -> None:
    path = FIXTURES / "custom_question_answers.jsonl"
    data = build_preference_dataset(
        "custom",
        path=str(path),
        column_map={"question": "prompt", "good": "chosen", "bad": "rejected"},
        test_size=0,
    )
    assert data.skips == {"empty_prompt": 1, "chosen_equals_rejected": 1}
    assert data.train[0] == {
        "prompt": [user("What is 1 + 1?")],
        "chosen": [assistant("2")],
        "rejected": [assistant("3")],
    }


def test_custom_csv_and_carved_test_split() -> None:
    data = build_preference_dataset(
        "custom", data_files=str(FIXTURES / "custom_pairs.csv"), test_size=1, seed=0
    )
    assert (len(data.train), len(data.test)) == (2, 1)
    contents = sorted(p[0]["content"] for p in [*data.train["prompt"], *data.test["prompt"]])
    assert contents == ["Name a fruit.", "What colour is grass?", "What is 3 * 3?"]


def test_custom_implicit_prompt_message_lists() -> None:
    data = build_preference_dataset(
        "custom", path=str(FIXTURES / "custom_implicit_prompt.jsonl"), test_size=0
    )
    assert data.skips == {"prompt_mismatch": 1}
    assert data.train["prompt"] == [
        [user("Hi")],
        [{"role": "system", "content": "Be brief."}, user("Define DPO.")],
    ]
    assert data.train["rejected"][1] == [assistant("A kind of dog.")]


def test_custom_explicit_prompt_with_whole_conversations(tmp_path) -> None:
    row = {"prompt": "Hi", "chosen": [user("Hi"), assistant("Hello")], "rejected": [assistant("Go")]}
    data = build_preference_dataset("custom", path=str(write_jsonl(tmp_path / "c.jsonl", [row])), test_size=0)
    assert data.train[0] == {
        "prompt": [user("Hi")],
        "chosen": [assistant("Hello")],
        "rejected": [assistant("Go")],
    }


@pytest.mark.parametrize(
    ("rows", "options", "match"),
    [
        (
            [{"q": "a", "chosen": "b", "rejected": "c"}],
            {"column_map": {"question": "prompt"}},
            "no column 'question'",
        ),
        ([{"prompt": "a", "good": "b", "rejected": "c"}], {}, r"no \['chosen'\] column.*column_map"),
        ([{"chosen": "b", "rejected": "c"}], {}, r"row 0 .*field 'prompt': missing.*whole conversations"),
        (
            [{"prompt": "a", "chosen": [user("b")], "rejected": "c"}],
            {},
            r"field 'chosen': expected one assistant",
        ),
        (
            [{"prompt": "a", "chosen": 5, "rejected": "c"}],
            {},
            r"field 'chosen': expected str or list, got int",
        ),
        (
            [{"prompt": [{"role": "bot", "content": "a"}], "chosen": "b", "rejected": "c"}],
            {},
            r"prompt\[0\]\['role'\]",
        ),
    ],
)
def test_custom_malformed_rows_raise(tmp_path, rows, options, match) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=match):
        build_preference_dataset("custom", path=str(path), test_size=0, **options)


def test_custom_needs_a_source() -> None:
    with pytest.raises(ValueError, match="needs path=.* or data_files="):
        build_preference_dataset("custom")
    with pytest.raises(ValueError, match="cannot tell the file format"):
        build_preference_dataset("custom", data_files="pairs.txt")


# -- arithmetic ---------------------------------------------------------------------------------------------
def test_arithmetic_is_deterministic_correct_and_disjoint() -> None:
    a = build_preference_dataset("arithmetic", num_train=300, num_test=50, seed=3)
    b = build_preference_dataset("arithmetic", num_train=300, num_test=50, seed=3)
    c = build_preference_dataset("arithmetic", num_train=300, num_test=50, seed=4)
    assert (len(a.train), len(a.test), a.skips) == (300, 50, {})
    assert a.train["prompt"] == b.train["prompt"] != c.train["prompt"]
    questions = set()
    for pair in a.train.to_list() + a.test.to_list():
        x, y = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", pair["prompt"][0]["content"]).groups())
        questions.add((x, y))
        assert pair["chosen"][0]["content"] == f"{x} + {y} = {x + y}."
        wrong = int(re.fullmatch(rf"{x} \+ {y} = (\d+)\.", pair["rejected"][0]["content"]).group(1))
        assert wrong != x + y and abs(wrong - (x + y)) <= 10
    assert len(questions) == 350  # train and test share no question


def test_arithmetic_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="raise max_operand"):
        build_preference_dataset("arithmetic", num_train=100, num_test=10, max_operand=9)
    with pytest.raises(ValueError, match="generated in code"):
        build_preference_dataset("arithmetic", data_files="x.jsonl")


def test_arithmetic_without_test_split_gives_an_empty_test_dataset() -> None:
    data = build_preference_dataset("arithmetic", num_train=6, num_test=0, seed=1)
    assert (len(data.train), len(data.test), data.skips) == (6, 0, {})
    assert data.test.features == data.train.features
    assert data.test.column_names == ["prompt", "chosen", "rejected"]
    full = build_preference_dataset("arithmetic", num_train=6, num_test=2, seed=1)
    assert data.train["prompt"] == full.train["prompt"]  # the same draw, only no test rows


def test_empty_source_test_split_without_columns() -> None:
    """A builder whose source test split is empty (and has no columns at all) still converts."""
    import datasets

    @register_builder("test_empty_test")
    @dataclasses.dataclass(kw_only=True)
    class EmptyTestBuilder(DatasetBuilder):
        def load_raw(self) -> datasets.DatasetDict:
            train = datasets.Dataset.from_list([{"q": "a"}, {"q": "b"}])
            return datasets.DatasetDict({"train": train, "test": datasets.Dataset.from_list([])})

        def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
            return PreferencePair([user(row["q"])], assistant(row["q"] * 2), assistant(row["q"]))

    data = build_preference_dataset("test_empty_test")
    assert data.train["chosen"] == [[assistant("aa")], [assistant("bb")]]
    assert len(data.test) == 0 and data.test.features == data.train.features


# -- registry and options ------------------------------------------------------------------------------------
def test_registry_lists_builtins_and_suggests() -> None:
    assert {"hhh", "helpsteer3", "ultrafeedback", "custom", "arithmetic"} <= set(available_builders())
    with pytest.raises(
        ValueError, match=r"Unknown dataset 'helpsteer'\. Did you mean 'helpsteer3'\?.*arithmetic"
    ):
        get_builder("helpsteer")


def test_unknown_and_mistyped_options() -> None:
    with pytest.raises(ValueError, match=r"Did you mean 'min_preference_strength'\?"):
        get_builder("helpsteer3", min_preference_strenght=2)
    with pytest.raises(ValueError, match=r"option 'num_train' of dataset 'arithmetic' must be int, got str"):
        get_builder("arithmetic", num_train="10")
    with pytest.raises(ValueError, match=r"option 'test_size'"):
        get_builder("hhh", test_size=True)


def test_user_builder_with_its_own_option(tmp_path) -> None:
    @register_builder("test_echo")
    @dataclasses.dataclass(kw_only=True)
    class EchoBuilder(DatasetBuilder):
        """Rows {"text": str}: prefer the text repeated ``times`` times over the text once."""

        times: int = 2

        def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
            text = require(row, "text", str, "give each row a text")
            if not text:
                return Skip("empty_text")
            return PreferencePair([user(f"Echo {text}")], assistant(text * self.times), assistant(text))

    path = write_jsonl(tmp_path / "echo.jsonl", [{"text": "ab"}, {"text": ""}, {"text": "c"}])
    data = build_preference_dataset("test_echo", data_files=str(path), times=3, test_size=0)
    assert data.skips == {"empty_text": 1}
    assert data.train["chosen"] == [[assistant("ababab")], [assistant("ccc")]]
    again = build_preference_dataset(get_builder("test_echo", data_files=str(path), test_size=0), times=1)
    assert again.train["chosen"] == [[assistant("ab")], [assistant("c")]]

    @register_builder("test_bad")
    @dataclasses.dataclass(kw_only=True)
    class BadBuilder(EchoBuilder):
        def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
            return PreferencePair([user("x")], user("not an assistant"), assistant("y"))

    with pytest.raises(ValueError, match=r"row 0 .*field 'chosen'.*must be 'assistant'"):
        build_preference_dataset("test_bad", data_files=str(path), test_size=0)


def test_editing_convert_row_invalidates_the_cache(tmp_path, monkeypatch) -> None:
    """datasets pickles imported classes by reference, so the builder's source must enter the fingerprint."""
    import importlib

    module = tmp_path / "my_cached_builder.py"
    source = """
import dataclasses
from hf_dpo.data import DatasetBuilder, PreferencePair, register_builder

@register_builder("test_cached")
@dataclasses.dataclass(kw_only=True)
class CachedBuilder(DatasetBuilder):
    def convert_row(self, row):
        chosen = {"role": "assistant", "content": row["text"] + "VERSION"}
        rejected = {"role": "assistant", "content": "x"}
        return PreferencePair([{"role": "user", "content": "q"}], chosen, rejected)
"""
    module.write_text(source.replace("VERSION", "1"))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a same-second .pyc could hide the edit
    loaded = importlib.import_module("my_cached_builder")
    path = write_jsonl(tmp_path / "rows.jsonl", [{"text": "a"}])
    assert build_preference_dataset("test_cached", data_files=str(path), test_size=0).train["chosen"] == [
        [assistant("a1")]
    ]
    module.write_text(source.replace("VERSION", "2"))
    importlib.reload(loaded)
    assert build_preference_dataset("test_cached", data_files=str(path), test_size=0).train["chosen"] == [
        [assistant("a2")]
    ]
