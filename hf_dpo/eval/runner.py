"""``evaluate_model(config)``: load what ``config`` names, run the requested tasks, write the results."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hf_dpo.config import dpo_default
from hf_dpo.eval.config import EvalConfig
from hf_dpo.eval.data import dataset_options, load_test_split, reference_answer
from hf_dpo.eval.generation import DecodingConfig, evaluate_generation, load_judge
from hf_dpo.eval.ifeval import require_lm_eval, run_ifeval
from hf_dpo.eval.loading import ModelPair, base_model_name, load_models, resolve_run
from hf_dpo.eval.preference import evaluate_preference
from hf_dpo.eval.report import write_outputs
from hf_dpo.scoring import Objective
from hf_dpo.tokens.tokenization import encode_prompt, select_renderer, split_row

logger = logging.getLogger("hf_dpo")


def _setting(config: EvalConfig, run: Mapping[str, Any], name: str, default: Any, *run_keys: str) -> Any:
    value = getattr(config, name)
    if value is not None:
        return value
    return next((run[k] for k in (*run_keys, name) if run.get(k) is not None), default)


def evaluate_pair(
    pair: ModelPair,
    config: EvalConfig,
    run_config: Mapping[str, Any] | None = None,
    reference_label: str = "reference",
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Run ``config.tasks`` on an already loaded ``pair``; return (results, per-example records, per-pair
    preference values or None). Settings left None in ``config`` come from ``run_config``."""
    run = dict(run_config or {})
    results: dict[str, Any] = {"model_path": config.model_path, "reference": reference_label}
    results.update(tasks=list(config.tasks), confidence=config.confidence, seed=config.seed)
    records: dict[str, Any] = {}
    test = renderer = dataset_name = values = None
    if {"preference", "generation"} & set(config.tasks):  # the test split of the dataset the run trained on
        dataset_name = _setting(config, run, "dataset", None)
        if not dataset_name:
            raise ValueError(
                "tasks preference/generation need dataset=<builder name> (e.g. arithmetic, hhh); the "
                "run's config.yaml names none"
            )
        options = dataset_options(run, config.dataset_options)
        test = load_test_split(dataset_name, options, config.limit)
        renderer = select_renderer(test[0], pair.tokenizer, _setting(config, run, "renderer_name", None))
        results["dataset"] = {"name": dataset_name, "options": options, "test_rows": len(test)}
    if "preference" in config.tasks:
        results["preference"], values = _preference(pair, config, run, test, renderer)
    if "generation" in config.tasks:
        results["generation"], records["generation"] = _generation(pair, config, test, renderer, dataset_name)
    if "ifeval" in config.tasks:
        results["ifeval"] = {}
        for which in ("policy", "reference"):
            with pair.use(which) as model:
                results["ifeval"][which], records[f"ifeval_{which}"] = run_ifeval(
                    model,
                    pair.tokenizer,
                    data_files=config.ifeval_data_files,
                    limit=config.limit,
                    max_new_tokens=config.ifeval_max_new_tokens,
                    batch_size=config.batch_size,
                    chat_template=config.ifeval_chat_template,
                    seed=config.seed,
                )
    return results, records, values


def _preference(
    pair: ModelPair, config: EvalConfig, run: Mapping[str, Any], test: Any, renderer: Any
) -> tuple[dict[str, Any], Any]:
    """The preference task with the run's objective (β, loss type and label smoothing from the eval config or
    the run, the rest from the run) and tokenization: (results, per-pair values)."""
    beta = float(_setting(config, run, "beta", dpo_default("beta"), "dpo_beta"))
    fields = {k: v for k, v in run.items() if v is not None}
    fields.update(
        beta=beta,
        loss_type=_setting(config, run, "loss_type", dpo_default("loss_type")),
        label_smoothing=float(_setting(config, run, "label_smoothing", dpo_default("label_smoothing"))),
        logprob_chunk_size=config.logprob_chunk_size,
    )
    metrics, values = evaluate_preference(
        pair,
        test,
        renderer,
        beta,
        objective=Objective.from_args(fields),
        max_length=_setting(config, run, "max_length", dpo_default("max_length")),
        max_prompt_length=_setting(config, run, "max_prompt_length", dpo_default("max_prompt_length")),
        truncation_mode=run.get("truncation_mode") or dpo_default("truncation_mode"),
        assistant_only_loss=bool(run.get("assistant_only_loss", False)),
        batch_size=config.batch_size,
        bootstrap_samples=config.bootstrap_samples,
        confidence=config.confidence,
        seed=config.seed,
        show_progress=config.show_progress,
    )
    return {"beta": beta, **metrics}, values


def _generation(pair: ModelPair, config: EvalConfig, test: Any, renderer: Any, dataset_name: str) -> Any:
    unique: dict[tuple[int, ...], tuple[list[int], Any, float | None]] = {}  # one generation per prompt
    for i, row in enumerate(test):  # prompts tokenized as in training, with the generation prompt
        prompt, _, _ = split_row(row, i)
        if renderer is not None and isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        ids = encode_prompt(prompt, pair.tokenizer, renderer)
        if tuple(ids) not in unique:
            unique[tuple(ids)] = (ids, prompt, reference_answer(row, i))
    prompts, texts, answers = (list(column) for column in zip(*unique.values(), strict=True))
    decoding = DecodingConfig(
        config.max_new_tokens, config.do_sample, config.temperature, config.top_p, config.seed
    )
    judge = (
        load_judge(config.judge_model, next(pair.policy.parameters()).device) if config.judge_model else None
    )
    if judge is None:
        logger.warning("hf_dpo.eval: no judge_model given; generation reports lengths only (no win rate)")
    return evaluate_generation(
        pair,
        prompts,
        texts,
        decoding,
        judge=judge,
        answers=answers if dataset_name == "arithmetic" else None,
        batch_size=config.batch_size,
        judge_batch_size=config.judge_batch_size,
        bootstrap_samples=config.bootstrap_samples,
        confidence=config.confidence,
        show_progress=config.show_progress,
    )


def output_dir(config: EvalConfig, run_dir: Path | None) -> Path:
    """``log_path`` if given, else ``<run dir or model_path>/eval``."""
    if config.log_path:
        return Path(config.log_path)
    base = run_dir if run_dir is not None else Path(config.model_path)
    if not base.is_dir():
        raise ValueError(
            f"model_path {config.model_path!r} does not exist locally (so it was taken as a Hub id); "
            "check the path, or for a Hub model pass log_path=<output dir>"
        )
    return base / "eval"


def evaluate_model(config: EvalConfig) -> dict[str, Any]:
    """Evaluate ``config.model_path`` against its reference on ``config.tasks``, write the outputs to
    ``output_dir`` and return the results dict (also in results.json)."""
    if "ifeval" in config.tasks:
        require_lm_eval()  # fail before loading anything
    info = resolve_run(config.model_path)
    out = output_dir(config, info.run_dir)
    reference = base_model_name(info, config.model_name)
    pair, info = load_models(
        config.model_path,
        reference,
        config.tokenizer_name or info.config.get("tokenizer_name"),
        config.dtype,
        config.device,
    )
    results, records, values = evaluate_pair(
        pair, config, info.config, "policy with adapters disabled" if pair.reference is None else reference
    )
    write_outputs(out, results, records, values, config.plots)
    results["output_dir"] = str(out)
    logger.info("hf_dpo.eval: results in %s", out)
    return results


USAGE = """usage: hf-dpo-eval [eval.yaml] key=value ...
       python -m hf_dpo.eval model_path=<run dir|checkpoint|adapter|hub id> [model_name=<base>] \\
           tasks=preference,generation,ifeval [dataset=<name>] [judge_model=<reward model>] ...
See docs/evaluation.md for every key."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``hf-dpo-eval``: parse ``[yaml] key=value ...``, evaluate, print a summary."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    from hf_dpo.run.cli_config import load_config

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        results = evaluate_model(load_config(EvalConfig, argv))
    except (ValueError, OSError, ImportError) as err:  # OSError: missing files, no network to the Hub
        print(f"hf-dpo-eval: error: {err}", file=sys.stderr)
        return 2
    print((Path(results["output_dir"]) / "report.md").read_text("utf-8"))
    return 0
