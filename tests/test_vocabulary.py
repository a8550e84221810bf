"""The shared vocabulary: one registry type, one did-you-mean, one message check, one type check, one
source for DPO defaults."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import pytest

from hf_dpo.batching.layouts import available_layouts, get_layout
from hf_dpo.chat import check_messages, check_reply, row_error
from hf_dpo.config import DPOConfig, dpo_default
from hf_dpo.data.inspection import InspectArgs
from hf_dpo.eval.config import EvalConfig
from hf_dpo.registry import Registry, did_you_mean, unknown_name_error
from hf_dpo.run.cli_config import coerce_value, fits_type
from hf_dpo.train import TrainConfig


def test_registry_get_lists_and_suggests() -> None:
    registry: Registry[int] = Registry("colour")
    assert registry.register("red", 1) == 1
    registry.register("green", 2)
    registry.register("red", 3)  # re-registering replaces
    assert registry.get("red") == 3 and "green" in registry and "blue" not in registry
    assert registry.names() == ["green", "red"] and list(registry) == ["red", "green"] and len(registry) == 2
    with pytest.raises(ValueError) as err:
        registry.get("gren")
    assert str(err.value) == "Unknown colour 'gren'. Did you mean 'green'? Valid names: green, red"
    assert str(unknown_name_error("colour", "zzz", ["b", "a"])) == "Unknown colour 'zzz'. Valid names: a, b"


def test_did_you_mean_prefix_and_count() -> None:
    assert (
        did_you_mean("rat", ["rates", "rate", "steps"], n=2, prefix="s.")
        == "did you mean 's.rate', 's.rates'?"
    )
    assert did_you_mean("xyz", ["rate"]) == ""


def test_layout_and_task_names_use_the_shared_error() -> None:
    with pytest.raises(ValueError, match=r"Unknown batch_layout 'packd'\. Did you mean 'packed'\?"):
        get_layout("packd", pad_token_id=0)
    assert available_layouts() == ["packed", "padded", "prefix_shared"]
    with pytest.raises(
        ValueError, match=r"Unknown task 'ifevl'\. Did you mean 'ifeval'\? Valid names: generation"
    ):
        EvalConfig(model_path="m", tasks=["ifevl"])


def test_check_messages_normalises_and_names_the_message() -> None:
    messages = [{"role": "user", "content": "hi", "name": None}]
    assert check_messages(messages) == [{"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match=r"chosen\[1\]\['content'\] must be a string, got list"):
        check_messages([{"role": "user", "content": "q"}, {"role": "assistant", "content": ["a"]}], "chosen")
    with pytest.raises(ValueError, match=r"reply\['role'\] must be 'assistant', got 'user'"):
        check_reply({"role": "user", "content": "x"})
    assert str(row_error("prompt", "bad", "fix it", row=4)) == "row 4, field 'prompt': bad. Fix: fix it"
    assert str(row_error("prompt", "bad", "fix it")) == "field 'prompt': bad. Fix: fix it"


@pytest.mark.parametrize(
    ("value", "hint", "fits"),
    [
        (1, float, True),
        (1.5, float | int, True),
        (2.0, float | int, True),
        ("10", int, False),
        (True, int, False),
        (True, float | int, False),
        (1, bool, False),
        (None, int | None, True),
        (0, int | None, True),
        ("a.jsonl", str | list[str] | None, True),
        (("a", "b"), str | list[str] | None, True),
        ([1, 2], list[str], False),
        ({"train": "a", "test": ["b"]}, dict[str, str | list[str]], True),
        ({"train": 3}, dict[str, str], False),
        ("b", Literal["a", "b"], True),
        ("c", Literal["a", "b"], False),
        (print, Callable[[Any], None], True),
        ({"anything": [1]}, Any, True),
    ],
)
def test_fits_type_is_the_converter_leaving_a_value_unchanged(value: Any, hint: Any, fits: bool) -> None:
    assert fits_type(value, hint) is fits
    if fits and hint is not Any and not callable(value):
        assert coerce_value(value, hint, "key") == (list(value) if isinstance(value, tuple) else value)


@pytest.mark.parametrize(
    ("config_cls", "field", "dpo_field"),
    [
        (InspectArgs, "max_length", "max_length"),
        (InspectArgs, "max_prompt_length", "max_prompt_length"),
        (EvalConfig, "logprob_chunk_size", "logprob_chunk_size"),
        (TrainConfig, "dpo_beta", "beta"),
        (TrainConfig, "max_length", "max_length"),
    ],
)
def test_defaults_come_from_dpo_config(config_cls: type, field: str, dpo_field: str) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    dpo = {f.name: f.default for f in dataclasses.fields(DPOConfig)}
    assert defaults[field] == dpo[dpo_field] == dpo_default(dpo_field)
    with pytest.raises(KeyError, match="no field 'bta'"):
        dpo_default("bta")
