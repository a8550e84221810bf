"""TRL's DPO example script (``trl/scripts/dpo.py``, its Trainer API part) with one line changed: the import.

    python examples/trl_dpo_example.py \\
        --dataset_name trl-lib/ultrafeedback_binarized \\
        --model_name_or_path Qwen/Qwen2-0.5B-Instruct \\
        --learning_rate 5.0e-7 \\
        --num_train_epochs 1 \\
        --per_device_train_batch_size 2 \\
        --max_steps 1000 \\
        --gradient_accumulation_steps 8 \\
        --eval_strategy steps \\
        --eval_steps 50 \\
        --output_dir Qwen2-0.5B-DPO \\
        --no_remove_unused_columns

Add ``--use_peft --lora_r 32 --lora_alpha 16`` for LoRA. Offline, ``--dataset_name`` may be a local folder of
``train.jsonl`` / ``test.jsonl`` files and ``--model_name_or_path`` a local checkpoint (tests/test_examples.py
runs it that way on the tiny model in ../shared). TRL's ``ModelConfig`` / ``TrlParser`` are replaced by the
few fields used here, so the script needs only ``transformers``, ``datasets`` and ``peft``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets import load_dataset
from transformers import HfArgumentParser

from hf_dpo import DPOConfig, DPOTrainer  # was: from trl import DPOConfig, DPOTrainer


@dataclass
class ScriptArguments:
    """The script-level arguments of TRL's ``ScriptArguments`` and ``ModelConfig`` that this script uses."""

    dataset_name: str = field(metadata={"help": "Hub dataset id or local folder of data files."})
    model_name_or_path: str = field(metadata={"help": "Hub model id or local checkpoint."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str = field(default="test", metadata={"help": "Split to evaluate on."})
    dataset_streaming: bool = field(default=False, metadata={"help": "Stream the dataset."})
    dtype: str | None = field(
        default=None, metadata={"help": "Model dtype, e.g. bfloat16 (default float32)."}
    )
    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})


def get_peft_config(script_args: ScriptArguments):
    if not script_args.use_peft:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=script_args.lora_r,
        lora_alpha=script_args.lora_alpha,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )


def main(script_args: ScriptArguments, training_args: DPOConfig) -> None:
    model_init_kwargs = {"dtype": script_args.dtype} if script_args.dtype else {}
    if training_args.model_init_kwargs is not None:
        model_init_kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = model_init_kwargs

    # Load the dataset
    dataset = load_dataset(
        script_args.dataset_name, name=script_args.dataset_config, streaming=script_args.dataset_streaming
    )

    # Initialize the DPO trainer
    trainer = DPOTrainer(
        model=script_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset[script_args.dataset_train_split],
        eval_dataset=dataset[script_args.dataset_test_split] if training_args.eval_strategy != "no" else None,
        peft_config=get_peft_config(script_args),
    )

    # Train the model
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.accelerator.print("Training completed.")

    # Save and push to Hub
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)


if __name__ == "__main__":
    parser = HfArgumentParser((ScriptArguments, DPOConfig))
    script_args, training_args = parser.parse_args_into_dataclasses()
    main(script_args, training_args)
