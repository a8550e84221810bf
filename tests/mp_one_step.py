"""Helper for test_multiprocess.py: one DPO optimizer step on 4 fixed pairs; rank 0 saves params and logs.

python tests/mp_one_step.py OUT PER_DEVICE_BATCH [ddp|fsdp2]
accelerate launch --multi_gpu --num_processes 2 tests/mp_one_step.py OUT 2 [ddp|fsdp2]

``fsdp2``: FULL_SHARD with FSDP2 (policy and reference sharded per decoder layer) on CPU + gloo, the CI proxy
for multi-GPU FSDP (see ``fsdp_on_cpu``).
"""

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dpo import DPOConfig, DPOTrainer


def fsdp_on_cpu() -> None:
    """Test-only: let accelerate run FSDP on CPU processes (gloo).

    ``AcceleratorState`` turns an ``fsdp_plugin`` into ``DistributedType.FSDP`` only for GPU-like backends;
    on CPU it stays ``MULTI_CPU`` and the plugin is dropped. FSDP2's ``fully_shard`` itself works on CPU with
    gloo, so after the state is set up we apply the same switch for ``MULTI_CPU``.
    """
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = init


out, per_device = Path(sys.argv[1]), int(sys.argv[2])
mode = sys.argv[3] if len(sys.argv) > 3 else "ddp"
sharding = {}
if mode == "fsdp2":
    fsdp_on_cpu()
    sharding = {
        "fsdp": True,
        "fsdp_config": {
            "version": 2,
            "reshard_after_forward": True,  # FULL_SHARD
            "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
        },
    }
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
    **sharding,
)
trainer = DPOTrainer(
    AutoModelForCausalLM.from_pretrained(model_dir),
    args=args,
    train_dataset=pairs,
    processing_class=AutoTokenizer.from_pretrained(model_dir),
)
if mode == "fsdp2" and trainer.args.world_size > 1:
    assert trainer.is_fsdp_enabled and trainer.accelerator.is_fsdp2, "FSDP2 was not enabled"
trainer.train()
if mode == "fsdp2" and trainer.args.world_size > 1:  # after its forwards, every reference weight is a shard
    whole = [n for n, p in trainer.reference.model.named_parameters() if type(p).__name__ != "DTensor"]
    assert not whole, f"reference parameters left unsharded after the forward: {whole}"
# Full weights on every rank (FSDP2 holds DTensor shards; full_tensor() is a collective).
state = {k: getattr(v, "full_tensor", lambda v=v: v)() for k, v in trainer.model.state_dict().items()}
if trainer.is_world_process_zero():
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in state.items()}, out / "params.pt")
    (out / "log.json").write_text(json.dumps(trainer.state.log_history))
