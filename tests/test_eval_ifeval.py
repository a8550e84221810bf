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


def tiny_tokenizer():
    """The SmolLM2 tokenizer, skipping when lm_eval's IFEval extras or ../shared are absent."""
    try:
        require_lm_eval()
    except ImportError as err:
        pytest.skip(f"lm-evaluation-harness not installed: {err}")
    if not TINY.exists():
        pytest.skip(f"needs {TINY} (the SmolLM2 tokenizer in ../shared), which is absent here")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


def test_ifeval_on_local_sample():
    from hf_dpo.eval.ifeval import run_ifeval

    tok = tiny_tokenizer()
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
    # One line without markdown: every loose variant is the response itself or empty, so loose == strict,
    # including the langdetect-based lowercase-English check (unseeded, it flipped between the two).
    assert all(r["loose"] == r["strict"] for r in records)


def test_language_checks_are_seeded_and_the_seed_restored(monkeypatch):
    """langdetect samples; run_ifeval must seed it for every check and put the caller's seed back."""
    import langdetect
    from langdetect import DetectorFactory

    from hf_dpo.eval.ifeval import run_ifeval

    tok = tiny_tokenizer()
    seen = []
    detect = langdetect.detect

    def spy(text):
        seen.append(DetectorFactory.seed)
        return detect(text)

    monkeypatch.setattr(langdetect, "detect", spy)
    monkeypatch.setattr(DetectorFactory, "seed", None)
    rows = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    answers = []
    for _ in range(2):
        _, records = run_ifeval(
            constant_word_model(tok, " bread"), tok, data_files=str(FIXTURE), max_new_tokens=6, seed=7
        )
        answers.append([r["strict"] + r["loose"] for r in records])
    assert any("change_case:english_lowercase" in r["instruction_id_list"] for r in rows)
    assert len(seen) >= 2 and set(seen) == {7}  # that check ran in both runs, always under the given seed
    assert answers[0] == answers[1]
    assert DetectorFactory.seed is None


def test_missing_nltk_data_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """Offline without punkt_tab, a sentence-counting instruction names the download command."""
    import nltk
    from lm_eval.tasks.ifeval import instructions_util

    from hf_dpo.eval import loading as eval_loading
    from hf_dpo.eval.ifeval import run_ifeval
    from hf_dpo.eval.runner import main as eval_main

    tok = tiny_tokenizer()
    data = tmp_path / "sentences.jsonl"
    row = {
        "key": 1,
        "prompt": "Greet me in at most two sentences.",
        "instruction_id_list": ["length_constraints:number_sentences"],
        "kwargs": [{"relation": "less than", "num_sentences": 3}],
    }
    data.write_text(json.dumps(row) + "\n")
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no_nltk_data")])  # punkt_tab can't be found
    monkeypatch.setattr(nltk, "download", lambda *args, **kwargs: False)  # nor fetched
    instructions_util._get_sentence_tokenizer.cache_clear()
    bread_model = constant_word_model(tok, " bread")
    with pytest.raises(FileNotFoundError, match=r"punkt_tab.*python -m nltk.downloader punkt_tab"):
        run_ifeval(bread_model, tok, data_files=str(data), max_new_tokens=4)
    # The command line: one line and exit 2, no traceback (both models load as the constant-word model)
    monkeypatch.setattr(eval_loading, "load_causal_lm", lambda *args, **kwargs: bread_model)
    argv = [f"model_path={TINY}", f"model_name={TINY}", "tasks=ifeval", f"ifeval_data_files={data}"]
    code = eval_main([*argv, "ifeval_max_new_tokens=4", f"log_path={tmp_path / 'eval'}"])
    err = capsys.readouterr().err.strip().splitlines()
    instructions_util._get_sentence_tokenizer.cache_clear()
    assert code == 2
    assert err[-1].startswith("hf-dpo-eval: error: IFEval's instructions that tokenize with NLTK")
    assert not any("Traceback" in line for line in err)
