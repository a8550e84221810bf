"""Shared fixtures: tiny models and tokenizers built in-process, and the optional ../shared material."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINY_MODEL = SHARED / "models" / "tiny-random-llama-smollm2-tokenizer"
HH_RLHF = SHARED / "data" / "preference" / "hh_rlhf.test.jsonl"


# accelerate's torchrun launcher, 2 processes; with no GPU each runs on CPU and they talk over gloo
TWO_PROCESS_LAUNCH = [
    "-m",
    "accelerate.commands.launch",
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]


def require_shared(path: Path) -> Path:
    """Skip the test when the optional ../shared material is absent (e.g. on a user's machine)."""
    if not path.exists():
        pytest.skip(f"needs {path} (the project's ../shared test material), which is absent here")
    return path


def make_char_tokenizer():
    """A fast character-level tokenizer (ids 0-3 special, then printable ASCII) built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in (chr(c) for c in range(32, 127)):
        vocab[ch] = len(vocab)
    vocab["\n"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def make_tiny_llama(
    vocab_size: int,
    seed: int = 0,
    tie: bool = True,
    hidden: int = 32,
    layers: int = 2,
    attn: str | None = None,
):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=tie,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(config).float()


@pytest.fixture
def char_tokenizer():
    return make_char_tokenizer()


@pytest.fixture
def tiny_model(char_tokenizer):
    return make_tiny_llama(len(char_tokenizer))


def sequence_values(out) -> torch.Tensor:
    """A ``ChosenRejectedLogps`` record's log-probs as one (2B,) tensor ``[chosen_1..B ; rejected_1..B]``."""
    return torch.cat([out.chosen_logps, out.rejected_logps])
