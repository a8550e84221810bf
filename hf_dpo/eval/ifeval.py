"""The ``ifeval`` task: IFEval (Zhou et al. 2023, arXiv:2311.07911), lm-evaluation-harness's ``ifeval`` task
run on an in-memory model; data from the Hub (``google/IFEval``) or a local JSON Lines ``data_files``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

INSTALL_HINT = (
    "the ifeval task needs lm-evaluation-harness with its IFEval extras: pip install 'hf_dpo[eval]' "
    "(or: pip install 'lm_eval[ifeval]>=0.4.9')"
)
METRICS = tuple(f"{level}_level_{mode}_acc" for mode in ("strict", "loose") for level in ("prompt", "inst"))


def require_lm_eval() -> None:
    """Raise ``ImportError`` with the install command when lm_eval or its IFEval extras are missing."""
    try:
        import langdetect  # noqa: F401
        import lm_eval  # noqa: F401
        import nltk  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from None


def _task_yaml(directory: Path, data_files: str | None, max_new_tokens: int) -> str:
    """A task file that includes lm_eval's own ifeval.yaml and overrides only data source and length."""
    import lm_eval.tasks.ifeval.utils as ifeval_utils

    spec: dict[str, Any] = {
        "include": str(Path(ifeval_utils.__file__).with_name("ifeval.yaml")),
        "task": "ifeval",
        "generation_kwargs": dict(until=[], do_sample=False, temperature=0.0, max_gen_toks=max_new_tokens),
    }
    if data_files is not None:
        if not Path(data_files).is_file():
            raise FileNotFoundError(
                f"ifeval_data_files={data_files!r} does not exist; pass a JSON Lines file "
                "with key, prompt, instruction_id_list and kwargs per row"
            )
        files = {"train": str(Path(data_files).resolve())}
        spec.update(
            dataset_path="json", dataset_name=None, test_split="train", dataset_kwargs={"data_files": files}
        )
    path = directory / "ifeval_hf_dpo.yaml"
    path.write_text(json.dumps(spec))  # JSON is valid YAML
    return str(path)


def run_ifeval(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    data_files: str | None = None,
    limit: int | None = None,
    max_new_tokens: int = 1280,
    batch_size: int = 8,
    chat_template: bool | None = None,
    seed: int = 0,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """``METRICS`` of ``model`` on IFEval and per-prompt records. ``chat_template=None``: use the tokenizer's
    if it has one. ``seed`` seeds the harness and langdetect (the language checkers)."""
    require_lm_eval()
    from langdetect import DetectorFactory
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if chat_template is None:
        chat_template = bool(getattr(tokenizer, "chat_template", None))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    # The language checkers call langdetect, which samples: unseeded, one response can pass the strict check
    # and fail the loose one (or change between runs). Seeding it makes every check a function of the text.
    saved_seed = DetectorFactory.seed
    DetectorFactory.seed = seed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            task = _task_yaml(Path(tmp), data_files, max_new_tokens)
            out = simple_evaluate(
                model=lm,
                tasks=[task],
                task_manager=TaskManager(),
                limit=limit,
                apply_chat_template=chat_template,
                log_samples=True,
                bootstrap_iters=0,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
            )
    except LookupError as err:
        if type(err) is not LookupError or "punkt" not in str(err):  # KeyError etc.: not missing NLTK data
            raise
        raise FileNotFoundError(  # an OSError, so `hf_dpo.eval` reports it in one line and exits 2
            "IFEval's instructions that tokenize with NLTK (length_constraints:number_sentences, "
            "change_case:capital_word_frequency) need its punkt_tab data, which is not installed here "
            "(lm_eval's download of it failed, e.g. offline). Fix: run `python -m nltk.downloader punkt_tab` "
            "on a machine with internet and copy ~/nltk_data here (or point NLTK_DATA at it). "
            f"NLTK said: {str(err).strip().splitlines()[0]}"
        ) from err
    finally:
        DetectorFactory.seed = saved_seed
    return _metrics_and_records(out)


def _metrics_and_records(out: dict[str, Any]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The harness output as (metrics, per-prompt records)."""
    result = out["results"]["ifeval"]
    metrics = {name: float(result[f"{name},none"]) for name in METRICS}
    metrics["num_prompts"] = int(result.get("sample_len", len(out["samples"]["ifeval"])))
    records = [
        {
            "key": s["doc"].get("key"),
            "prompt": s["doc"]["prompt"],
            "response": s["filtered_resps"][0],
            "instruction_id_list": s["doc"]["instruction_id_list"],
            "strict": s["inst_level_strict_acc"],
            "loose": s["inst_level_loose_acc"],
            "prompt_strict": bool(s["prompt_level_strict_acc"]),
            "prompt_loose": bool(s["prompt_level_loose_acc"]),
        }
        for s in out["samples"]["ifeval"]
    ]
    return metrics, records
