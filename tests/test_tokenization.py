"""Rows → token ids: prefix property, EOS, implicit prompts, truncation rules, skips and bad-input errors."""

import logging

import pytest
from datasets import Dataset

from hf_dpo.tokens.tokenization import split_row, tokenize_dataset, tokenize_row


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_text_row_prefix_and_eos(char_tokenizer):
    out = tokenize_row(
        {"prompt": "Q: 2+2?", "chosen": " 4", "rejected": " 5"}, 0, char_tokenizer, None, None, None
    )
    assert out["prompt_ids"] == ids(char_tokenizer, "Q: 2+2?")
    assert out["chosen_ids"] == ids(char_tokenizer, " 4") + [char_tokenizer.eos_token_id]
    assert out["rejected_ids"][-1] == char_tokenizer.eos_token_id


def test_implicit_text_prompt_is_cut_at_whitespace():
    prompt, chosen, rejected = split_row(
        {
            "chosen": "\n\nHuman: hi\n\nAssistant: Sure thing",
            "rejected": "\n\nHuman: hi\n\nAssistant: Sure, no",
        },
        0,
    )
    assert prompt == "\n\nHuman: hi\n\nAssistant:"
    assert (chosen, rejected) == (" Sure thing", " Sure, no")


def test_implicit_conversational_prompt():
    user = {"role": "user", "content": "hi"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "a"}],
        "rejected": [user, {"role": "assistant", "content": "b"}],
    }
    prompt, chosen, rejected = split_row(row, 0)
    assert prompt == [user] and chosen["content"] == "a" and rejected["content"] == "b"


def test_truncation_keeps_prompt_end_then_cuts_completions(char_tokenizer):
    row = {"prompt": "abcdefghij", "chosen": "KLMNOP", "rejected": "xy"}
    out = tokenize_row(row, 0, char_tokenizer, None, max_length=8, max_prompt_length=4)
    assert out["prompt_ids"] == ids(char_tokenizer, "ghij")
    assert out["chosen_ids"] == ids(char_tokenizer, "KLMN")  # 4 + 4 = max_length; EOS cut off
    assert out["rejected_ids"] == ids(char_tokenizer, "xy") + [char_tokenizer.eos_token_id]


def test_prompt_filling_max_length_is_a_counted_skip(char_tokenizer, caplog):
    rows = [
        {"prompt": "p" * 20, "chosen": "a", "rejected": "b"},
        {"prompt": "ok", "chosen": "a", "rejected": "b"},
        {"prompt": "same", "chosen": "x", "rejected": "x"},
    ]
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        ds, skips = tokenize_dataset(
            Dataset.from_list(rows), char_tokenizer, None, max_length=10, max_prompt_length=None
        )
    assert len(ds) == 1 and ds[0]["prompt_ids"] == ids(char_tokenizer, "ok")
    assert skips == {"prompt_too_long": 1, "chosen_equals_rejected": 1}
    assert "skipped 2 of 3 train pairs" in caplog.text and "prompt_too_long=1" in caplog.text


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ({"prompt": "p", "chosen": "a"}, "rejected", "missing"),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "chosen", "empty"),
        ({"prompt": "p", "chosen": "a", "rejected": 3}, "rejected", "got int"),
        (
            {
                "prompt": [{"role": "user"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "prompt",
            "prompt[0] is missing 'content'",
        ),
        (
            {
                "prompt": [{"role": "human", "content": "q"}],
                "chosen": [{"role": "assistant", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "prompt",
            "prompt[0]['role'] must be one of ['system', 'user', 'assistant', 'tool'], got 'human'",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "q"}],
                "chosen": [{"role": "user", "content": "a"}],
                "rejected": [{"role": "assistant", "content": "b"}],
            },
            "chosen",
            "expected one assistant message",
        ),
        ({"prompt": "p", "chosen": "a", "rejected": []}, "rejected", "got an empty value"),
    ],
)
def test_bad_rows_name_row_field_and_fix(char_tokenizer, row, field, message):
    with pytest.raises(ValueError) as err:
        tokenize_row(row, 3, char_tokenizer, None, 64, 32)
    text = str(err.value)
    assert "row 3" in text and repr(field) in text and message in text and "Fix:" in text


def test_dataset_errors_report_the_global_row_index(char_tokenizer):
    rows = [{"prompt": "fine", "chosen": "a", "rejected": "b"}] * 1500 + [
        {"prompt": "p", "chosen": "", "rejected": "b"}
    ]
    with pytest.raises(ValueError, match="row 1500, field 'chosen'"):
        tokenize_dataset(Dataset.from_list(rows), char_tokenizer, None, 64, 32)


def test_empty_prompt_without_bos_is_a_clear_error(char_tokenizer):
    # implicit text prompt with nothing shared, and a tokenizer that adds no BOS: nothing to condition on
    with pytest.raises(ValueError, match=r"row 7, field 'prompt': the prompt encodes to no tokens"):
        tokenize_row({"chosen": "yes", "rejected": "no"}, 7, char_tokenizer, None, 64, 32)


def test_pairs_made_identical_by_truncation_are_skipped(char_tokenizer):
    row = {"prompt": "abc", "chosen": "same start A", "rejected": "same start B"}
    assert (
        tokenize_row(row, 0, char_tokenizer, None, max_length=8, max_prompt_length=4)
        == "chosen_equals_rejected"
    )
    assert isinstance(tokenize_row(row, 0, char_tokenizer, None, max_length=64, max_prompt_length=4), dict)
