"""Every shipped YAML config loads: training configs through ``load_config(TrainConfig, ...)`` into a valid
``DPOConfig`` (no model is loaded), accelerate configs through accelerate's own launcher code (no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_dpo.config import DPOConfig
from hf_dpo.data import builder_class, get_builder
from hf_dpo.run.cli_config import load_config, save_config
from hf_dpo.train import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parents[1] / "yaml_configs"
TRAIN_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((CONFIG_DIR / "accelerate").glob("*.yaml"))


def test_the_expected_configs_exist():
    assert {p.name for p in TRAIN_CONFIGS} >= {
        "quickstart.yaml",
        "lora.yaml",
        "hhh.yaml",
        "hhh_cpu.yaml",
        "hhh_harmless_cpu.yaml",
        "helpsteer3.yaml",
        "ultrafeedback.yaml",
        "arithmetic_on_policy.yaml",
    }
    assert {p.name for p in ACCELERATE_CONFIGS} == {
        "single_gpu.yaml",
        "multi_gpu_ddp.yaml",
        "fsdp.yaml",
        "deepspeed_zero2.yaml",
        "deepspeed_zero3.yaml",
    }


@pytest.fixture
def bf16_gpu(monkeypatch):
    """The GPU configs set bf16; pretend this CPU machine has a bf16 GPU so TrainingArguments accepts it."""
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda *a, **k: True)


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_train_config_resolves_to_a_valid_dpo_config(path, tmp_path, bf16_gpu):
    config = load_config(TrainConfig, [str(path)])
    args = config.dpo_config()
    assert isinstance(args, DPOConfig)
    assert args.output_dir == config.log_path and args.beta == config.dpo_beta
    assert args.max_prompt_length < args.max_length
    # The dataset options are ones the builder takes (builds it, without loading any data).
    builder = get_builder(config.dataset, **config.dataset_kwargs())
    assert isinstance(builder, builder_class(config.dataset))
    if config.peft is not None:
        lora = config.peft.to_peft_config()
        assert lora.r == config.peft.r and lora.lora_alpha == config.peft.lora_alpha
    # What the run saves to log_path/config.yaml loads back to the same config.
    save_config(config, tmp_path / "config.yaml")
    assert load_config(TrainConfig, [str(tmp_path / "config.yaml")]) == config


@pytest.mark.parametrize("name", ["hhh.yaml", "helpsteer3.yaml", "ultrafeedback.yaml"])
def test_gpu_configs_use_bf16_and_an_effective_batch_of_32_to_64(name, bf16_gpu):
    args = load_config(TrainConfig, [str(CONFIG_DIR / name)]).dpo_config()
    assert args.bf16 and args.activation_checkpointing
    assert 32 <= args.per_device_train_batch_size * args.gradient_accumulation_steps <= 64
    assert 5e-7 <= args.learning_rate <= 1e-6 and args.beta == 0.1


def test_lora_config_is_the_135m_gguf_with_all_linear_adapters():
    config = load_config(TrainConfig, [str(CONFIG_DIR / "lora.yaml")])
    assert config.model_name.endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and config.dataset == "arithmetic"
    assert (config.peft.r, config.peft.lora_alpha, config.peft.lora_dropout) == (16, 32, 0.05)
    assert config.peft.target_modules == "all-linear" and not config.dpo_config().bf16  # runs on CPU


# ---- accelerate configs: parsed and applied by accelerate's launcher code --------------------------------
def _launch_args(path: Path):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "examples/run.py", "x.yaml"])
    _, defaults, _ = _validate_launch_command(args)
    return args, defaults


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads_with_accelerates_parser(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(path))  # rejects unknown top-level keys
    assert isinstance(config, ClusterConfig)
    args, _ = _launch_args(path)
    expected = {
        "single_gpu.yaml": ("NO", 1),
        "multi_gpu_ddp.yaml": ("MULTI_GPU", 8),
        "fsdp.yaml": ("FSDP", 8),
        "deepspeed_zero2.yaml": ("DEEPSPEED", 8),
        "deepspeed_zero3.yaml": ("DEEPSPEED", 8),
    }[path.name]
    assert (config.distributed_type.value, args.num_processes) == expected
    assert args.use_fsdp == (path.name == "fsdp.yaml")
    assert args.use_deepspeed == path.name.startswith("deepspeed")
    assert args.multi_gpu == (path.name == "multi_gpu_ddp.yaml")
    # accelerate copies nested keys onto the launch arguments without checking them: a misspelt key would be
    # ignored silently, so check each one against the launcher's options.
    from accelerate.commands.launch import launch_command_parser

    options = {a.dest for a in launch_command_parser()._actions}
    for section in (config.fsdp_config, config.deepspeed_config):
        unknown = [k for k in section if k not in options]
        assert not unknown, f"{path.name}: keys accelerate launch does not know: {unknown}"


def _plugin_env(monkeypatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)


def test_fsdp_config_builds_the_fsdp_plugin(monkeypatch):
    """Full shard (FSDP2 reshard after forward), transformer-layer wrapping, a full state dict at save."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _ = _launch_args(CONFIG_DIR / "accelerate" / "fsdp.yaml")
    _plugin_env(monkeypatch, prepare_multi_gpu_env(args))
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy.__name__ == "transformer_auto_wrap_policy"
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert plugin.activation_checkpointing is False  # the training YAMLs use the Trainer's instead


@pytest.mark.parametrize(("name", "stage"), [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_config_builds_the_deepspeed_plugin(name, stage, monkeypatch):
    """The ZeRO stage reaches DeepSpeed; accumulation and clipping stay "auto" (taken from the Trainer)."""
    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults = _launch_args(CONFIG_DIR / "accelerate" / name)
    args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config)  # as deepspeed_launcher
    _, env = prepare_deepspeed_cmd_env(args)
    _plugin_env(monkeypatch, env)
    ds = DeepSpeedPlugin().deepspeed_config
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["gradient_accumulation_steps"] == ds["gradient_clipping"] == "auto"
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is (stage == 3)
