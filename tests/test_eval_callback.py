"""EndOfTrainingEval: the heavier evaluation tasks run once at the end of DPOTrainer.train()."""

import copy
import json

from conftest import make_char_tokenizer, make_tiny_llama
from datasets import Dataset

from hf_dpo import DPOConfig, DPOTrainer
from hf_dpo.eval import EndOfTrainingEval


def test_end_of_training_eval_writes_results(tmp_path):
    tok = make_char_tokenizer()
    model = make_tiny_llama(len(tok))
    reference = copy.deepcopy(model).eval()
    rows = [{"prompt": f"{a}+1=", "chosen": f"{a + 1}", "rejected": f"{a + 2}"} for a in range(8)]
    callback = EndOfTrainingEval(
        tasks=["preference", "generation"],
        reference=reference,
        max_new_tokens=4,
        bootstrap_samples=20,
        run_config={
            "dataset": "arithmetic",
            "dataset_options": {"num_train": 2, "num_test": 3},
            "dpo_beta": 0.1,
        },
    )
    args = DPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model,
        ref_model=reference,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=[callback],
    )
    trainer.train()
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["preference"]["num_pairs"] == 3
    # trained for 2 steps at a high learning rate: the policy moved away from its reference
    assert abs(results["preference"]["log_ratio"]["value"]) > 0
    assert "exact_match/policy" in results["generation"]
    assert callback.results["output_dir"] == str(tmp_path / "eval")
