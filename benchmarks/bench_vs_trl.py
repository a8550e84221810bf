"""Side-by-side DPO training benchmark: hf_dpo (each batch layout) vs TRL's DPOTrainer, in one invocation.

Both trainers get the same random-init model (saved once, loaded by each run), the same synthetic token data
(identical token ids: TRL's text preprocessing is bypassed), the same batch, dtype, attention backend and
gradient-checkpointing setting, and a frozen-copy reference model. Each run is a separate subprocess, so peak
memory is per run (GPU: ``torch.cuda.max_memory_allocated``; CPU: peak RSS of the process).

Reported per run: median step time (wall time between consecutive optimizer steps, data loading and
collation included, warm-up steps excluded), pairs/s, real tokens/s (prompt + chosen + rejected of each pair,
each token counted once, the same numerator for every run), peak memory, the hf_dpo/TRL pairs/s ratio, MFU on
GPU (the executed FLOPs of each measured step from ``benchmarks/flops.py``, over the bf16 dense peak), and the
correctness check: step-1 mean policy log-probs and step-2 loss (after one identical AdamW step) of each
hf_dpo layout against TRL (the step-1 loss is ln 2 for every pair since policy = reference: a weak check).

    pip install trl==1.16.0   # benchmark-only dependency (extra ``bench``)
    python benchmarks/bench_vs_trl.py --shape tiny --length-scale 0.25 --steps 6      # CPU, toy shape
    python benchmarks/bench_vs_trl.py --shape smollm2-135m --profiles hh --steps 6    # CPU, a real shape
    python benchmarks/bench_vs_trl.py --shape qwen2.5-0.5b --dtype bf16 --steps 20     # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from synthetic import PROFILES, SHAPES, make_pairs, model_config, save_model, standin_tokenizer

LAYOUTS = ("padded", "packed", "prefix_shared")
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


# ---- one run (subprocess) ----------------------------------------------------------------------------------


def worker(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback

    cuda = torch.cuda.is_available()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    pairs = json.loads(Path(spec["data"]).read_text())
    dataset = Dataset.from_list(pairs)
    tokenizer = standin_tokenizer()

    def load():
        return AutoModelForCausalLM.from_pretrained(
            spec["model"], dtype=dtype, attn_implementation=spec["attn"]
        )

    common = dict(
        output_dir=spec["out"],
        per_device_train_batch_size=spec["batch"],
        max_steps=spec["steps"],
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=spec["gc"],
        use_cpu=not cuda,
        seed=spec["seed"],
        dataloader_num_workers=0,
        disable_tqdm=True,
        beta=0.1,
        max_length=None,
        remove_unused_columns=False,
    )

    class Probe(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.cpu: list[float] = []
            self.logs: list[dict] = []

        def on_train_begin(self, *args, **kwargs):
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def on_step_end(self, *args, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.logs.append(dict(logs))

    probe = Probe()
    if spec["impl"] == "trl":
        import trl

        class TokenizedDPOTrainer(trl.DPOTrainer):
            """TRL's trainer fed the same token ids (its text preprocessing skipped; its collator is used)."""

            def _prepare_dataset(self, dataset, *args, **kwargs):
                return dataset

        args = (
            trl.DPOConfig(**common, max_prompt_length=None)
            if "max_prompt_length" in trl.DPOConfig.__dataclass_fields__
            else trl.DPOConfig(**common)
        )
        trainer = TokenizedDPOTrainer(
            model=load(),
            ref_model=load(),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[probe],
        )
        layout = "trl"
    else:
        from hf_dpo import DPOConfig, DPOTrainer

        args = DPOConfig(**common, max_prompt_length=None, batch_layout=spec["layout"])
        trainer = DPOTrainer(
            model=load(),
            ref_model=load(),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[probe],
        )
        layout = trainer.data_collator.layout.name
        row_tokens = getattr(trainer.data_collator.layout, "row_tokens", None)
        layout += f"[{row_tokens}]" if row_tokens else ""
    recorder = RecordingCollator(trainer.data_collator)
    trainer.data_collator = recorder
    if spec.get("profile_dir"):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            trainer.train()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        Path(spec["profile_dir"], f"{spec['name']}.txt").write_text(table)
    else:
        trainer.train()
    steps = [b - a for a, b in zip(probe.ends, probe.ends[1:], strict=False)][spec["warmup"] :]
    cpu_steps = [b - a for a, b in zip(probe.cpu, probe.cpu[1:], strict=False)][spec["warmup"] :]
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    # Executed FLOPs of the measured steps (outside the timed loop): step i ran on the i-th collated batch.
    from flops import run_flops

    measured = recorder.batches[spec["warmup"] : len(probe.ends) - 1]
    step_flops = run_flops(
        trainer.model,
        measured,
        None if spec["impl"] == "trl" else trainer.data_collator.inner.layout,
        attention="flex" if spec["attn"] == "flex_attention" else "dense",
        gradient_checkpointing=spec["gc"],
        trl_scored=trl_scored(cuda),
        device="cuda" if cuda else "cpu",
    )
    logps_key = "logps/chosen"
    return {
        "flops_per_step": statistics.mean(step_flops),
        "achieved_tflops": sum(step_flops) / sum(steps) / 1e12,
        "layout": layout,
        "median_step_s": statistics.median(steps),
        "median_step_cpu_s": statistics.median(cpu_steps),
        "step1_loss": probe.logs[0]["loss"],
        "peak_gib": peak,
        "step1_logps_chosen": probe.logs[0].get(logps_key),
        "step1_logps_rejected": probe.logs[0].get("logps/rejected"),
        "step2_loss": probe.logs[1]["loss"] if len(probe.logs) > 1 else None,
        "device": torch.cuda.get_device_name()
        if cuda
        else f"CPU ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})",
    }


class RecordingCollator:
    """Wraps a trainer's collator and keeps the token ids of every batch it collates, in order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches: list[list[dict[str, list[int]]]] = []

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        keys = ("prompt_ids", "chosen_ids", "rejected_ids")
        self.batches.append([{k: list(f[k]) for k in keys} for f in features])
        return self.inner(features)


def trl_scored(cuda: bool) -> str:
    """Where TRL 1.16's fused LM head runs: completion positions with Triton (GPUs), else every position."""
    try:
        from trl.kernels.chunked_logprob import _use_triton

        return "completion" if _use_triton(torch_device(cuda)) else "all"
    except ImportError:
        return "completion" if cuda else "all"


def torch_device(cuda: bool) -> Any:
    import torch

    return torch.device("cuda" if cuda else "cpu")


# ---- driver ------------------------------------------------------------------------------------------------


def run_one(spec: dict, timeout_s: float | None = None) -> dict:
    """Run ``worker(spec)`` in a fresh subprocess; ``{"error": ...}`` on failure or after ``timeout_s``."""
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timeout: killed after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--profiles", default="uniform,hh,uf", help=f"comma list of {', '.join(PROFILES)}")
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--length-scale", type=float, default=1.0, help="multiply all lengths (CPU: 0.25)")
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=1, help="steps left out of the median")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--attn", default="sdpa", help="attn_implementation for both trainers")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads per run (default: torch's)"
    )
    parser.add_argument("--profile-dir", default=None, help="write a torch.profiler table per run here")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.worker:
        print(json.dumps(worker(json.loads(cli.worker))))
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        save_model(cli.shape, f"{tmp}/model", cli.seed)
        n_params = _num_params(f"{tmp}/model")
        vocab = model_config(cli.shape).vocab_size  # token ids only: no tokenizer vocabulary involved
        for profile in cli.profiles.split(","):
            pairs = make_pairs(profile, cli.pairs_per_step * cli.steps, cli.length_scale, vocab, cli.seed)
            data = f"{tmp}/{profile}.json"
            Path(data).write_text(json.dumps(pairs))
            tokens_per_step = (
                sum(len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
                / cli.steps
            )
            base = dict(
                model=f"{tmp}/model",
                data=data,
                dtype=cli.dtype,
                attn=cli.attn,
                batch=cli.pairs_per_step,
                steps=cli.steps,
                warmup=cli.warmup,
                gc=cli.gradient_checkpointing,
                seed=cli.seed,
                out=f"{tmp}/out",
                profile_dir=cli.profile_dir,
                threads=cli.threads,
            )
            runs = [("trl", None)] + [("hf_dpo", layout) for layout in cli.layouts.split(",")]
            rows = {}
            for impl, layout in runs:
                name = f"{profile}-{impl}-{layout or 'trl'}"
                t0 = time.perf_counter()
                res = run_one({**base, "impl": impl, "layout": layout, "name": name})
                res.update(
                    profile=profile,
                    impl=impl,
                    requested=layout or "-",
                    wall_s=time.perf_counter() - t0,
                    tokens_per_step=tokens_per_step,
                )
                if "error" not in res:
                    res["pairs_per_s"] = cli.pairs_per_step / res["median_step_s"]
                    res["pairs_per_cpu_s"] = cli.pairs_per_step / res["median_step_cpu_s"]
                    res["tokens_per_s"] = tokens_per_step / res["median_step_s"]
                    res["mfu"] = mfu(res, cli.dtype)
                rows[name] = res
                results.append(res)
                print(
                    f"[{time.strftime('%H:%M:%S')}] {name}: "
                    + (
                        res["error"].splitlines()[-1]
                        if "error" in res
                        else f"{res['median_step_s']:.3f} s/step"
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            trl_row = rows[f"{profile}-trl-trl"]
            for res in rows.values():
                if "error" in res or "error" in trl_row:
                    continue
                res["ratio_vs_trl"] = res["pairs_per_s"] / trl_row["pairs_per_s"]
                res["cpu_ratio_vs_trl"] = res["pairs_per_cpu_s"] / trl_row["pairs_per_cpu_s"]
                for key in ("step1_loss", "step1_logps_chosen", "step1_logps_rejected", "step2_loss"):
                    if res.get(key) is not None and trl_row.get(key) is not None:
                        res[f"{key}_diff"] = abs(res[key] - trl_row[key])
    print(render(results, cli, n_params))
    if cli.json:
        Path(cli.json).write_text(json.dumps(results, indent=1))


def mfu(result: dict, dtype: str) -> float | None:
    """Model FLOPs utilization: executed FLOPs per second (``benchmarks/flops.py``) over the GPU's dense bf16
    peak; None off GPU, in fp32 or on an unlisted GPU."""
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in result.get("device", "")), None)
    return result["achieved_tflops"] * 1e12 / peak if peak and dtype == "bf16" else None


def _num_params(path: str) -> int:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def render(results: list[dict], cli: argparse.Namespace, n_params: int) -> str:
    device = next((r["device"] for r in results if "device" in r), "?")
    mem = "peak GPU mem GiB" if "CPU" not in device else "peak RSS GiB"
    lines = [
        f"shape={cli.shape} ({n_params / 1e6:.1f}M params), dtype={cli.dtype}, attn={cli.attn}, "
        f"gradient_checkpointing={cli.gradient_checkpointing}, {cli.pairs_per_step} pairs/step, "
        f"length_scale={cli.length_scale}, steps={cli.steps} (median of the last {cli.steps - cli.warmup}), "
        f"device: {device}",
        "",
        "| profile | trainer | layout | step s (wall) | pairs/s | real tokens/s | vs TRL (wall) | step CPU-s "
        f"| vs TRL (CPU) | {mem} | executed TFLOP/s | MFU | Δ step-1 loss | Δ step-1 logps/chosen "
        "| Δ step-2 loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            last = r["error"].strip().splitlines()[-1][:100]
            lines.append(f"| {r['profile']} | {r['impl']} | {r['requested']} | error: {last} |" + " |" * 11)
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "-"

        diffs = [
            "-" if r["impl"] == "trl" or r.get(f"{k}_diff") is None else f"{r[f'{k}_diff']:.1e}"
            for k in ("step1_loss", "step1_logps_chosen", "step2_loss")
        ]
        wall_ratio, cpu_ratio = r.get("ratio_vs_trl", float("nan")), r.get("cpu_ratio_vs_trl", float("nan"))
        cells = [
            r["profile"],
            r["impl"],
            r["layout"],
            f"{r['median_step_s']:.2f}",
            f"{r['pairs_per_s']:.2f}",
            f"{r['tokens_per_s']:.0f}",
            f"{wall_ratio:.2f}x",
            f"{r['median_step_cpu_s']:.2f}",
            f"{cpu_ratio:.2f}x",
            f"{r['peak_gib']:.2f}",
            f"{r['achieved_tflops']:.3g}",
            mfu,
            *diffs,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
