"""On-policy DPO: rounds of sample -> judge -> pair -> train, each from the policy the last round left.
Files in ``log_path/round-<r>/`` (docs/on_policy.md); ``metrics.jsonl`` gets one row per round (0: before)."""

from __future__ import annotations

import copy
import dataclasses
import gc
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import PartialState
from datasets import Dataset
from peft import PeftModel

from hf_dpo.eval.generation import DecodingConfig
from hf_dpo.modeling.adapters import is_quantized
from hf_dpo.modeling.loading import load_causal_lm
from hf_dpo.objective.losses import needs_reference
from hf_dpo.on_policy.config import OnPolicyOptions
from hf_dpo.on_policy.judges import GroupJudge, JudgeError, make_judge
from hf_dpo.on_policy.pairs import pick_pairs
from hf_dpo.on_policy.prompts import PromptSet, encode_prompts, load_prompt_rows, round_indices
from hf_dpo.on_policy.sampling import SampledGroups, sample_groups
from hf_dpo.run.checkpoints import newest_resumable_checkpoint
from hf_dpo.run.console import metrics_table
from hf_dpo.run.hub import push_run
from hf_dpo.run.model_card import write_model_card
from hf_dpo.run.outputs import read_metrics, write_plots
from hf_dpo.run.signals import TrainingInterrupted
from hf_dpo.tokens.tokenization import select_renderer

logger = logging.getLogger("hf_dpo")

PAIRS_FILE = "pairs.jsonl"
GENERATION_FILE = "generation.json"
HELDOUT_FILE = "heldout.jsonl"
DONE_FILE = "done.json"
POLICY_DIR = "policy"
METRICS_FILE = "metrics.jsonl"


def round_dir(log_path: str | Path, round_number: int) -> Path:
    return Path(log_path) / f"round-{round_number}"


@dataclass
class OnPolicySetup:
    """What the rounds need besides the model: options, encoded train / held-out prompts, the judge."""

    options: OnPolicyOptions
    train: PromptSet
    heldout: PromptSet
    judge: GroupJudge


def setup_on_policy(config: Any, args: Any, tokenizer: Any) -> OnPolicySetup:
    """Check ``on_policy`` vs the run, load prompts and judge; errors (ValueError, OSError) say how to fix."""
    options: OnPolicyOptions = config.on_policy
    if config.peft is not None and options.reference_update == "round":
        raise ValueError(
            "on_policy.reference_update=round needs a separate reference model, but with LoRA (peft) the "
            "reference is the base with adapters disabled (the initial model); use reference_update=initial "
            "or drop the peft section"
        )
    if options.generation_backend == "vllm" and config.peft is not None:
        raise ValueError("on_policy.generation_backend=vllm samples full models; drop peft or use backend hf")
    if args.fsdp or args.deepspeed:
        raise ValueError(
            "on-policy DPO samples from the full policy on every process; FSDP / DeepSpeed shard it. Run it "
            "with plain data parallelism (accelerate launch --num_processes N) or one process"
        )
    train_rows, test_rows = load_prompt_rows(config.dataset, config.dataset_kwargs())
    if not train_rows:
        raise ValueError(f"dataset {config.dataset!r} has no train prompts to sample from")
    if options.eval_prompts and not test_rows:
        raise ValueError(
            f"on_policy.eval_prompts={options.eval_prompts} but dataset {config.dataset!r} has no test "
            "split; give test prompts (data_files={train: ..., test: ...}, test_size=...) or set "
            "on_policy.eval_prompts=0"
        )
    renderer = select_renderer(train_rows[0], tokenizer, args.renderer_name)
    max_len = args.max_prompt_length
    train = encode_prompts(train_rows, tokenizer, renderer, max_len, "train")
    heldout = encode_prompts(test_rows[: options.eval_prompts], tokenizer, renderer, max_len, "test")
    if not train:
        raise ValueError(f"every train prompt is longer than max_prompt_length={max_len}")
    device = options.judge_device or PartialState().device
    judge = make_judge(options.judge, options.judge_type, device, options.judge_batch_size)
    return OnPolicySetup(options, train, heldout, judge)


def rounds_done(log_path: str | Path, num_rounds: int) -> int:
    """How many rounds (in order from 1) have ``done.json``."""
    done = 0
    while done < num_rounds and (round_dir(log_path, done + 1) / DONE_FILE).is_file():
        done += 1
    return done


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole (via a temporary file), on the main process only."""
    if not PartialState().is_main_process:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _jsonl(records: Sequence[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def judge_round(
    setup: OnPolicySetup, indices: Sequence[int], sampled: SampledGroups
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """One record per prompt (prompt, completions with scores, pairs picked, skips) and the skip counts."""
    train = setup.train
    texts = [[g.text for g in group] for group in sampled.groups]
    prompts, rows = [train.prompts[i] for i in indices], [train.rows[i] for i in indices]
    scores = setup.judge.score(indices, prompts, texts, rows)
    records, skipped = [], Counter()
    for i, group, group_texts, group_scores in zip(indices, sampled.groups, texts, scores, strict=True):
        if len(group_scores) != len(group):
            raise JudgeError(
                f"judge {setup.judge.name!r} returned {len(group_scores)} scores for the {len(group)} "
                f"completions of prompt {i}"
            )
        picked = pick_pairs(group_scores, group_texts, setup.options.pair_rule)
        skipped.update(picked.skipped)
        records.append(
            {
                "prompt_index": i,
                "prompt": train.prompts[i],
                "completions": [
                    {"text": g.text, "score": s, "num_tokens": g.num_tokens, "finished": g.finished}
                    for g, s in zip(group, group_scores, strict=True)
                ],
                "pairs": [list(p) for p in picked.pairs],
                "skipped": dict(picked.skipped),
            }
        )
    return records, skipped


def round_pairs(
    model: Any, tokenizer: Any, setup: OnPolicySetup, seed: int, round_number: int, directory: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The round's records and generation stats: read from ``directory`` when an earlier try of this round
    wrote them, else sampled, judged and written there (main process) before any training."""
    pairs_path, stats_path = directory / PAIRS_FILE, directory / GENERATION_FILE
    if pairs_path.is_file() and stats_path.is_file():
        logger.info("on_policy: round %d: reusing the pairs in %s", round_number, pairs_path)
        return read_metrics(pairs_path, whole=True), json.loads(stats_path.read_text("utf-8"))
    options = setup.options
    indices = round_indices(len(setup.train), options.prompts_per_round, round_number, seed)
    decoding = DecodingConfig(options.max_new_tokens, True, options.temperature, options.top_p, seed)
    ids, backend = [setup.train.ids[i] for i in indices], options.generation_backend
    n, batch_size = options.num_generations, options.generation_batch_size
    sampled = sample_groups(model, tokenizer, ids, n, decoding, batch_size, round_number, backend)
    records, skipped = judge_round(setup, indices, sampled)
    stats = {
        "generation_s": sampled.seconds,
        "gen_tokens": sum(g.num_tokens for group in sampled.groups for g in group),
        "skipped": dict(skipped),
        "truncated": sum(not g.finished for group in sampled.groups for g in group),
    }
    _write_atomic(stats_path, json.dumps(stats))
    _write_atomic(pairs_path, _jsonl(records))  # last: its presence means the round's data is complete
    PartialState().wait_for_everyone()
    return records, stats


def pairs_dataset(records: Sequence[Mapping[str, Any]]) -> Any:
    """The pairs as ``prompt`` / ``chosen`` / ``rejected`` rows (message prompts get assistant messages)."""

    def reply(record: Mapping[str, Any], index: int) -> Any:
        text = record["completions"][index]["text"]
        return text if isinstance(record["prompt"], str) else [{"role": "assistant", "content": text}]

    rows = [
        {"prompt": record["prompt"], "chosen": reply(record, chosen), "rejected": reply(record, rejected)}
        for record in records
        for chosen, rejected in record["pairs"]
    ]
    return Dataset.from_list(rows) if rows else None


def round_metrics(records: Sequence[Mapping[str, Any]], stats: Mapping[str, Any]) -> dict[str, float]:
    """``on_policy/*`` of one round: judge scores of the samples, pair yield, skips, generation speed."""
    scores = [[c["score"] for c in r["completions"]] for r in records]
    pairs = sum(len(r["pairs"]) for r in records)
    row = {
        "on_policy/score_mean": sum(map(sum, scores)) / max(1, sum(map(len, scores))),
        "on_policy/score_best": sum(map(max, scores)) / max(1, len(scores)),
        "on_policy/pairs": pairs,
        "on_policy/pair_yield": pairs / max(1, len(records)),
        "on_policy/skipped_groups": sum(1 for r in records if not r["pairs"]),
        "on_policy/truncated_samples": stats["truncated"],
        "on_policy/gen_tokens_per_s": stats["gen_tokens"] / max(stats["generation_s"], 1e-9),
        "on_policy/generation_s": stats["generation_s"],
    }
    row.update({f"on_policy/skipped_{k}": v for k, v in sorted(stats["skipped"].items())})
    return row


def heldout_metrics(
    model: Any, tokenizer: Any, setup: OnPolicySetup, directory: Path, initial: list[str] | None
) -> tuple[dict[str, float], list[str]]:
    """Greedy completions of the held-out prompts (written to ``directory/heldout.jsonl``), scored by the
    judge: ``heldout/exact_match``, ``heldout/judge_score`` or ``heldout/win_rate_vs_initial`` (pairwise)."""
    heldout, options = setup.heldout, setup.options
    decoding = DecodingConfig(options.heldout_max_new_tokens, False)
    started = time.perf_counter()
    sampled = sample_groups(model, tokenizer, heldout.ids, 1, decoding, options.generation_batch_size * 4, 0)
    texts = [group[0].text for group in sampled.groups]
    indices = list(range(len(heldout)))
    judge = setup.judge
    if judge.kind == "pairwise":  # before training the policy is the initial model: a win rate of 1/2
        pairs = zip(indices, heldout.prompts, texts, initial or texts, strict=True)
        scores = [judge.prefer(i, p, t, t0) if initial else 0.5 for i, p, t, t0 in pairs]
        key = "heldout/win_rate_vs_initial"
    else:
        scores = [s[0] for s in judge.score(indices, heldout.prompts, [[t] for t in texts], heldout.rows)]
        key = {"verifier": "heldout/exact_match", "reward_model": "heldout/judge_score"}.get(judge.kind)
    answers = zip(heldout.prompts, texts, scores, strict=True)
    records = [{"prompt": p, "completion": t, "score": s} for p, t, s in answers]
    _write_atomic(directory / HELDOUT_FILE, _jsonl(records))
    metrics = {"heldout/seconds": time.perf_counter() - started}
    if key is not None:
        metrics[key] = sum(scores) / len(scores)
    return metrics, texts


def _round_config(config: Any, directory: Path, round_number: int) -> Any:
    """The config of round ``round_number``'s DPO training: output in ``directory``, no evaluation,
    ``steps_per_round`` steps (None: one pass), at ``learning_rate · lr_round_decay^(round_number − 1)``."""
    steps = config.on_policy.steps_per_round
    round_config = copy.copy(config)
    round_config.log_path = str(directory)
    round_config.learning_rate = config.learning_rate * config.on_policy.lr_round_decay ** (round_number - 1)
    round_config.max_steps = steps if steps is not None else -1
    if steps is None:
        round_config.num_train_epochs = 1.0
    round_config.eval_strategy = "no"
    for name in ("eval_on_start", "do_eval", "load_best_model_at_end"):
        setattr(round_config, name, False)
    return round_config


def _train_round(
    prep: Any, args: Any, model: Any, reference: Any, dataset: Any, directory: Path, make_trainer: Callable
) -> tuple[Any, int]:
    """DPO with ``args`` on a round's pairs (resumed from its newest checkpoint); returns (policy, steps)."""
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint, _ = newest_resumable_checkpoint(directory)
    round_prep = dataclasses.replace(
        prep,
        args=args,
        train_dataset=dataset,
        eval_dataset=None,
        model=model,
        ref_model=reference,
        peft_config=None if isinstance(model, PeftModel) else prep.peft_config,
        checkpoint=checkpoint,
    )
    trainer, stop = make_trainer(round_prep, directory)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        stop.restore()
    step = trainer.state.global_step
    if stop.signum is not None:
        raise TrainingInterrupted(stop.signum, step, str(directory / f"checkpoint-{step}"))
    policy = trainer.model
    del trainer
    gc.collect()
    return policy, step


def _append_row(log_path: Path, row: Mapping[str, Any], quiet: bool) -> None:
    if not PartialState().is_main_process:
        return
    path = log_path / METRICS_FILE
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(dict(row)) + "\n")
    write_plots(read_metrics(path), log_path / "plots")
    if not quiet:
        shown = {k: v for k, v in row.items() if k not in ("step", "round")}
        print(f"On-policy round {row['round']}\n" + metrics_table(int(row["step"]), shown), flush=True)


def run_rounds(
    config: Any, prep: Any, log_path: Path, final_dir: Path, make_trainer: Callable
) -> dict[str, float]:
    """Every round not yet done, then ``final_dir``; returns the last round's metrics.
    ``make_trainer(prep, output_dir) -> (DPOTrainer, StopOnSignal)`` builds each round's trainer."""
    setup: OnPolicySetup = prep.on_policy
    options, state = setup.options, PartialState()
    model = prep.model if is_quantized(prep.model) else prep.model.to(state.device)
    reference = None  # LoRA: the adapter-disabled base; reference_update=round: each trainer copies its start
    if config.peft is None and options.reference_update == "initial" and needs_reference(config.loss_type):
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # the initial model, for all rounds
    done = rounds_done(log_path, options.num_rounds)
    kept = [rec for rec in read_metrics(log_path / METRICS_FILE) if rec.get("round", 0) <= done]
    _write_atomic(log_path / METRICS_FILE, _jsonl(kept))  # without later rounds: a resumed one writes its row
    step = int(kept[-1]["step"]) if kept else 0
    if done:
        policy_dir = str(round_dir(log_path, done) / POLICY_DIR)
        if config.peft is not None:
            model = PeftModel.from_pretrained(model, policy_dir, is_trainable=True)
        else:
            model = load_causal_lm(policy_dir, **(prep.args.model_init_kwargs or {}))
        model = model.to(state.device)
    initial_path = round_dir(log_path, 0) / HELDOUT_FILE  # round 0's completions, if a run wrote them
    initial = [rec["completion"] for rec in read_metrics(initial_path, whole=True)] or None
    if done == 0 and len(setup.heldout):
        metrics, initial = heldout_metrics(model, prep.tokenizer, setup, round_dir(log_path, 0), None)
        _append_row(log_path, {"round": 0, "step": 0, **metrics}, config.quiet)
    row: dict[str, Any] = {}
    for r in range(done + 1, options.num_rounds + 1):
        directory = round_dir(log_path, r)
        records, stats = round_pairs(model, prep.tokenizer, setup, prep.args.seed, r, directory)
        dataset = pairs_dataset(records)
        started, steps = time.perf_counter(), 0
        if dataset is None:
            logger.warning("on_policy: round %d produced no pairs (every group skipped); policy unchanged", r)
        else:
            args = _round_config(config, directory, r).dpo_config()
            model, steps = _train_round(prep, args, model, reference, dataset, directory, make_trainer)
        train_s = time.perf_counter() - started
        step += steps
        row = {"round": r, "step": step, **round_metrics(records, stats), "on_policy/train_s": train_s}
        if state.is_main_process:
            model.save_pretrained(str(directory / POLICY_DIR))
            prep.tokenizer.save_pretrained(str(directory / POLICY_DIR))
        if len(setup.heldout):
            metrics, _ = heldout_metrics(model, prep.tokenizer, setup, directory, initial)
            row.update(metrics)
        heldout_s = row.get("heldout/seconds", 0.0)
        total = stats["generation_s"] + train_s + heldout_s
        row["on_policy/generation_time_share"] = (stats["generation_s"] + heldout_s) / total
        _append_row(log_path, row, config.quiet)
        _write_atomic(directory / DONE_FILE, json.dumps({"round": r, "step": step}))
        state.wait_for_everyone()
    return _finish(config, prep, model, final_dir, row)


def _finish(
    config: Any, prep: Any, model: Any, final_dir: Path, last_row: Mapping[str, Any]
) -> dict[str, float]:
    """``final_dir`` (the last policy, its tokenizer and model card) and the Hub push; the last metrics."""
    metrics = {k: v for k, v in last_row.items() if isinstance(v, (int, float))}
    state = PartialState()
    if state.is_main_process:
        staging = final_dir.with_name(f".{final_dir.name}-staging")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        prep.tokenizer.save_pretrained(str(staging))
        write_model_card(staging, config, metrics, {}, adapter=config.peft is not None)
        shutil.rmtree(final_dir, ignore_errors=True)
        os.replace(staging, final_dir)
        if config.push_to_hub:
            push_run(final_dir, None, config)
    state.wait_for_everyone()
    return metrics
