"""Keys of TRL's scripts and of the alignment-handbook recipes, resolved to ``TrainConfig`` keys with the same
meaning (the table is in docs/running.md): :func:`resolve_aliases` rewrites the merged YAML + command-line
mapping before it is typed; :func:`key_hint` explains known keys that ``hf_dpo`` does not take."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Set
from typing import Any

from hf_dpo.run.cli_config import ConfigError, coerce_value

logger = logging.getLogger("hf_dpo")

Settings = dict[str, Any]  # dotted hf_dpo key -> value
Assignments = list[tuple[str, Any, str]]  # (hf_dpo key, value, the alias that set it)
Convert = Callable[[Any, str], Settings]  # (value, alias) -> the hf_dpo settings it stands for


def _to(key: str, skip_null: bool = True) -> Convert:
    """The value unchanged under ``key`` (a YAML null sets nothing: the hf_dpo default stays)."""
    return lambda value, name: {} if skip_null and _is_null(value) else {key: value}


def _if_true(settings: Settings) -> Convert:
    """``settings`` when the value is true, else nothing."""
    return lambda value, name: dict(settings) if _bool(value, name) else {}


def _bool(value: Any, name: str) -> bool:
    return bool(coerce_value(value, bool, name))


def _revision(value: Any, name: str) -> Settings:
    return {} if _is_null(value) or str(value) == "main" else {"model_init_kwargs.revision": str(value)}


def _warmup_ratio(value: Any, name: str) -> Settings:
    ratio = coerce_value(value, float, name)
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(
            f"{name}={ratio} must be in [0, 1) (a fraction of the training steps); for a number of steps use "
            "warmup_steps=<int>"
        )
    return {"warmup_steps": ratio}  # TrainingArguments 5.x: a float warmup_steps in [0, 1) is a ratio


def _lora_task_type(value: Any, name: str) -> Settings:
    if str(value) != "CAUSAL_LM":
        raise ConfigError(f"{name}={value!r}: hf_dpo trains causal LMs only; use CAUSAL_LM or drop the key")
    return {}


def _streaming(value: Any, name: str) -> Settings:
    if _bool(value, name):
        raise ConfigError(f"{name}=true: streaming datasets are not supported; drop {name}")
    return {}


ALIASES: dict[str, Convert] = {
    "model_name_or_path": _to("model_name"),
    "output_dir": _to("log_path", skip_null=False),
    "beta": _to("dpo_beta", skip_null=False),
    "overwrite_output_dir": _if_true({"resume": "overwrite"}),
    "torch_dtype": _to("model_init_kwargs.dtype"),
    "dtype": _to("model_init_kwargs.dtype"),
    "attn_implementation": _to("model_init_kwargs.attn_implementation"),
    "use_flash_attention_2": _if_true({"model_init_kwargs.attn_implementation": "flash_attention_2"}),
    "model_revision": _revision,
    "hub_model_revision": _to("hub_revision"),
    "warmup_ratio": _warmup_ratio,
    "preprocessing_num_workers": _to("dataset_num_proc"),
    "lora_task_type": _lora_task_type,
    "dataset_streaming": _streaming,
    "streaming": _streaming,
}

# Keys that only make sense in a group; resolved together by the functions below.
PEFT_KEYS = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "lora_modules_to_save": "modules_to_save",
}
QUANT_KEYS = {
    "bnb_4bit_quant_type": "bnb_4bit_quant_type",
    "use_bnb_nested_quant": "bnb_4bit_use_double_quant",
    "bnb_4bit_quant_storage": "bnb_4bit_quant_storage",
    "bnb_4bit_compute_dtype": "bnb_4bit_compute_dtype",
}
DATASET_KEYS = {
    "dataset_config": "config_name",
    "dataset_train_split": "train_split",
    "dataset_test_split": "test_split",
}
MIXTURE_KEYS = ("dataset_mixture", "dataset_mixer", "dataset_splits", "datasets", "test_split_size")
# Keys of TRL / the handbook that hf_dpo does not take, with what to do instead.
UNSUPPORTED = {
    "chat_template": "a template string in the config is not supported; the tokenizer's own chat template is "
    "used, or pick one with renderer_name=...",
    "use_rslora": "rsLoRA is not supported by the peft section (r, lora_alpha, lora_dropout, target_modules, "
    "bias, modules_to_save)",
    "use_dora": "DoRA is not supported by the peft section",
    "lora_target_parameters": "not supported; use lora_target_modules (peft.target_modules)",
    "ignore_bias_buffers": "not needed: hf_dpo's DDP path has no bool buffers to ignore; drop it",
    "env": "set environment variables in the shell instead",
    "ref_model_init_kwargs": "the reference is a copy of the policy (or the base model under LoRA); drop it",
    "model_adapter_name": "not supported; drop it",
    "ref_adapter_name": "not supported; drop it",
    "reference_free": "not a key here; the reference-free objectives are loss_type=simpo or orpo",
    "max_completion_length": "not supported; use max_length (prompt + completion) and max_prompt_length",
    "generate_during_eval": "not supported; see hf_dpo.eval for generation evaluations",
}


def key_hint(key: str) -> str | None:
    """A specific hint for an unknown key that TRL or the handbook knows (None for any other key)."""
    why = UNSUPPORTED.get(key)
    return f"a TRL / alignment-handbook key that hf_dpo does not take: {why}" if why else None


def alias_names() -> list[str]:
    """Every key resolved here (for did-you-mean hints)."""
    groups = ["use_peft", *PEFT_KEYS, "load_in_4bit", "load_in_8bit", *QUANT_KEYS]
    return [*ALIASES, *groups, "dataset_name", *DATASET_KEYS, *MIXTURE_KEYS]


def resolve_aliases(data: Mapping[str, Any], cli_keys: Set[str] = frozenset()) -> dict[str, Any]:
    """``data`` (the YAML mapping with the command-line overrides applied) with every alias replaced by the
    ``hf_dpo`` key(s) it stands for. ``cli_keys``: the (dotted) keys given on the command line."""
    data = dict(data)
    _drop_replaced_dataset(data, cli_keys)
    settings: Assignments = []
    for name in [k for k in data if k in ALIASES]:
        settings += [(key, v, name) for key, v in ALIASES[name](data.pop(name), name).items()]
    settings += _peft_settings(data)
    settings += _quantization_settings(data, settings)
    settings += _dataset_settings(data)
    settings += _mixture_settings(data)
    for key, value, alias in settings:
        _apply(data, key, value, alias, cli_keys)
    return data


def _apply(data: dict[str, Any], key: str, value: Any, alias: str, cli_keys: Set[str]) -> None:
    """Set dotted ``key``; if it is already set to another value, the command line wins over the YAML, and
    two settings from the same place are an error naming both keys."""
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        if node.get(part) in (None, True):
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"config key {alias!r} sets {key!r}, but {part!r} is not a section here")
    if value == {} and isinstance(node.get(last), dict):
        return  # "this section is on" and it already is
    if last in node and node[last] != value and str(node[last]) != str(value):
        alias_from_cli = alias in cli_keys
        key_from_cli = any(key == k or key.startswith(k + ".") or k.startswith(key + ".") for k in cli_keys)
        if alias_from_cli == key_from_cli:
            raise ConfigError(
                f"config keys {alias!r} and {key!r} both set {key!r}, to {_show(value)} and "
                f"{_show(node[last])} ({alias!r} is the TRL / alignment-handbook name for it); keep one"
            )
        if key_from_cli:
            return  # the command line wins
    node[last] = value


def _drop_replaced_dataset(data: dict[str, Any], cli_keys: Set[str]) -> None:
    """``dataset=`` / ``data_files=`` / ``dataset_name=`` on the command line replace a dataset that the YAML
    names with ``dataset_name`` (and its split keys) or a mixture."""
    dropped = [k for k in ["dataset_name", *DATASET_KEYS, *MIXTURE_KEYS] if k in data and k not in cli_keys]
    if not dropped or not cli_keys & {"dataset", "data_files", "dataset_name"}:
        return
    for key in dropped:
        del data[key]
    logger.info("hf_dpo: the command line's dataset replaces the YAML's %s", ", ".join(dropped))
    if "dataset" not in cli_keys and "dataset_name" not in cli_keys:
        data["dataset"] = "custom"  # data_files alone: the generic builder
        data.pop("dataset_options", None)


def _peft_settings(data: dict[str, Any]) -> Assignments:
    values = {k: data.pop(k) for k in PEFT_KEYS if k in data}
    if "use_peft" not in data:
        if values:
            raise ConfigError(
                f"{', '.join(values)} given without use_peft: add use_peft=true for LoRA (as in TRL), or use "
                "the peft section (peft.r=16, ...)"
            )
        return []
    if not _bool(data.pop("use_peft"), "use_peft"):
        if values:
            logger.warning(
                "hf_dpo: use_peft is false, so %s have no effect (full fine-tune)", ", ".join(values)
            )
        return []
    return [("peft", {}, "use_peft")] + [
        (f"peft.{PEFT_KEYS[k]}", v, k) for k, v in values.items() if not _is_null(v)
    ]


def _quantization_settings(data: dict[str, Any], settings: Assignments) -> Assignments:
    four = _bool(data.pop("load_in_4bit", False), "load_in_4bit")
    eight = _bool(data.pop("load_in_8bit", False), "load_in_8bit")
    values = {k: data.pop(k) for k in QUANT_KEYS if k in data}
    if four and eight:
        raise ConfigError("load_in_4bit and load_in_8bit are both true; choose one")
    if not (four or eight):
        if values:
            logger.warning("hf_dpo: %s have no effect without load_in_4bit: true", ", ".join(values))
        return []
    flag = "load_in_4bit" if four else "load_in_8bit"
    if not any(key == "peft" or key.startswith("peft.") for key, _, _ in settings) and "peft" not in data:
        raise ConfigError(
            f"{flag}=true quantizes the base weights, which can then only be trained through LoRA "
            "adapters: add use_peft=true (QLoRA)"
        )
    if eight and values:
        raise ConfigError(f"{', '.join(values)} apply to load_in_4bit only; drop them with load_in_8bit")
    section = "model_init_kwargs.quantization_config"
    out = [(f"{section}.{flag}", True, flag)]
    out += [(f"{section}.{QUANT_KEYS[k]}", v, k) for k, v in values.items() if not _is_null(v)]
    dtype = next((v for key, v, _ in settings if key == "model_init_kwargs.dtype"), None)
    if four and dtype is not None and "bnb_4bit_compute_dtype" not in values:  # TRL: compute dtype = dtype
        out.append((f"{section}.bnb_4bit_compute_dtype", str(dtype).removeprefix("torch."), "torch_dtype"))
    return out


def _dataset_settings(data: dict[str, Any]) -> Assignments:
    from hf_dpo.data.mixture import source_builder

    values = {k: data.pop(k) for k in DATASET_KEYS if k in data}
    if "dataset_name" not in data:
        if values and not any(k in data for k in MIXTURE_KEYS):
            raise ConfigError(
                f"{', '.join(values)} given without dataset_name; add dataset_name=... or drop them"
            )
        for key in values:  # TRL ignores them next to a mixture
            logger.warning("hf_dpo: %s has no effect next to a dataset mixture", key)
        return []
    # a builder name, the Hub id a builder reads by default, else custom with path
    builder, options = source_builder(str(data.pop("dataset_name")))
    out = [("dataset", builder, "dataset_name")]
    out += [(f"dataset_options.{k}", v, "dataset_name") for k, v in options.items()]
    return out + [(f"dataset_options.{DATASET_KEYS[k]}", v, k) for k, v in values.items()]


def _mixture_settings(data: dict[str, Any]) -> Assignments:
    from hf_dpo.data.mixture import mixture_options

    present = {k: data.pop(k) for k in MIXTURE_KEYS if k in data}
    if not present:
        return []
    first = next(iter(present))
    return [("dataset", "mixture", first)] + [
        (f"dataset_options.{k}", v, first) for k, v in mixture_options(present).items()
    ]


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~", ""))


def _show(value: Any) -> str:
    return repr(str(value)) if isinstance(value, str) else repr(value)
