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


def test_trl_named_collator_returns_trls_keys_shapes_and_padding():
    from hf_dpo import DataCollatorForPreference

    batch = DataCollatorForPreference(pad_token_id=0)(PAIRS)
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "completion_mask",
        "ref_chosen_logps",
        "ref_rejected_logps",
    }
    assert batch["input_ids"].tolist() == [
        [1, 5, 6, 7, 2, 0, 0],
        [1, 11, 12, 2, 0, 0, 0],
        [1, 5, 6, 8, 9, 10, 2],
        [1, 11, 13, 2, 0, 0, 0],
    ]
    assert batch["attention_mask"].sum(1).tolist() == [5, 4, 7, 4]
    assert batch["completion_mask"].tolist()[2] == [0, 0, 0, 1, 1, 1, 1]
    assert batch["ref_rejected_logps"].tolist() == [-2.5, -3.0]
    plain = [{k: p[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for p in PAIRS]
    assert set(DataCollatorForPreference(0)(plain)) == {"input_ids", "attention_mask", "completion_mask"}
    start = DataCollatorForPreference(0, max_length=4, pad_to_multiple_of=8)(plain)
    assert start["input_ids"].shape == (4, 8) and start["input_ids"][2, :4].tolist() == [1, 5, 6, 8]
    end = DataCollatorForPreference(0, max_length=3, truncation_mode="keep_end")(plain)
    assert end["input_ids"][2].tolist() == [9, 10, 2] and end["completion_mask"][2].tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="truncation_mode='middle'.*keep_start"):
        DataCollatorForPreference(0, truncation_mode="middle")


def test_trl_form_batch_scores_like_the_padded_layout(tiny_model):
    """as_pair_batch(TRL batch) gives the same targets and the same log-probs as hf_dpo's padded layout."""
    from hf_dpo import DataCollatorForPreference, sequence_logps
    from hf_dpo.batching.collator import as_pair_batch

    ours = DPODataCollator(0)(PAIRS)
    theirs = as_pair_batch(DataCollatorForPreference(0)(PAIRS))
    for key in (
        "input_ids",
        "attention_mask",
        "target_index",
        "target_ids",
        "target_seq",
        "ref_chosen_logps",
    ):
        assert torch.equal(ours[key], theirs[key]), key
    assert (ours["num_pairs"], ours["num_tokens"]) == (theirs["num_pairs"], theirs["num_tokens"])
    a, b = sequence_logps(tiny_model, ours), sequence_logps(tiny_model, theirs)
    assert torch.allclose(a.chosen_logps, b.chosen_logps) and torch.allclose(
        a.rejected_logps, b.rejected_logps
    )
    with pytest.raises(ValueError, match="neither hf_dpo's PairBatch keys.*completion_mask"):
        as_pair_batch({"input_ids": ours["input_ids"]})
