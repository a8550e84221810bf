"""hf_dpo.eval ifeval task through lm-evaluation-harness, offline on tests/fixtures/ifeval_sample.jsonl."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL

from hf_dpo.eval.ifeval import INSTALL_HINT, METRICS, require_lm_eval

FIXTURE = Path(__file__).parent / "fixtures" / "ifeval_sample.jsonl"
TINY = TINY_MODEL


def constant_word_model(tokenizer, word: str):
    """A tiny Llama that always emits the token of ``word`` (LM head: zero weights, one-hot bias)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    (token,) = tokenizer(word, add_special_tokens=False)["input_ids"]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    head = torch.nn.Linear(32, len(tokenizer), bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[token] = 10.0
    model.lm_head = head
    return model.eval()


def test_install_hint_names_the_extra():
    assert "hf_dpo[eval]" in INSTALL_HINT


def test_ifeval_on_local_sample():
    try:
        require_lm_eval()
    except ImportError as err:
        pytest.skip(f"lm-evaluation-harness not installed: {err}")
    if not TINY.exists():
        pytest.skip(f"needs {TINY} (the SmolLM2 tokenizer in ../shared), which is absent here")
    from transformers import AutoTokenizer

    from hf_dpo.eval.ifeval import run_ifeval

    tok = AutoTokenizer.from_pretrained(TINY)
    metrics, records = run_ifeval(
        constant_word_model(tok, " bread"), tok, data_files=str(FIXTURE), max_new_tokens=6, batch_size=5
    )
    rows = {json.loads(line)["key"]: json.loads(line) for line in FIXTURE.read_text().splitlines()}
    assert metrics["num_prompts"] == len(rows) == len(records)
    by_key = {r["key"]: r for r in records}
    assert all(r["response"].split() == ["bread"] * 6 for r in records)
    # Hand checks of "bread bread ...": no comma -> pass; keywords bread+morning -> fail (no "morning");
    # exactly 3 bullets -> fail; <<title>> and the end phrase -> both fail.
    assert by_key[1]["strict"] == [True]
    assert by_key[3]["strict"] == [False]
    assert by_key[4]["strict"] == [False]
    assert by_key[5]["strict"] == [False, False]
    assert by_key[2]["strict"][0] is True  # 6 words < 40
    prompt_level = sum(all(r["strict"]) for r in records) / len(records)
    inst_level = sum(sum(r["strict"]) for r in records) / sum(len(r["strict"]) for r in records)
    assert metrics["prompt_level_strict_acc"] == pytest.approx(prompt_level)
    assert metrics["inst_level_strict_acc"] == pytest.approx(inst_level)
    assert set(METRICS) <= set(metrics)
    assert metrics["prompt_level_loose_acc"] >= metrics["prompt_level_strict_acc"]
