"""Checks made before ``log_path`` is touched that a run can finish: the optional packages the config needs
and, with ``push_to_hub``, write access to ``hub_model_id`` (all problems reported in one error)."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

logger = logging.getLogger("hf_dpo")

# report_to backend -> the packages that provide it (any one is enough), as transformers imports them:
# the package of the backend's own name unless _RENAMED lists others.
_RENAMED = {"tensorboard": ("tensorboard", "tensorboardX"), "azure_ml": ("azureml",), "flyte": ("flytekit",)}
REPORT_PACKAGES = {
    backend: _RENAMED.get(backend, (backend,))
    for backend in """wandb tensorboard mlflow comet_ml neptune clearml dvclive swanlab trackio codecarbon
    azure_ml flyte dagshub kubeflow""".split()
}
# package -> the prefixes of the optim names that need it (e.g. adamw_bnb_8bit, paged_adamw_32bit, lion_8bit)
OPTIM_PACKAGES = {
    "torchao": ("adamw_torch_4bit", "adamw_torch_8bit"),
    "bitsandbytes": ("paged_", "adamw_bnb", "adamw_8bit", "ademamix", "lion_", "rmsprop_bnb"),
    "galore_torch": ("galore",),
    "apollo_torch": ("apollo",),
    "lomo_optim": ("lomo", "adalomo"),
    "grokadamw": ("grokadamw",),
    "schedulefree": ("schedule_free",),
    "optimi": ("stable_adamw",),
    "torchdistx": ("adamw_anyprecision",),
}
ATTENTION_PACKAGES = {"flash_attention_2": "flash_attn", "flash_attention_3": "flash_attn_interface"}


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def package_problems(config: Any) -> list[str]:
    """One line per optional package that ``config`` needs and that is not installed."""
    needs: list[tuple[str, tuple[str, ...]]] = []  # (what needs it, packages: any one will do)
    report_to = config.report_to
    backends = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for backend in [b for b in backends if b not in ("none", "all")]:
        if backend not in REPORT_PACKAGES:
            return [
                f"report_to={backend!r} is not a reporting backend; use one of {', '.join(REPORT_PACKAGES)} "
                "or none"
            ]
        needs.append((f"report_to={backend}", REPORT_PACKAGES[backend]))
    if config.use_liger_kernel:
        needs.append(("use_liger_kernel=true", ("liger_kernel",)))
    optim = str(getattr(config.optim, "value", config.optim))
    needs += [
        (f"optim={optim}", (p,)) for p, prefixes in OPTIM_PACKAGES.items() if optim.startswith(prefixes)
    ]
    init = config.model_init_kwargs or {}
    quant = init.get("quantization_config")
    if isinstance(quant, dict) and (quant.get("load_in_4bit") or quant.get("load_in_8bit")):
        needs.append(("load_in_4bit / load_in_8bit (quantization_config)", ("bitsandbytes",)))
    attention = init.get("attn_implementation")
    if attention in ATTENTION_PACKAGES:
        needs.append((f"attn_implementation={attention}", (ATTENTION_PACKAGES[attention],)))
    if config.deepspeed:
        needs.append(("deepspeed=...", ("deepspeed",)))
    return [
        f"{what} needs the package {' or '.join(packages)}, which is not installed "
        f"(pip install {packages[0].replace('_', '-')}), or drop that setting"
        for what, packages in needs
        if not any(installed(p) for p in packages)
    ]


def hub_problems(config: Any) -> list[str]:
    """With ``push_to_hub``: the Hub is reachable, the login works and its user may write ``hub_model_id``."""
    if not config.push_to_hub:
        return []
    repo_id = config.hub_model_id
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return [
            f"push_to_hub=true but HF_HUB_OFFLINE is set, so {repo_id!r} cannot be pushed at the end; unset "
            "HF_HUB_OFFLINE or set push_to_hub=false"
        ]
    from huggingface_hub import HfApi

    try:
        who = HfApi(token=config.hub_token).whoami()
    except Exception as e:  # noqa: BLE001 - network and auth errors come in many types; each is reported
        reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        return [
            f"push_to_hub=true but the Hub login cannot be checked ({reason}). Log in (`hf auth login` or "
            "HF_TOKEN=...), check the network, or set push_to_hub=false"
        ]
    owner = repo_id.split("/")[0]
    names = {who.get("name")} | {org.get("name") for org in who.get("orgs", []) if isinstance(org, dict)}
    if owner not in names:
        return [
            f"push_to_hub=true but the Hub user {who.get('name')!r} cannot create repos under {owner!r} "
            f"(hub_model_id={repo_id!r}; your namespaces: {', '.join(sorted(n for n in names if n))}); "
            "use one of them"
        ]
    return []


def preflight_problems(config: Any) -> list[str]:
    """Every problem found (options, packages, then the Hub); each line says what to change. Logs what the
    push does where a TRL ``hub_strategy`` would suggest otherwise (nothing is ignored silently)."""
    strategy = str(getattr(config.hub_strategy, "value", config.hub_strategy))
    if config.push_to_hub and strategy != "end":
        logger.warning(
            "hf_dpo: hub_strategy=%s: the run pushes final/ once, at the end of training; "
            "checkpoints are not uploaded",
            strategy,
        )
    # Like TRL's scripts the command always trains (do_train); do_eval is checked once the data is built.
    options = (
        ["do_predict=true: hf-dpo-train has no predict step; drop do_predict"] if config.do_predict else []
    )
    return options + package_problems(config) + hub_problems(config)
