"""The ``generation`` task: completions of policy and reference, their reward-model win rate (ties ½) and
exact match for datasets with numeric answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_dpo.batching.collator import pad_token_id_for
from hf_dpo.eval.loading import ModelPair
from hf_dpo.eval.stats import bootstrap, exact_match, length_stats, mean_of, win_values


@dataclass(frozen=True)
class DecodingConfig:
    """Sampling settings shared by policy and reference."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Generation:
    """One completion: text without special tokens, length in tokens (with the end token), ended by EOS."""

    text: str
    num_tokens: int
    finished: bool


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    decoding: DecodingConfig,
    batch_size: int = 8,
    show_progress: bool = False,
    desc: str = "Generating",
) -> list[Generation]:
    """Batched, left-padded generation from token-id prompts; ``torch.manual_seed(decoding.seed)`` first."""
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    config_eos = config_eos if isinstance(config_eos, (list, tuple)) else [config_eos]
    eos = sorted(i for i in {tokenizer.eos_token_id, *config_eos} if i is not None)
    pad_id, device = pad_token_id_for(tokenizer), next(model.parameters()).device
    settings = (
        {"do_sample": True, "temperature": decoding.temperature, "top_p": decoding.top_p}
        if decoding.do_sample
        else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    )
    settings.update(max_new_tokens=decoding.max_new_tokens, pad_token_id=pad_id, eos_token_id=eos)
    torch.manual_seed(decoding.seed)
    results: list[Generation] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not show_progress):
        chunk = [list(p) for p in prompts[start : start + batch_size]]
        width = max(map(len, chunk))  # left-padded with pad_id, masked out
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk], dtype=torch.long, device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        out = model.generate(input_ids=ids, attention_mask=mask, **settings)
        for row in out[:, width:].tolist():
            end = next((j for j, t in enumerate(row) if t in eos), None)
            body = row if end is None else row[:end]
            text = tokenizer.decode(body, skip_special_tokens=True)
            results.append(Generation(text, len(body) + (end is not None), end is not None))
    return results


def judge_text(prompt: str | list[dict[str, str]], completion: str, judge_tokenizer: Any) -> str:
    """The text the judge scores: message prompts through its chat template (or as ``role: content`` lines),
    else ``prompt + completion``."""
    if isinstance(prompt, str):
        return prompt + completion
    if getattr(judge_tokenizer, "chat_template", None):
        return judge_tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": completion}], tokenize=False
        )
    lines = [f"{m['role']}: {m['content']}" for m in prompt]
    return "\n".join([*lines, f"assistant: {completion}"])


@torch.no_grad()
def judge_scores(
    judge: torch.nn.Module,
    judge_tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 8,
    max_length: int = 2048,
) -> list[float]:
    """Reward-model score of each text: the last logit (the only one for a ``num_labels=1`` reward model)."""
    device = next(judge.parameters()).device
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        part = list(texts[start : start + batch_size])
        enc = judge_tokenizer(part, return_tensors="pt", padding=True, truncation=True, max_length=max_length)
        logits = judge(**{k: v.to(device) for k, v in enc.items()}).logits
        scores.extend(logits[:, -1].float().cpu().tolist())
    return scores


def load_judge(name_or_path: str, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """An ``AutoModelForSequenceClassification`` reward model and its tokenizer (pad token ensured)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    judge = AutoModelForSequenceClassification.from_pretrained(name_or_path).to(device).eval()
    if judge.config.pad_token_id is None:
        judge.config.pad_token_id = tokenizer.pad_token_id
    return judge, tokenizer


def evaluate_generation(
    pair: ModelPair,
    prompts: Sequence[Sequence[int]],
    prompt_texts: Sequence[Any],
    decoding: DecodingConfig,
    *,
    judge: tuple[torch.nn.Module, Any] | None = None,
    answers: Sequence[float | None] | None = None,
    batch_size: int = 8,
    judge_batch_size: int = 8,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    show_progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate for every prompt with both models; return (metrics, one record per prompt). Metrics:
    ``length/<model>``, ``win_rate`` (with a ``judge``), ``exact_match/<model>`` (with ``answers``)."""
    outputs = {}
    for which in ("policy", "reference"):
        with pair.use(which) as model:
            outputs[which] = generate(
                model, pair.tokenizer, prompts, decoding, batch_size, show_progress, f"Generating ({which})"
            )
    records = [
        {"prompt": p, "policy": g.text, "reference": r.text}
        for p, g, r in zip(prompt_texts, outputs["policy"], outputs["reference"], strict=True)
    ]
    metrics: dict[str, Any] = {"num_prompts": len(prompts), "decoding": decoding.__dict__}
    for which, gens in outputs.items():
        metrics[f"length/{which}"] = length_stats(
            [g.num_tokens for g in gens], decoding.max_new_tokens, [g.finished for g in gens]
        )

    def estimate(values: np.ndarray) -> dict[str, float]:
        return bootstrap({"x": values}, mean_of("x"), bootstrap_samples, confidence, decoding.seed).as_dict()

    if judge is not None:  # judge every completion: win rate, mean judge scores, each record's scores and win
        judge_model, judge_tokenizer = judge
        scores = {}
        for which, gens in outputs.items():
            texts = [judge_text(p, g.text, judge_tokenizer) for p, g in zip(prompt_texts, gens, strict=True)]
            scores[which] = judge_scores(judge_model, judge_tokenizer, texts, judge_batch_size)
        wins = win_values(scores["policy"], scores["reference"])
        metrics["win_rate"] = estimate(wins)
        metrics.update({f"judge_score/{which}": float(np.mean(values)) for which, values in scores.items()})
        for record, sp, sr, w in zip(records, scores["policy"], scores["reference"], wins, strict=True):
            record.update(policy_score=sp, reference_score=sr, win=float(w))
    if answers is not None:
        for which, gens in outputs.items():
            hits = exact_match([g.text for g in gens], answers)
            metrics[f"exact_match/{which}"] = estimate(hits)
            for record, hit in zip(records, hits, strict=True):
                record[f"{which}_correct"] = bool(hit)
        for record, answer in zip(records, answers, strict=True):
            record["answer"] = answer
    return metrics, records
