"""Pushing a finished run's model folder(s) to the Hugging Face Hub."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from huggingface_hub.utils import HFValidationError, validate_repo_id

from hf_dpo.run.model_card import merged_repo_id

logger = logging.getLogger("hf_dpo")


def check_hub_model_id(repo_id: str | None) -> None:
    """``ValueError`` unless ``repo_id`` is a Hub model repo id ``<user or org>/<name>``."""
    problem = "it is not set" if not repo_id else (None if "/" in repo_id else f"{repo_id!r} has no owner")
    if problem is None:
        try:
            validate_repo_id(repo_id)
        except HFValidationError as e:
            problem = f"{repo_id!r} is not a valid repo id ({e})"
    if problem is not None:
        raise ValueError(f"push_to_hub=true needs hub_model_id=<user or org>/<repo name>; {problem}")


def push_run(final_dir: str | Path, merged_dir: str | Path | None, config: Any) -> list[str]:
    """Push the final model (for LoRA: the adapter) to ``hub_model_id``, and a merged copy, if saved, to
    ``<hub_model_id>-merged``, each to branch ``hub_revision`` if set; returns the commit URLs."""
    from huggingface_hub import HfApi

    api = HfApi(token=getattr(config, "hub_token", None))
    private, revision = getattr(config, "hub_private_repo", None), getattr(config, "hub_revision", None)
    targets = [(final_dir, config.hub_model_id)]
    if merged_dir is not None:
        targets.append((merged_dir, merged_repo_id(config.hub_model_id)))
    urls = []
    for folder, repo_id in targets:
        check_hub_model_id(repo_id)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=f"DPO on {config.dataset} from {config.model_name} (hf_dpo)",
            repo_type="model",
            revision=revision,
        )
        logger.info("pushed %s to https://huggingface.co/%s", folder, repo_id)
        urls.append(str(getattr(info, "commit_url", info)))
    return urls
