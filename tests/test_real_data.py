"""Smoke run on 32 real Anthropic HH-RLHF rows with the shared tiny model (real SmolLM2 tokenizer)."""

import math

import pytest
from conftest import HH_RLHF, TINY_MODEL, require_shared
from datasets import load_dataset

from hf_dpo import DPOConfig, DPOTrainer


def test_hh_rlhf_smoke_run(tmp_path):
    require_shared(HH_RLHF)
    require_shared(TINY_MODEL)
    rows = load_dataset("json", data_files=str(HH_RLHF), split="train").select(range(40))
    args = DPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=3,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        max_length=256,
        max_prompt_length=192,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        str(TINY_MODEL),
        args=args,
        train_dataset=rows.select(range(32)),
        eval_dataset=rows.select(range(32, 40)),
    )
    # implicit prompt: every transcript ends with an assistant reply, so the prompt ends with "Assistant:"
    first = trainer.train_dataset[0]
    prompt_text = trainer.processing_class.decode(first["prompt_ids"])
    assert prompt_text.rstrip().endswith("Assistant:")
    assert first["chosen_ids"] != first["rejected_ids"]
    before = trainer.evaluate()
    assert before["eval_dpo_loss"] == pytest.approx(math.log(2), abs=1e-6)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "dpo_loss" in h]
    assert len(logs) == 3 and all(math.isfinite(h["dpo_loss"]) for h in logs)
    assert logs[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)  # policy == reference at step 0
    assert 0 < before["test/nll"] < 20
