"""The first GPU call, in one command: install the benchmark packages the device lacks from local wheels, then
time TRL 1.16 and hf_dpo's layouts on one GPU, rewriting the JSON after every run (a timeout keeps what
finished). Needs nothing outside the repository: random-init model, synthetic token ids, stand-in tokenizer.

Runs, in this order (each a fresh subprocess, ``bench_vs_trl.worker``, same model, data and batch):
TRL default (gradient checkpointing on, as TRL ships), hf_dpo ``auto`` on sdpa (prefix_shared), packed and
padded on sdpa, TRL with gradient checkpointing off, then prefix_shared (block mask), packed and padded on
flex_attention (skipped, with the reason, where the backend cannot run them: any flex run on CPU), then the
flex gradient-exactness tests (``tests/test_flex_attention.py``, CUDA only; result under ``flex_exactness``).
Per run: pairs/s, real tokens/s, peak memory, executed FLOPs per step (``benchmarks/flops.py``), achieved
TFLOP/s, MFU (bf16, H100/H200/A100), and step-1/step-2 agreement with TRL's default run.

    python benchmarks/gpu_run.py --out $OUT/gpu_run.json          # GPU, about 5-7 minutes
    python benchmarks/gpu_run.py --smoke --out /tmp/gpu_smoke.json  # CPU: micro shape, 1 step per run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_vs_trl import mfu, run_one
from synthetic import PROFILES, SHAPES, make_pairs, model_config, save_model

ROOT = Path(__file__).resolve().parents[1]
# Distributions the runs import besides torch (pinned where the comparison depends on the version).
REQUIRED = {
    "trl": "1.16.0",
    "datasets": None,
    "transformers": None,
    "accelerate": None,
    "peft": None,
}
# (name, trainer, requested layout, attention backend, gradient checkpointing)
PLAN = (
    ("trl default", "trl", None, "sdpa", True),
    ("hf_dpo auto (sdpa)", "hf_dpo", "auto", "sdpa", False),
    ("hf_dpo packed (sdpa)", "hf_dpo", "packed", "sdpa", False),
    ("hf_dpo padded (sdpa)", "hf_dpo", "padded", "sdpa", False),
    ("trl, gradient checkpointing off", "trl", None, "sdpa", False),
    ("hf_dpo prefix_shared (flex)", "hf_dpo", "prefix_shared", "flex_attention", False),
    ("hf_dpo packed (flex)", "hf_dpo", "packed", "flex_attention", False),
    ("hf_dpo padded (flex)", "hf_dpo", "padded", "flex_attention", False),
)


def missing_packages() -> list[str]:
    """Requirement strings of ``REQUIRED`` that are absent or at another pinned version."""
    missing = []
    for name, pin in REQUIRED.items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = None
        if found is None or (pin and found != pin):
            missing.append(f"{name}=={pin}" if pin else name)
    return missing


def install(wheels: Path) -> dict[str, Any]:
    """pip-install the missing packages from ``wheels`` only (no index); their dependencies must be installed
    already or be wheels there too (see docs/performance.md for the download command)."""
    missing = missing_packages()
    if not missing:
        return {"missing": [], "installed": True}
    if not wheels.is_dir():
        return {"missing": missing, "installed": False, "error": f"no wheel folder {wheels}"}
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), *missing]
    done = subprocess.run(cmd, capture_output=True, text=True)
    return {
        "missing": missing,
        "installed": done.returncode == 0,
        "pip_tail": (done.stdout + done.stderr)[-2000:],
    }


def environment() -> dict[str, Any]:
    import torch

    versions = {}
    for name in ("torch", *REQUIRED):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(),
        "versions": versions,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores)",
        "gpus": torch.cuda.device_count(),
    }


def skip_reason(shape: str, layout: str | None, attn: str) -> str | None:
    """Why a planned run cannot run here (None if it can): hf_dpo's own layout support for the backend,
    decided on a weightless (meta) model, and flex_attention's lack of a CPU backward."""
    import torch

    if attn == "flex_attention" and not torch.cuda.is_available():
        return "flex_attention has no backward on CPU"
    if layout in (None, "auto"):
        return None
    from transformers import AutoModelForCausalLM

    from hf_dpo.batching.attention import layout_support

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config(shape, attn))
    return layout_support(model)[layout]


def write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def summarize(runs: list[dict[str, Any]], pairs_per_step: int, tokens_per_step: float, dtype: str) -> None:
    """Derived columns of the finished runs: pairs/s, tokens/s, MFU, ratios and differences to TRL default."""
    done = [r for r in runs if "median_step_s" in r]
    for r in done:
        r["pairs_per_s"] = pairs_per_step / r["median_step_s"]
        r["tokens_per_s"] = tokens_per_step / r["median_step_s"]
        r["mfu"] = mfu(r, dtype)
    base = next((r for r in done if r["name"] == PLAN[0][0]), None)
    if base is None:
        return
    for r in done:
        r["pairs_per_s_vs_trl_default"] = r["pairs_per_s"] / base["pairs_per_s"]
        r["flops_per_step_vs_trl_default"] = r["flops_per_step"] / base["flops_per_step"]
        for key in ("step1_logps_chosen", "step2_loss"):
            if r.get(key) is not None and base.get(key) is not None:
                r[f"{key}_diff_vs_trl"] = abs(r[key] - base[key])


def render(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| run | layout | pairs/s | real tokens/s | vs TRL default | peak GiB | TFLOPs/step | TFLOP/s "
        "| MFU |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        if "median_step_s" not in r:
            status = r.get("skipped") or r.get("error", "?").strip().splitlines()[-1][:120]
            lines.append(f"| {r['name']} | {status} |" + " |" * 7)
            continue
        ratio = r.get("pairs_per_s_vs_trl_default")
        mfu_cell = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        lines.append(
            f"| {r['name']} | {r['layout']} | {r['pairs_per_s']:.2f} | {r['tokens_per_s']:.0f} "
            f"| {'-' if ratio is None else f'{ratio:.2f}x'} | {r['peak_gib']:.2f} "
            f"| {r['flops_per_step'] / 1e12:.3g} | {r['achieved_tflops']:.3g} "
            f"| {mfu_cell} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_run.json", help="JSON results, rewritten after every run")
    parser.add_argument(
        "--smoke", action="store_true", help="CPU check: micro shape, short sequences, 1 step"
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="uniform")
    parser.add_argument("--length-scale", type=float, default=1.0)
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=15, help="optimizer steps per run, warm-up included")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--budget-s", type=float, default=450, help="stop starting runs after this (s)")
    parser.add_argument("--wheels", default=str(ROOT / ".whl"), help="folder of wheels to install from")
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    if cli.smoke:
        cli.shape, cli.length_scale, cli.steps, cli.warmup, cli.dtype = "micro", 0.05, 1, 0, "fp32"
    start = time.perf_counter()
    out = Path(cli.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"settings": vars(cli), "install": install(Path(cli.wheels))}
    payload["environment"] = environment()
    payload["runs"] = runs = []
    write_json(out, payload)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

    with tempfile.TemporaryDirectory() as tmp:
        save_model(cli.shape, f"{tmp}/model", cli.seed)
        vocab = model_config(cli.shape).vocab_size
        pairs = make_pairs(cli.profile, cli.pairs_per_step * cli.steps, cli.length_scale, vocab, cli.seed)
        Path(f"{tmp}/data.json").write_text(json.dumps(pairs))
        tokens = sum(len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) for p in pairs)
        tokens_per_step = tokens / cli.steps
        payload["tokens_per_step"] = tokens_per_step
        for name, impl, layout, attn, gc in PLAN:
            left = cli.budget_s - (time.perf_counter() - start)
            reason = skip_reason(cli.shape, layout, attn)
            if reason is None and left < 30:
                reason = f"out of time ({left:.0f} s left)"
            if reason:
                runs.append({"name": name, "skipped": reason})
            else:
                spec = dict(
                    model=f"{tmp}/model",
                    data=f"{tmp}/data.json",
                    dtype=cli.dtype,
                    attn=attn,
                    batch=cli.pairs_per_step,
                    steps=cli.steps,
                    warmup=cli.warmup,
                    gc=gc,
                    seed=cli.seed,
                    out=f"{tmp}/out",
                    impl=impl,
                    layout=layout,
                    name=name,
                )
                t0 = time.perf_counter()
                result = run_one(spec, timeout_s=left)
                runs.append({"name": name, "requested": layout or "-", "attn": attn, "gc": gc, **result})
                runs[-1]["wall_s"] = time.perf_counter() - t0
            summarize(runs, cli.pairs_per_step, tokens_per_step, cli.dtype)
            payload["elapsed_s"] = time.perf_counter() - start
            write_json(out, payload)
            status = runs[-1].get("skipped") or runs[-1].get("error", "ok").strip().splitlines()[-1][:200]
            print(f"[{payload['elapsed_s']:.0f} s] {name}: {status}", file=sys.stderr, flush=True)
    payload["flex_exactness"] = flex_exactness(cli.budget_s - (time.perf_counter() - start))
    payload["elapsed_s"] = time.perf_counter() - start
    write_json(out, payload)
    print(render(runs))
    print(f"flex exactness: {payload['flex_exactness']['status']}")


def flex_exactness(left_s: float) -> dict[str, Any]:
    """Run the flex_attention gradient-equality tests (they skip themselves without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return {"status": "skipped: no CUDA (flex_attention has no backward on CPU)"}
    if left_s < 45:
        return {"status": f"skipped: out of time ({left_s:.0f} s left)"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_flex_attention.py"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=left_s)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {left_s:.0f} s"}
    tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
    return {"status": "passed" if done.returncode == 0 else f"failed (rc {done.returncode})", "tail": tail}


if __name__ == "__main__":
    main()
