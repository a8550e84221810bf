"""load_config / save_config, TrainConfig, and the training command's bad-input errors (nothing written)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import HH_RLHF, TINY_MODEL, require_shared

from hf_dpo.run.cli_config import ConfigError, config_to_dict, load_config, save_config
from hf_dpo.train import (
    _PROBE_PREFIX,
    RunSetupError,
    TrainConfig,
    _check_log_path,
    _create_log_path,
    load_data,
    main,
)


@dataclass
class Section:
    r: int = 8
    names: list[str] | str = "all"


@dataclass
class Toy:
    name: str
    rate: float = 1e-6
    steps: int = 10
    flag: bool = False
    maybe: int | None = None
    tags: list[str] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    section: Section | None = None


def test_overrides_are_typed_from_field_types(tmp_path):
    c = load_config(
        Toy,
        [
            "name=x",
            "rate=5e-7",
            "steps=3",
            "flag=true",
            "maybe=null",
            "tags=a,b",
            "extra={a: 1.5}",
            "section.r=16",
            "section.names=[q, v]",
        ],
    )
    assert (c.name, c.rate, c.steps, c.flag, c.maybe, c.tags) == ("x", 5e-7, 3, True, None, ["a", "b"])
    assert c.extra == {"a": 1.5} and c.section == Section(r=16, names=["q", "v"])
    assert load_config(Toy, ["name=x", "section=true"]).section == Section()


def test_yaml_then_overrides_win_and_round_trip(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\nrate: 1e-5\nsection: {r: 4}\ntags: [t]\n")
    c = load_config(Toy, [str(path), "rate=2e-5", "section.names=x"])
    assert c.rate == 2e-5 and c.steps == 10 and c.section == Section(r=4, names="x") and c.tags == ["t"]
    save_config(c, tmp_path / "saved.yaml")
    assert load_config(Toy, [str(tmp_path / "saved.yaml")]) == c


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["name=x", "rat=1"], "did you mean 'rate'"),
        (["name=x", "section.rr=1"], "did you mean 'section.r'"),
        (["name=x", "steps=1.5"], "'steps'"),
        (["name=x", "flag=maybe"], "'flag'"),
        (["rate=1"], "missing required config key(s) name"),
        (["missing.yaml"], "config file not found"),
        (["name=x", "stray"], "not key=value"),
    ],
)
def test_bad_keys_and_values_name_the_key(argv, needle):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(Toy, argv)
    assert needle in str(info.value)


def test_train_config_flat_dpo_fields_alias_and_peft():
    c = load_config(
        TrainConfig,
        [
            "log_path=/tmp/x",
            "model_name=m",
            "dataset=arithmetic",
            "beta=0.3",
            "gradient_accumulation_steps=2",
            "report_to=none",
            "peft.target_modules=all-linear",
        ],
    )
    assert c.dpo_beta == 0.3 and c.gradient_accumulation_steps == 2
    args = c.dpo_config()
    assert args.beta == 0.3 and args.output_dir == "/tmp/x" and args.report_to == [] and not args.push_to_hub
    lora = c.peft.to_peft_config()
    assert lora.r == 16 and lora.target_modules == "all-linear"
    assert {"output_dir", "beta"}.isdisjoint(config_to_dict(c))


def test_alias_and_field_given_together_names_both_spellings():
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, ["log_path=x", "model_name=m", "dataset=a", "beta=0.1", "dpo_beta=0.2"])
    message = str(info.value)
    assert "'beta'" in message and "'dpo_beta'" in message and "keep one" in message


def test_flow_mapping_and_sequence_values_are_yaml_not_comma_split(tmp_path):
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)]
    train, test = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    test.write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    base = ["log_path=x", "model_name=m", "dataset=custom"]
    c = load_config(TrainConfig, [*base, f"data_files={{train: {train}, test: {test}}}"])
    assert c.data_files == {"train": str(train), "test": str(test)}
    data = load_data(c)  # the builder gets the mapping: a.jsonl is train, b.jsonl the test split
    assert data.train["prompt"] == [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    assert data.test["prompt"] == [[{"role": "user", "content": f"q{i}"}] for i in (3, 4)]
    for value in ("[a.jsonl, b.jsonl]", "a.jsonl,b.jsonl"):
        assert load_config(TrainConfig, [*base, f"data_files={value}"]).data_files == ["a.jsonl", "b.jsonl"]
    assert load_config(TrainConfig, [*base, "data_files=a.jsonl"]).data_files == "a.jsonl"
    assert load_config(Toy, ["name=[x, y]"]).name == "[x, y]"  # a plain str field stays text
    with pytest.raises(ConfigError, match=r"'data_files'.*YAML flow mapping"):
        load_config(TrainConfig, [*base, "data_files={train: a.jsonl"])


# ---- the command: each bad input -> one paragraph on stderr, exit code 2, nothing in log_path ------------
def _fails(argv, capsys, log_path: Path, needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "hf-dpo-train: error:" in err and needle in err.split("hf-dpo-train: error:")[1], err
    assert not log_path.exists() or not any(log_path.iterdir())


def test_bad_inputs_exit_nonzero_and_write_nothing(tmp_path, capsys):
    model = str(require_shared(TINY_MODEL))
    log = tmp_path / "run"
    base = [
        f"log_path={log}",
        f"model_name={model}",
        "dataset=arithmetic",
        "dataset_options.num_train=4",
        "dataset_options.num_test=2",
    ]
    _fails([str(tmp_path / "nope.yaml"), *base], capsys, log, "config file not found")
    _fails([*base[:2], "dataset=arithmetik"], capsys, log, "arithmetic")
    _fails([*base, "renderer_name=chatml2"], capsys, log, "chatml")
    _fails([*base, "dataset_options.num_trian=3"], capsys, log, "num_train")
    _fails([base[0], f"model_name={tmp_path / 'no-model'}", *base[2:]], capsys, log, "does not exist")
    _fails([base[0], f"model_name={tmp_path / 'm.gguf'}", *base[2:]], capsys, log, "does not exist")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fails([f"log_path={blocker / 'run'}", *base[1:]], capsys, blocker / "run", "not writable")
    _fails([*base, "save_merged_model=true"], capsys, log, "peft.r")
    _fails([*base, "peft.r=4", "sync_ref_model=true"], capsys, log, "sync_ref_model")
    _fails([*base, "push_to_hub=true"], capsys, log, "hub_model_id")
    _fails([*base, "push_to_hub=true", "hub_model_id=tiny-dpo"], capsys, log, "'tiny-dpo' has no owner")
    _fails([*base, "push_to_hub=true", "hub_model_id=me/tiny dpo"], capsys, log, "not a valid repo id")
    _fails([*base, "dpo_beta=-1"], capsys, log, "beta")


def test_unreadable_data_file(tmp_path, capsys):
    require_shared(HH_RLHF)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "a"\nnot json at all\n')
    log = tmp_path / "run"
    _fails(
        [f"log_path={log}", f"model_name={require_shared(TINY_MODEL)}", "dataset=hhh", f"data_files={bad}"],
        capsys,
        log,
        "hhh",
    )


def test_existing_run_is_refused_by_default(tmp_path, capsys):
    log = tmp_path / "run"
    log.mkdir()
    (log / "config.yaml").write_text("x: 1\n")
    assert main([f"log_path={log}", f"model_name={require_shared(TINY_MODEL)}", "dataset=arithmetic"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "resume=auto" in err
    assert [p.name for p in log.iterdir()] == ["config.yaml"]


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0 and "log_path" in capsys.readouterr().out


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_unwritable_log_path_is_caught_for_the_current_user(tmp_path, capsys, monkeypatch):
    """Real write probes: os.access says yes to root even where nothing can be created (CI runs as root)."""
    import hf_dpo.modeling.loading

    def no_model_load(*args, **kwargs):
        raise AssertionError("the model was loaded before log_path was checked")

    monkeypatch.setattr(hf_dpo.modeling.loading, "load_causal_lm", no_model_load)
    afile = tmp_path / "afile"
    afile.write_text("x")
    rest = ["model_name=some/model", "dataset=arithmetic", "dataset_options.num_train=4"]
    for log in (Path("/proc/hf_dpo_no_such_dir/run"), afile / "sub"):
        assert main([f"log_path={log}", *rest]) == 2
        err = capsys.readouterr().err
        assert f"log_path {str(log)!r} is not writable" in err and "choose a log_path" in err, err
        assert "Traceback" not in err and not log.exists()
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_probes_of_other_processes_are_not_a_previous_run(tmp_path):
    log = tmp_path / "run"
    (log / (_PROBE_PREFIX + "rank1")).mkdir(parents=True)
    config = load_config(TrainConfig, [f"log_path={log}", "model_name=m", "dataset=arithmetic"])
    assert _check_log_path(config) == (None, False)
    assert [p.name for p in log.iterdir()] == [_PROBE_PREFIX + "rank1"]  # our own probe was removed
    (log / "config.yaml").write_text("x: 1\n")
    with pytest.raises(RunSetupError, match=r"already holds a run \(config.yaml\)"):
        _check_log_path(config)


def test_log_path_creation_failure_is_a_setup_error(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    config = load_config(TrainConfig, [f"log_path={afile / 'run'}", "model_name=m", "dataset=arithmetic"])
    with pytest.raises(RunSetupError, match=r"cannot write the run's log_path .*Choose a log_path"):
        _create_log_path(afile / "run", config, overwrite=False)
    assert afile.read_text() == "x"


def test_a_count_stays_an_int_for_float_or_int_fields(tmp_path):
    @dataclass
    class Split:
        test_size: float | int = 0.1

    assert load_config(Split, ["test_size=20"]).test_size == 20
    assert isinstance(load_config(Split, ["test_size=20"]).test_size, int)
    assert load_config(Split, ["test_size=0.25"]).test_size == 0.25
    (tmp_path / "c.yaml").write_text("test_size: 20\n")
    assert isinstance(load_config(Split, [str(tmp_path / "c.yaml")]).test_size, int)


def test_the_hub_token_is_never_written_to_disk(tmp_path):
    config = load_config(
        TrainConfig,
        [
            "log_path=/tmp/x",
            "model_name=m",
            "dataset=arithmetic",
            "hub_token=hf_SECRET",
            "push_to_hub=true",
            "hub_model_id=me/x",
        ],
    )
    save_config(config, tmp_path / "config.yaml")
    assert "hf_SECRET" not in (tmp_path / "config.yaml").read_text()
    assert config.hub_token == "hf_SECRET"  # the run itself still has it for the push
    assert config.dpo_config().hub_token is None  # not in the TrainingArguments pickled into checkpoints
