"""Synthetic benchmark material: model shapes, seeded preference pairs of token ids, a random-init checkpoint
and a stand-in tokenizer, so that no benchmark needs the Hub, a real tokenizer or ``../shared``.

Token ids are drawn from ``[FIRST_ID, vocab)``; ids below ``FIRST_ID`` are the stand-in tokenizer's specials
(``PAD_ID``, ``EOS_ID``, unk), so a pad id never occurs inside a sequence.
"""

from __future__ import annotations

import math
import random
from typing import Any

PAD_ID, EOS_ID, FIRST_ID = 0, 1, 3

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen2 architecture throughout. "micro" is for CPU smoke runs and tests; "tiny" keeps a 49k vocabulary
    # (SmolLM2's size) with a small body.
    "micro": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        tie_word_embeddings=True,
    ),
    "tiny": dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    # The real model of the CPU recipes (SmolLM2-135M-Instruct, Llama architecture): 134.5M parameters.
    "smollm2-135m": dict(
        architecture="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
    ),
    "qwen2.5-0.5b": dict(
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
}

# Length profiles (prompt, response) in tokens, before any length scale.
PROFILES: dict[str, dict[str, Any]] = {
    # The team's TRL measurement: uniform prompt 64-1024, each response 32-768.
    "uniform": dict(kind="uniform", prompt=(64, 1024), response=(32, 768)),
    # The same ranges, log-uniform (more short sequences, as in real preference data): the FLOPs profile.
    "loguniform": dict(kind="loguniform", prompt=(64, 1024), response=(32, 768)),
    # HH-RLHF-like: multi-turn prompts, short replies (log-normal medians ~ 150 / 70, SmolLM2 tokenizer; the
    # 990 shared HH pairs measure 138 / 51 tokens, log-sd 0.84 / 0.94, with SmolLM2's chat template).
    "hh": dict(kind="lognormal", prompt=(150, 0.8, 16, 1024), response=(70, 0.9, 4, 512)),
    # UltraFeedback-like: single-turn prompts, long replies (medians ~ 120 / 320).
    "uf": dict(kind="lognormal", prompt=(120, 0.9, 8, 1024), response=(320, 0.6, 16, 1024)),
}

Pair = dict[str, list[int]]


def sample_length(rng: random.Random, kind: str, params: tuple) -> int:
    """One length: ``uniform`` (lo, hi), ``loguniform`` (lo, hi) or ``lognormal`` (median, sigma, lo, hi)."""
    if kind == "uniform":
        return rng.randint(*params)
    if kind == "loguniform":
        lo, hi = params
        return min(hi, round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))
    if kind == "lognormal":
        median, sigma, lo, hi = params
        return min(hi, max(lo, round(math.exp(rng.gauss(math.log(median), sigma)))))
    raise ValueError(f"unknown length distribution {kind!r}; use uniform, loguniform or lognormal")


def make_pairs(profile: str, num_pairs: int, scale: float, vocab: int, seed: int) -> list[Pair]:
    """``num_pairs`` pairs with lengths from ``PROFILES[profile]`` times ``scale`` (at least 1 token each) and
    random ids in ``[FIRST_ID, vocab)``; the same arguments give the same pairs."""
    if profile not in PROFILES:
        raise ValueError(f"unknown length profile {profile!r}; available: {', '.join(PROFILES)}")
    rng = random.Random(seed)
    spec = PROFILES[profile]

    def ids(which: str) -> list[int]:
        n = max(1, round(sample_length(rng, spec["kind"], spec[which]) * scale))
        return [rng.randrange(FIRST_ID, vocab) for _ in range(n)]

    return [
        {"prompt_ids": ids("prompt"), "chosen_ids": ids("response"), "rejected_ids": ids("response")}
        for _ in range(num_pairs)
    ]


def model_config(shape: str, attn: str = "sdpa") -> Any:
    """The config of ``SHAPES[shape]`` (Qwen2 unless the shape names ``architecture="llama"``; no sliding
    window) with ``attn`` as attention backend."""
    from transformers import LlamaConfig, Qwen2Config

    if shape not in SHAPES:
        raise ValueError(f"unknown model shape {shape!r}; available: {', '.join(SHAPES)}")
    fields = dict(SHAPES[shape])
    if fields.pop("architecture", "qwen2") == "llama":
        config = LlamaConfig(**fields, max_position_embeddings=4096)
    else:
        config = Qwen2Config(**fields, max_position_embeddings=4096, use_sliding_window=False)
    config._attn_implementation = attn
    return config


def save_model(shape: str, path: str, seed: int) -> None:
    """Save a random-init causal LM of ``shape`` to ``path``."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(model_config(shape)).save_pretrained(path)


def standin_tokenizer() -> Any:
    """A tokenizer with only pad / eos / unk: enough for trainers fed token ids (the data is already ids)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD_ID, "<eos>": EOS_ID, "<unk>": 2}
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        pad_token="<pad>",
        eos_token="<eos>",
        unk_token="<unk>",
    )
