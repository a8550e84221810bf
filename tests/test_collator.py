"""The padded layout: row order, masks, scored positions, pad_to_multiple_of, missing pad token."""

import pytest
import torch

from hf_dpo.batching.collator import DPODataCollator, pad_token_id_for

PAIRS = [
    {
        "prompt_ids": [1, 5, 6],
        "chosen_ids": [7, 2],
        "rejected_ids": [8, 9, 10, 2],
        "ref_chosen_logps": -1.5,
        "ref_rejected_logps": -2.5,
    },
    {
        "prompt_ids": [1, 11],
        "chosen_ids": [12, 2],
        "rejected_ids": [13, 2],
        "ref_chosen_logps": -0.5,
        "ref_rejected_logps": -3.0,
    },
]


def test_padded_layout_contract():
    batch = DPODataCollator(pad_token_id=0)(PAIRS)
    assert batch["num_pairs"] == 2
    ids = batch["input_ids"]
    assert ids.shape == (4, 7)  # rows: chosen_1, chosen_2, rejected_1, rejected_2; longest = 3 + 4
    assert ids[0].tolist() == [1, 5, 6, 7, 2, 0, 0]
    assert ids[2].tolist() == [1, 5, 6, 8, 9, 10, 2]
    assert batch["attention_mask"].sum(1).tolist() == [5, 4, 7, 4]
    assert batch["num_tokens"] == 20
    flat = ids.flatten()
    # each scored position is the one *before* its target token, in the same row
    assert torch.equal(flat[batch["target_index"] + 1], batch["target_ids"])
    assert batch["target_seq"].tolist() == [0, 0, 1, 1, 2, 2, 2, 2, 3, 3]
    assert batch["ref_chosen_logps"].tolist() == [-1.5, -0.5]


def test_pad_to_multiple_of_and_pad_id():
    batch = DPODataCollator(pad_token_id=99, pad_to_multiple_of=8)(PAIRS)
    assert batch["input_ids"].shape[1] == 8
    assert batch["input_ids"][1, -1].item() == 99


def test_pad_token_fallbacks():
    class Tok:
        pad_token_id = None
        eos_token_id = 7

    assert pad_token_id_for(Tok()) == 7
    Tok.eos_token_id = None
    assert pad_token_id_for(Tok()) == 0


def test_untokenized_features_give_a_clear_error():
    with pytest.raises(ValueError, match="needs tokenized pairs"):
        DPODataCollator(0)([{"prompt": "a", "chosen": "b", "rejected": "c"}])


def test_empty_prompt_is_refused_rather_than_scored_from_another_row():
    pairs = [
        {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4]},
        {"prompt_ids": [], "chosen_ids": [5], "rejected_ids": [6]},
    ]
    with pytest.raises(ValueError, match="empty prompt_ids"):
        DPODataCollator(0)(pairs)
