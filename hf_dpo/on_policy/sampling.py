"""Sampling groups of completions from the policy (``hf_dpo.eval``'s ``generate``, or vLLM), sharded over
processes: batch ``b`` is sampled with ``seed_for(seed, round, b)``, so the result does not depend on them."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from hf_dpo.eval.generation import DecodingConfig, Generation, generate
from hf_dpo.reference.policies import eval_no_grad


@dataclass
class SampledGroups:
    """One list of ``num_generations`` completions per prompt, and the generation wall time (seconds)."""

    groups: list[list[Generation]]
    seconds: float


def seed_for(seed: int, round_number: int, batch: int) -> int:
    """The sampling seed of one generation batch (distinct for every run seed, round and batch)."""
    return (seed * 1_000_003 + round_number * 10_007 + batch) % (2**63)


def sample_groups(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    num_generations: int,
    decoding: DecodingConfig,
    batch_size: int,
    round_number: int,
    backend: str = "hf",
) -> SampledGroups:
    """``num_generations`` completions of each prompt (``decoding.seed`` is the run seed)."""
    state = PartialState()
    started = time.perf_counter()
    starts = range(0, len(prompt_ids), batch_size)
    local: dict[int, list[list[Generation]]] = {}
    with eval_no_grad(model):
        for b in range(state.process_index, len(starts), state.num_processes):
            ids = list(prompt_ids[starts[b] : starts[b] + batch_size])
            batch_decoding = dataclasses.replace(decoding, seed=seed_for(decoding.seed, round_number, b))
            if backend == "vllm":
                local[b] = _vllm_groups(model, tokenizer, ids, num_generations, batch_decoding)
            else:
                repeated = [p for p in ids for _ in range(num_generations)]
                flat = generate(model, tokenizer, repeated, batch_decoding, batch_size=len(repeated))
                local[b] = [flat[k : k + num_generations] for k in range(0, len(flat), num_generations)]
    if state.num_processes > 1:
        local = {b: groups for part in gather_object([local]) for b, groups in part.items()}
    groups = [group for b in range(len(starts)) for group in local[b]]
    return SampledGroups(groups, time.perf_counter() - started)


def _vllm_groups(
    model: torch.nn.Module, tokenizer: Any, prompt_ids: list[Sequence[int]], n: int, decoding: DecodingConfig
) -> list[list[Generation]]:
    """vLLM sampling from the current weights (saved to a temporary directory; full models only)."""
    from vllm import LLM, SamplingParams  # checked at config time: generation_backend=vllm needs vllm

    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        engine = LLM(model=directory, seed=decoding.seed, gpu_memory_utilization=0.3)
        params = SamplingParams(
            n=n,
            temperature=decoding.temperature,
            top_p=decoding.top_p,
            max_tokens=decoding.max_new_tokens,
            seed=decoding.seed,
        )
        outputs = engine.generate([{"prompt_token_ids": list(p)} for p in prompt_ids], params)
        del engine
    return [
        [Generation(o.text, len(o.token_ids), o.finish_reason == "stop") for o in out.outputs]
        for out in outputs
    ]
