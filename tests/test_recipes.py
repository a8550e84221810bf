"""Configs people already have: alignment-handbook / TRL style YAMLs (yaml_configs/recipes/, written for this
project in those schemas), TRL flags, key aliases, dataset mixtures, one error for every unknown key, and the
pre-flight checks (nothing written when they fail)."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from conftest import HH_RLHF, TINY_MODEL, require_shared

from hf_dpo.data import build_preference_dataset
from hf_dpo.run.cli_config import ConfigError, load_config
from hf_dpo.train import TrainConfig, main, run

RECIPES = Path(__file__).resolve().parents[1] / "yaml_configs" / "recipes"
RECIPE_FILES = sorted(RECIPES.glob("*.yaml"))

# What this machine changes, and nothing else: a tiny local model and local data on 2 CPU cores, 2 steps.
ENVIRONMENT = [
    "max_steps=2",
    "bf16=false",
    "dtype=float32",
    "preprocessing_num_workers=1",
    "per_device_train_batch_size=2",
    "per_device_eval_batch_size=4",
    "gradient_accumulation_steps=1",
    "max_length=128",
    "max_prompt_length=64",
    "eval_steps=1",
    "logging_steps=1",
    "dataloader_pin_memory=false",
]
# ... plus, for the QLoRA recipe, what a CPU without bitsandbytes / flash-attn cannot do.
NO_GPU_PACKAGES = ["load_in_4bit=false", "attn_implementation=sdpa", "optim=adamw_torch"]


def _environment(tmp_path: Path) -> list[str]:
    data = require_shared(HH_RLHF)
    model = require_shared(TINY_MODEL)
    out = tmp_path / "run"
    return [
        f"model_name_or_path={model}",
        "dataset=hhh",
        f"data_files={data}",
        "test_size=8",
        f"output_dir={out}",
    ]


def test_the_recipes_exist():
    assert {p.name for p in RECIPE_FILES} == {
        "handbook_zephyr_dpo_full.yaml",
        "handbook_zephyr_dpo_qlora.yaml",
        "handbook_smollm2_dpo_mixture.yaml",
        "trl_dpo_lora.yaml",
    }


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_recipe_trains_with_only_environment_overrides(path, tmp_path, capsys):
    extra = NO_GPU_PACKAGES if "qlora" in path.name else []
    argv = [str(path), *_environment(tmp_path), *ENVIRONMENT, *extra]
    assert main(argv) == 0, capsys.readouterr().err
    log = tmp_path / "run"
    saved = yaml.safe_load((log / "config.yaml").read_text())
    recipe = yaml.safe_load(path.read_text())
    # the recipe's own settings reached the run under hf_dpo's names
    assert saved["dpo_beta"] == recipe["beta"] and saved["learning_rate"] == recipe["learning_rate"]
    assert saved["warmup_steps"] == recipe.get("warmup_ratio", 0)
    assert (saved["peft"] is not None) == recipe.get("use_peft", False)
    if recipe.get("use_peft"):
        assert saved["peft"]["r"] == recipe["lora_r"] and saved["peft"]["lora_alpha"] == recipe["lora_alpha"]
        assert (log / "final" / "adapter_model.safetensors").exists()
    else:
        assert (log / "final" / "model.safetensors").exists()
    rows = [json.loads(line) for line in (log / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "dpo_loss" in r] == [1, 2]
    assert any("test/nll" in r for r in rows)


def test_qlora_recipe_as_written_stops_in_preflight_naming_each_missing_package(tmp_path, capsys):
    """bitsandbytes (load_in_4bit, paged optimizer) and flash-attn are absent here: one exit-2 error before
    anything is loaded or written."""
    argv = [str(RECIPES / "handbook_zephyr_dpo_qlora.yaml"), *_environment(tmp_path), *ENVIRONMENT[:-3]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "optim=paged_adamw_32bit needs the package bitsandbytes" in err
    assert "load_in_4bit / load_in_8bit (quantization_config) needs the package bitsandbytes" in err
    assert "attn_implementation=flash_attention_2 needs the package flash_attn" in err
    assert not (tmp_path / "run").exists()


def test_recipes_resolve_to_hf_dpo_keys_as_written():
    full = load_config(TrainConfig, [str(RECIPES / "handbook_zephyr_dpo_full.yaml")])
    assert (full.model_name, full.log_path, full.dpo_beta) == (
        "alignment-handbook/zephyr-7b-sft-full",
        "data/zephyr-7b-dpo-full",
        0.01,
    )
    assert full.resume == "overwrite" and full.warmup_steps == 0.1 and full.dataset_num_proc == 12
    assert full.model_init_kwargs is None  # torch_dtype: null keeps the float32 default
    assert full.dataset == "mixture" and full.dataset_options["datasets"] == [
        {
            "id": "HuggingFaceH4/ultrafeedback_binarized",
            "weight": 1.0,
            "split": "train_prefs",
            "test_split": "test_prefs",
        }
    ]
    qlora = load_config(TrainConfig, [str(RECIPES / "handbook_zephyr_dpo_qlora.yaml")])
    assert qlora.model_init_kwargs == {
        "dtype": "bfloat16",
        "attn_implementation": "flash_attention_2",
        "quantization_config": {
            "load_in_4bit": True,
            "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": False,
            "bnb_4bit_compute_dtype": "bfloat16",
        },
    }
    assert qlora.peft.r == 128 and len(qlora.peft.target_modules) == 7 and qlora.hub_strategy == "every_save"
    trl = load_config(TrainConfig, ["--config", str(RECIPES / "trl_dpo_lora.yaml")])
    assert trl.dataset == "custom" and trl.dataset_options == {
        "path": "trl-lib/ultrafeedback_binarized",
        "train_split": "train",
        "test_split": "test",
    }
    assert trl.padding_free is False and trl.batch_layout == "auto"
    assert trl.peft.target_modules == "all-linear"


# ---- TRL command-line flags --------------------------------------------------------------------------------
def test_a_trl_command_line_trains(tmp_path):
    """trl/scripts/dpo.py's documented flags, with the program name replaced."""
    argv = [
        "--dataset_name", "arithmetic",
        "--model_name_or_path", str(require_shared(TINY_MODEL)),
        "--learning_rate", "5.0e-6",
        "--num_train_epochs", "1",
        "--per_device_train_batch_size", "2",
        "--max_steps", "2",
        "--gradient_accumulation_steps", "1",
        "--eval_strategy", "steps",
        "--eval_steps", "2",
        "--output_dir", str(tmp_path / "run"),
        "--no_remove_unused_columns",
        "--use_peft",
        "--lora_r", "8",
        "--lora_alpha", "16",
        "--lora_target_modules", "q_proj", "v_proj",
        "--dataset_options.num_train=8", "dataset_options.num_test=4",
    ]  # fmt: skip
    config = load_config(TrainConfig, argv)
    assert config.peft.target_modules == ["q_proj", "v_proj"] and config.remove_unused_columns is False
    assert (config.peft.r, config.peft.lora_alpha, config.max_steps) == (8, 16, 2)
    assert main(argv) == 0 and (tmp_path / "run" / "final" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config", "X", "--bf16"], {"bf16": True}),
        (["--config=X", "--bf16", "false"], {"bf16": False}),
        (["X", "--no_bf16", "--seed=3"], {"bf16": False, "seed": 3}),
        (["--seed", "3", "--config", "X", "learning_rate=1e-5"], {"seed": 3, "learning_rate": 1e-5}),
        (
            ["X", "--report_to", "wandb", "mlflow", "--max-steps", "4"],
            {"report_to": ["wandb", "mlflow"], "max_steps": 4},
        ),
    ],
)
def test_flag_styles(argv, expected, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("log_path: r\nmodel_name: m\ndataset: arithmetic\n")
    config = load_config(TrainConfig, [str(path) if a == "X" else a.replace("=X", f"={path}") for a in argv])
    assert {k: getattr(config, k) for k in expected} == expected


def test_two_config_files_are_an_error(tmp_path):
    with pytest.raises(ConfigError, match="two config files"):
        load_config(TrainConfig, ["a.yaml", "--config", "b.yaml"])


# ---- aliases -----------------------------------------------------------------------------------------------
BASE = ["log_path=r", "model_name=m", "dataset=arithmetic"]


@pytest.mark.parametrize(
    ("alias", "key", "value"),
    [
        ("model_name_or_path=x/y", "model_name", "x/y"),
        ("output_dir=o", "log_path", "o"),
        ("beta=0.3", "dpo_beta", 0.3),
        ("torch_dtype=bfloat16", "model_init_kwargs", {"dtype": "bfloat16"}),
        ("dtype=float16", "model_init_kwargs", {"dtype": "float16"}),
        ("attn_implementation=eager", "model_init_kwargs", {"attn_implementation": "eager"}),
        ("use_flash_attention_2=true", "model_init_kwargs", {"attn_implementation": "flash_attention_2"}),
        ("model_revision=v2", "model_init_kwargs", {"revision": "v2"}),
        ("model_revision=main", "model_init_kwargs", None),
        ("overwrite_output_dir=true", "resume", "overwrite"),
        ("overwrite_output_dir=false", "resume", "refuse"),
        ("hub_model_revision=dev", "hub_revision", "dev"),
        ("warmup_ratio=0.1", "warmup_steps", 0.1),
        ("preprocessing_num_workers=4", "dataset_num_proc", 4),
        ("lora_task_type=CAUSAL_LM", "peft", None),
    ],
)
def test_each_alias_sets_its_key(alias, key, value):
    base = [b for b in BASE if not b.startswith(f"{key}=")]
    assert getattr(load_config(TrainConfig, [*base, alias]), key) == value


@pytest.mark.parametrize(
    ("key", "value", "field", "expected"),
    [
        ("padding_free", "true", "batch_layout", "packed"),  # TRL field: auto -> a padding-free layout
        ("padding_free", "false", "batch_layout", "auto"),  # no padding-free demand: auto stays free
        ("trust_remote_code", "true", "trust_remote_code", True),  # TRL field: model and tokenizer
    ],
)
def test_trl_fields_that_are_dpo_config_fields(key, value, field, expected):
    """TRL keys that are DPOConfig fields of their own take effect through DPOConfig, not an alias."""
    config = load_config(TrainConfig, [*BASE, f"{key}={value}"])
    assert getattr(config.dpo_config(), field) == expected


def test_peft_and_quantization_aliases():
    config = load_config(
        TrainConfig,
        [
            *BASE,
            *("use_peft=true", "lora_r=8", "lora_alpha=16", "lora_dropout=0.1"),
            *("lora_target_modules=q_proj,v_proj", "lora_modules_to_save=lm_head", "load_in_4bit=true"),
            *("bnb_4bit_quant_type=fp4", "use_bnb_nested_quant=true", "bnb_4bit_quant_storage=uint8"),
            "torch_dtype=bfloat16",
        ],
    )
    assert (config.peft.r, config.peft.lora_alpha, config.peft.lora_dropout) == (8, 16, 0.1)
    assert config.peft.target_modules == ["q_proj", "v_proj"] and config.peft.modules_to_save == ["lm_head"]
    assert config.model_init_kwargs["quantization_config"] == {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "fp4",
        "bnb_4bit_use_double_quant": "true",
        "bnb_4bit_quant_storage": "uint8",
        "bnb_4bit_compute_dtype": "bfloat16",  # as TRL: the compute dtype is the load dtype
    }
    assert load_config(TrainConfig, [*BASE, "use_peft=true"]).peft is not None  # TRL's defaults
    eight = load_config(TrainConfig, [*BASE, "use_peft=true", "load_in_8bit=true"])
    assert eight.model_init_kwargs == {"quantization_config": {"load_in_8bit": True}}


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["lora_r=8"], "lora_r given without use_peft"),
        (["load_in_4bit=true"], "add use_peft=true (QLoRA)"),
        (["use_peft=true", "load_in_4bit=true", "load_in_8bit=true"], "both true"),
        (["warmup_ratio=1.5"], "must be in [0, 1)"),
        (["lora_task_type=SEQ_CLS"], "causal LMs only"),
        (["dataset_streaming=true"], "not supported"),
        (["dataset_test_split=test"], "without dataset_name"),
    ],
)
def test_alias_errors(argv, needle):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, [*BASE, *argv])
    assert needle in str(e.value)


def test_alias_and_own_key_in_one_place_with_different_values_names_both(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "log_path: a\noutput_dir: b\nmodel_name: m\ndataset: arithmetic\nwarmup_steps: 5\nwarmup_ratio: 0.1\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, [str(path)])
    assert "'output_dir' and 'log_path'" in str(e.value)
    with pytest.raises(ConfigError, match="'warmup_ratio' and 'warmup_steps'"):
        load_config(TrainConfig, [*BASE, "warmup_steps=5", "warmup_ratio=0.1"])
    with pytest.raises(ConfigError, match="'lora_r' and 'peft.r'"):
        load_config(TrainConfig, [*BASE, "use_peft=true", "lora_r=8", "peft.r=4"])
    # the same value twice is fine; the command line wins over the YAML, whichever spelling each uses
    path.write_text("log_path: a\nmodel_name: m\ndataset: arithmetic\nmodel_name_or_path: m\n")
    assert load_config(TrainConfig, [str(path), "output_dir=c"]).log_path == "c"
    path.write_text("output_dir: a\nmodel_name: m\ndataset: arithmetic\n")
    assert load_config(TrainConfig, [str(path), "log_path=c"]).log_path == "c"


def test_every_unknown_key_in_one_error_with_the_right_hints(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "model_name_or_path: m\noutput_dir: o\ndataset_name: arithmetic\ntorch_dtpe: bfloat16\n"
        "use_rslora: true\n"
        "chat_template: '{{ x }}'\nlora_rr: 3\npeft: {rr: 2}\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, [str(path), "dpo_betta=0.1"])
    message = str(e.value)
    assert message.startswith("6 unknown config key(s)")
    assert "'torch_dtpe'; did you mean 'torch_dtype'" in message
    assert "'lora_rr'; did you mean 'lora_r'" in message
    assert "'peft.rr'; did you mean 'peft.r'" in message
    assert "'dpo_betta'; did you mean 'dpo_beta'" in message
    assert "'use_rslora'; a TRL / alignment-handbook key that hf_dpo does not take" in message
    assert "'chat_template'; a TRL / alignment-handbook key" in message and "renderer_name" in message


# ---- datasets: dataset_name and mixtures -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "dataset", "options"),
    [
        ("hhh", "hhh", {}),
        ("Anthropic/hh-rlhf", "hhh", {}),
        ("HuggingFaceH4/ultrafeedback_binarized", "ultrafeedback", {}),
        ("nvidia/HelpSteer3", "helpsteer3", {}),
        ("trl-lib/ultrafeedback_binarized", "custom", {"path": "trl-lib/ultrafeedback_binarized"}),
        ("data/pairs.jsonl", "custom", {"path": "data/pairs.jsonl"}),
    ],
)
def test_dataset_name_resolves_to_a_builder(name, dataset, options):
    config = load_config(TrainConfig, ["log_path=r", "model_name=m", f"dataset_name={name}"])
    assert (config.dataset, config.dataset_options) == (dataset, options)
    config = load_config(
        TrainConfig, ["log_path=r", "model_name=m", f"dataset_name={name}", "dataset_config=c"]
    )
    assert config.dataset_options["config_name"] == "c"


def _pairs_file(path: Path, tag: str, n: int) -> Path:
    rows = [{"prompt": f"{tag} {i}?", "chosen": f"yes {i}", "rejected": f"no {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tags(dataset) -> list[str]:
    return [row["prompt"][0]["content"].split()[0] for row in dataset]


def test_handbook_mixture_weights_each_source_and_carves_a_test_split(tmp_path, caplog):
    caplog.set_level("INFO", logger="hf_dpo")
    a = _pairs_file(tmp_path / "a.jsonl", "A", 40)
    b = _pairs_file(tmp_path / "b.jsonl", "B", 20)
    hh = require_shared(HH_RLHF)
    data = build_preference_dataset(
        "mixture",
        datasets=[
            {"id": str(a), "weight": 0.5},
            {
                "id": "custom",
                "data_files": str(b),
                "split": "train",
                "columns": ["prompt", "chosen", "rejected"],
            },
            {"id": "hhh", "data_files": str(hh), "weight": 0.01},
        ],
        seed=0,
        test_size=6,
    )
    hh_pairs = len(build_preference_dataset("hhh", data_files=str(hh), test_size=0).train)
    tags = _tags(data.train) + _tags(data.test)
    assert tags.count("A") == 20 and tags.count("B") == 20
    assert len(tags) == 40 + int(0.01 * hh_pairs) and len(data.test) == 6
    logged = [r.getMessage() for r in caplog.records if "mixture source" in r.getMessage()]
    assert len(logged) == 3 and f"'{a}': 40 train pairs, 20 kept" in logged[0]
    again = build_preference_dataset("mixture", datasets=[{"id": str(a), "weight": 0.5}], seed=0)
    assert len(again.train) == 20 and len(again.test) == 0  # no test_size: no test split (as the handbook)


def test_trl_fractions_are_shares_of_the_largest_mixture_without_repeats(tmp_path):
    a = _pairs_file(tmp_path / "a.jsonl", "A", 40)
    b = _pairs_file(tmp_path / "b.jsonl", "B", 20)
    data = build_preference_dataset(
        "mixture", datasets=[{"path": str(a), "fraction": 3}, {"path": str(b), "fraction": 1}], test_size=0
    )
    # shares 3/4 and 1/4: A limits the size to 40 / 0.75 = 53.3 -> 40 A and 13 B
    assert _tags(data.train).count("A") == 40 and _tags(data.train).count("B") == 13


def test_older_dataset_mixer_with_dataset_splits(tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    _pairs_file(folder / "train_prefs.jsonl", "T", 10)
    _pairs_file(folder / "test_prefs.jsonl", "E", 4)
    path = tmp_path / "c.yaml"
    path.write_text(
        "log_path: r\nmodel_name: m\ndataset_mixer:\n  custom: 0.5\n"
        "dataset_splits: [train_prefs, test_prefs]\n"
        "dataset_options: {}\n"
    )
    config = load_config(TrainConfig, [str(path)])
    entry = config.dataset_options["datasets"][0]
    entry["data_files"] = {
        "train_prefs": str(folder / "train_prefs.jsonl"),
        "test_prefs": str(folder / "test_prefs.jsonl"),
    }
    data = build_preference_dataset(config.dataset, **config.dataset_options)
    assert _tags(data.train) == ["T"] * 5 and _tags(data.test) == ["E"] * 4  # test splits are not weighted


def test_command_line_dataset_replaces_the_yaml_mixture():
    recipe = str(RECIPES / "handbook_smollm2_dpo_mixture.yaml")
    config = load_config(TrainConfig, [recipe, "dataset=hhh", "data_files=x.jsonl"])
    assert (config.dataset, config.data_files, config.dataset_options) == ("hhh", "x.jsonl", {})
    config = load_config(TrainConfig, [recipe, "data_files=x.jsonl"])
    assert (config.dataset, config.data_files) == ("custom", "x.jsonl")
    config = load_config(TrainConfig, [recipe, "dataset_name=Anthropic/hh-rlhf"])
    assert (config.dataset, config.dataset_options) == ("hhh", {})


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"datasets": [{"id": "x", "wieght": 1}]}, "unknown key(s) ['wieght']"),
        ({"datasets": [{"id": "x", "weight": 2}]}, "weight must be in (0, 1]"),
        ({"datasets": [{"split": "train"}]}, "no id"),
        ({"datasets": [{"id": "a", "fraction": 1}, {"id": "b"}]}, "fraction for every dataset or for none"),
    ],
)
def test_mixture_entry_errors(options, needle):
    with pytest.raises(ValueError) as e:
        build_preference_dataset("mixture", **options)
    assert needle in str(e.value)


# ---- pre-flight --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["report_to=wandb"], "report_to=wandb needs the package wandb"),
        (["report_to=[tensorboard]"], "report_to=tensorboard needs the package tensorboard or tensorboardX"),
        (["report_to=wandbb"], "'wandbb' is not a reporting backend"),
        (["use_liger_kernel=true"], "use_liger_kernel=true needs the package liger_kernel"),
        (["optim=paged_adamw_8bit"], "optim=paged_adamw_8bit needs the package bitsandbytes"),
        (["use_peft=true", "load_in_4bit=true"], "needs the package bitsandbytes"),
        (["attn_implementation=flash_attention_2"], "needs the package flash_attn"),
        (["do_predict=true"], "no predict step"),
        (["push_to_hub=true", "hub_model_id=me/x"], "HF_HUB_OFFLINE is set"),
    ],
)
def test_preflight_failures_exit_2_and_create_nothing(argv, needle, tmp_path, capsys):
    log = tmp_path / "run"
    model = str(require_shared(TINY_MODEL))
    assert main([f"log_path={log}", f"model_name={model}", "dataset=arithmetic", *argv]) == 2
    err = capsys.readouterr().err
    assert "pre-flight check failed" in err and needle in err
    assert not log.exists() and list(tmp_path.iterdir()) == []


def test_preflight_reports_an_unreachable_hub_before_training(tmp_path, monkeypatch, capsys):
    """Today's failure: the whole run, then a raw ConnectError at the push. Now: exit 2 up front."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    log = tmp_path / "run"
    argv = [f"log_path={log}", f"model_name={require_shared(TINY_MODEL)}", "dataset=arithmetic"]
    assert main([*argv, "push_to_hub=true", "hub_model_id=me/x"]) == 2
    err = capsys.readouterr().err
    assert "the Hub login cannot be checked" in err and "push_to_hub=false" in err and not log.exists()


def test_preflight_checks_the_repo_namespace(monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub import constants

    from hf_dpo.run.preflight import hub_problems

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    who = {"name": "me", "orgs": [{"name": "my-org"}]}
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", lambda self, *a, **k: who)
    config = SimpleNamespace(push_to_hub=True, hub_token=None, hub_model_id="me/x")
    assert hub_problems(config) == []
    assert hub_problems(SimpleNamespace(**{**vars(config), "hub_model_id": "my-org/x"})) == []
    (problem,) = hub_problems(SimpleNamespace(**{**vars(config), "hub_model_id": "other/x"}))
    assert "cannot create repos under 'other'" in problem and "me, my-org" in problem


def test_do_eval_needs_test_pairs(tmp_path, capsys):
    log = tmp_path / "run"
    argv = [f"log_path={log}", f"model_name={require_shared(TINY_MODEL)}", "dataset=arithmetic"]
    assert main([*argv, "do_eval=true", "dataset_options.num_test=0"]) == 2
    assert "do_eval=true but dataset 'arithmetic' has no test pairs" in capsys.readouterr().err
    assert not log.exists()


# ---- test/nll for report_to backends -----------------------------------------------------------------------
def test_test_nll_reaches_reporters_under_eval(tmp_path):
    from transformers.integrations.integration_utils import TensorBoardCallback, rewrite_logs

    class FakeTensorBoard(TensorBoardCallback):  # the real one needs the tensorboard package
        def __init__(self) -> None:
            self.tags: list[str] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.tags += list(rewrite_logs(logs))  # what TensorBoardCallback writes

        def on_train_begin(self, args, state, control, **kwargs):
            pass

        def on_train_end(self, args, state, control, **kwargs):
            pass

    reporter = FakeTensorBoard()
    config = load_config(
        TrainConfig,
        [f"log_path={tmp_path / 'run'}", f"model_name={require_shared(TINY_MODEL)}", "dataset=arithmetic",
         "dataset_options.num_train=8", "dataset_options.num_test=4", "max_steps=2", "logging_steps=1",
         "eval_strategy=steps", "eval_steps=1", "per_device_train_batch_size=4", "quiet=true",
         "dataloader_pin_memory=false"],
    )  # fmt: skip
    result = run(config, callbacks=[reporter])
    assert "eval/test/nll" in reporter.tags and "train/test/nll" not in reporter.tags
    assert any("test/nll" in h for h in result.trainer.state.log_history)  # the run's own name is kept
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum("test/nll" in r for r in rows) >= 2 and not any("eval_test/nll" in r for r in rows)
