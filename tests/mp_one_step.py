"""Helper for test_multiprocess.py: one DPO optimizer step on 4 fixed pairs; rank 0 saves params and logs.

python tests/mp_one_step.py OUT PER_DEVICE_BATCH
accelerate launch --cpu --num_processes 2 tests/mp_one_step.py OUT 2
"""

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dpo import DPOConfig, DPOTrainer

out, per_device = Path(sys.argv[1]), int(sys.argv[2])
model_dir = (
    Path(__file__).resolve().parents[1].parent / "shared" / "models" / "tiny-random-llama-smollm2-tokenizer"
)
pairs = Dataset.from_list(
    [
        {"prompt": "What is 2 + 2?", "chosen": " 4.", "rejected": " 5, I think."},
        {"prompt": "Name a colour.", "chosen": " Blue is a colour.", "rejected": " Seven."},
        {"prompt": "Say hi in French, please.", "chosen": " Bonjour!", "rejected": " Hello there, friend!"},
        {"prompt": "Capital of Italy?", "chosen": " Rome.", "rejected": " Paris, of course."},
    ]
)
args = DPOConfig(
    output_dir=str(out / "trainer"),
    max_steps=1,
    per_device_train_batch_size=per_device,
    learning_rate=0.5,
    optim="sgd",
    lr_scheduler_type="constant",
    logging_steps=1,
    save_strategy="no",
    report_to="none",
    seed=0,
    dataloader_pin_memory=False,
    disable_tqdm=True,
    max_grad_norm=0.0,
    batch_layout="padded",
    use_cpu=True,
)
trainer = DPOTrainer(
    AutoModelForCausalLM.from_pretrained(model_dir),
    args=args,
    train_dataset=pairs,
    processing_class=AutoTokenizer.from_pretrained(model_dir),
)
trainer.train()
if trainer.is_world_process_zero():
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}, out / "params.pt")
    (out / "log.json").write_text(json.dumps(trainer.state.log_history))
