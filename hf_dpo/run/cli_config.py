"""Typed run configs from a YAML file plus ``key=value`` command-line overrides (they win; dotted keys reach
into sections and dict fields): ``load_config(MyConfig, ["run.yaml", "peft.r=16"])``. Unknown keys and bad
values raise ``ConfigError``; ``save_config`` writes YAML that ``load_config`` reads back to the same value.
A dataclass may declare ``__config_aliases__: ClassVar[dict[str, str]] = {"alias": "field"}``."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import itertools
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hf_dpo.registry import did_you_mean

T = TypeVar("T")

_NULLS = {"null", "none", "~", ""}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ConfigError(ValueError):
    """A config problem the user fixes in the YAML file or on the command line."""


class _Raw(str):
    """A value typed on the command line (still text), as opposed to one already parsed from YAML."""


def parse_argv(argv: list[str]) -> tuple[str | None, dict[str, Any]]:
    """The YAML path (``[config.yaml]`` first or ``--config config.yaml``; None) and the ordered overrides:
    ``key=value`` and TRL-style ``--key value``, ``--key=value``, ``--key a b`` (a list), ``--flag`` (true),
    ``--no_flag`` (false); ``-`` in keys becomes ``_``."""
    path, overrides = None, {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("--config", "--config_file") or arg.startswith(("--config=", "--config_file=")):
            if "=" in arg:
                value = arg.split("=", 1)[1]
            else:
                value = argv[i] if i < len(argv) else None
                i += 1
            if not value:
                raise ConfigError(f"{arg} needs a YAML file, e.g. --config recipe.yaml")
            if path is not None:
                raise ConfigError(f"two config files given ({path!r} and {value!r}); pass one")
            path = value
        elif arg.startswith("--") and "=" not in arg:
            key = _flag_key(arg)
            values = list(itertools.takewhile(lambda a: not a.startswith("--") and "=" not in a, argv[i:]))
            i += len(values)
            if not values:
                key, values = (key[3:], ["false"]) if key.startswith("no_") else (key, ["true"])
            overrides[key] = values[0] if len(values) == 1 else [_Raw(v) for v in values]
        elif "=" in arg:
            key, value = arg.split("=", 1)
            overrides[_flag_key(key, arg)] = value
        elif i == 1:
            path = arg
        else:
            raise ConfigError(
                f"argument {arg!r} is not key=value or --key value; only the first argument may be a YAML "
                "file (e.g. `run.py config.yaml learning_rate=1e-6 dpo_beta=0.1`, or --config config.yaml)"
            )
    return path, overrides


def _flag_key(text: str, arg: str | None = None) -> str:
    key = text.strip().lstrip("-").replace("-", "_")
    if not key:
        raise ConfigError(f"argument {arg or text!r} has no key; write key=value, e.g. learning_rate=1e-6")
    return key


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {str(path)!r}. Pass an existing YAML file as the first argument "
            "(see yaml_configs/), or give only key=value options."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of key: value, got {type(data).__name__}"
        )
    return data or {}


def load_config(config_cls: type[T], argv: list[str]) -> T:
    """Build ``config_cls`` from ``[config.yaml] key=value ...``. Optional class attributes:
    ``__config_resolver__(data, cli_keys) -> data`` rewrites the merged mapping first; unknown keys are
    all reported in one error, hinted by ``__config_key_hint__(key) -> str | None`` and
    ``__config_other_names__``."""
    path, overrides = parse_argv(list(argv))
    data = read_yaml(path) if path is not None else {}
    for key, value in overrides.items():
        *sections, last = key.split(".")
        node = data
        for part in sections:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value if isinstance(value, list) else _Raw(value)
    if (resolver := getattr(config_cls, "__config_resolver__", None)) is not None:  # hf_dpo.run.aliases
        data = resolver(data, set(overrides))
    valid_names = getattr(config_cls, "__config_other_names__", ())
    problems = unknown_keys(config_cls, data, valid_names, getattr(config_cls, "__config_key_hint__", None))
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} unknown config key(s):\n  " + "\n  ".join(problems))
    return config_from_dict(config_cls, data)


def unknown_keys(
    config_cls: type, data: Mapping[str, Any], other_names: Any = (), hint: Any = None, prefix: str = ""
) -> list[str]:
    """One message per key of ``data`` (sections included) that ``config_cls`` does not take: ``hint(key)``
    if it gives one, else the closest valid names (fields, ``__config_aliases__``, ``other_names``)."""
    fields, hints, aliases = _schema(config_cls)
    problems = []
    for key, value in data.items():
        name = aliases.get(str(key), str(key))
        if name not in fields:
            specific = hint(prefix + str(key)) if hint is not None else None
            if specific:
                problems.append(f"unknown config key {prefix + str(key)!r}; {specific}")
            else:
                valid = list(fields) + list(aliases) + (list(other_names) if not prefix else [])
                problems.append(_unknown_key_message(prefix + str(key), prefix, valid))
            continue
        tp = hints[name]
        members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        section = [m for m in members if dataclasses.is_dataclass(m)]
        if section and isinstance(value, Mapping):
            problems += unknown_keys(section[0], value, (), hint, prefix=f"{prefix}{name}.")
    return problems


def _schema(config_cls: type) -> tuple[dict[str, dataclasses.Field], dict[str, Any], dict[str, str]]:
    """A dataclass's init fields by name, its type hints and its ``__config_aliases__``."""
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    return fields, typing.get_type_hints(config_cls), getattr(config_cls, "__config_aliases__", {})


def config_from_dict(config_cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build a dataclass from a (nested) mapping, converting values to the declared field types."""
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"{config_cls!r} is not a dataclass")
    fields, hints, aliases = _schema(config_cls)
    kwargs: dict[str, Any] = {}
    spelled: dict[str, str] = {}  # field name -> the key that set it (the field's name or an alias)
    for key, value in data.items():
        key = str(key)
        name = aliases.get(key, key)
        full = prefix + key
        if name not in fields:
            raise ConfigError(_unknown_key_message(full, prefix, list(fields) + list(aliases)))
        if name in kwargs:
            raise ConfigError(
                f"config keys {spelled[name]!r} and {full!r} both set {prefix + name!r} (one is an alias "
                "of the other); keep one"
            )
        spelled[name] = full
        kwargs[name] = coerce_value(value, hints[name], prefix + name)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is f.default_factory is MISSING]
    if missing:
        raise ConfigError(
            f"missing required config key(s) {', '.join(prefix + m for m in missing)}; "
            f"add e.g. {prefix + missing[0]}=... on the command line or in the YAML file"
        )
    try:
        return config_cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        where = f" in section {prefix[:-1]!r}" if prefix else ""
        raise ConfigError(f"invalid config{where}: {e}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """The init fields of a dataclass as plain YAML-safe values (nested sections become mappings)."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}


SECRET_SUFFIX = "_token"  # e.g. hub_token: never written to disk


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write ``config`` as YAML; ``load_config(type(config), [path])`` reads it back to an equal config,
    except that secrets (fields named ``*_token``) are written as null."""
    values = {k: (None if k.endswith(SECRET_SUFFIX) else v) for k, v in config_to_dict(config).items()}
    Path(path).write_text(yaml.safe_dump(values, sort_keys=False, allow_unicode=True), "utf-8")


def _unknown_key_message(full: str, prefix: str, valid: list[str]) -> str:
    hint = did_you_mean(full[len(prefix) :], valid, n=3, prefix=prefix) or (
        f"valid keys{' in ' + repr(prefix[:-1]) if prefix else ''} include "
        f"{', '.join(sorted(valid)[:12])}{', ...' if len(valid) > 12 else ''}"
    )
    return f"unknown config key {full!r}; {hint}"


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return str(value) if isinstance(value, _Raw) else value
    return str(value)


def type_name(tp: Any) -> str:
    """A type hint as users write it: ``int``, ``str | None``, ``list[str]``."""
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """``value`` (as ``load_config`` read it) converted to type hint ``tp``; errors name ``key``."""
    try:
        return _convert(value, tp, key)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"config key {key!r}: {str(value)!r} is not a valid {type_name(tp)} ({e})"
        ) from None


def fits_type(value: Any, tp: Any) -> bool:
    """Whether a Python value already has type hint ``tp``: :func:`coerce_value` accepts it and leaves it as
    it is (up to equal numbers, e.g. ``1`` for a float, and lists for tuples). Text is not parsed."""
    try:
        return _unchanged(value, _convert(value, tp, "value"))
    except (ValueError, TypeError):
        return False


def _unchanged(before: Any, after: Any) -> bool:
    if isinstance(before, (list, tuple, set)) and isinstance(after, (list, tuple, set)):
        return len(before) == len(after) and all(map(_unchanged, before, after))
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        return before.keys() == after.keys() and all(_unchanged(before[k], after[k]) for k in before)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (before, after))
    return (numbers or type(before) is type(after)) and before == after


def _convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` converted to ``tp``: dispatch on the kind of type hint."""
    origin = typing.get_origin(tp) or tp
    if tp is Any or tp is object:
        return yaml.safe_load(value) if isinstance(value, _Raw) else value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, typing.get_args(tp), key)
    if origin is typing.Literal:
        return _convert_literal(value, typing.get_args(tp), key)
    if tp is type(None):
        if value is None or (isinstance(value, _Raw) and value.strip().lower() in _NULLS):
            return None
        raise ValueError("expected null")
    if dataclasses.is_dataclass(tp):
        return _convert_section(value, tp, key)
    if tp in _SCALARS:
        return _SCALARS[tp](value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value.value if isinstance(value, enum.Enum) else str(value))
    if origin in (list, tuple, set):
        return _convert_sequence(value, tp, key)
    if origin is dict:
        return _convert_mapping(value, tp, key)
    if isinstance(origin, type) and isinstance(value, origin):
        return value
    raise ConfigError(
        f"config key {key!r} ({type_name(tp)}) cannot be set from a config file or command line"
    )


def _convert_literal(value: Any, options: tuple[Any, ...], key: str) -> Any:
    for option in options:
        if value == option or (isinstance(value, str) and str(option) == value):
            return option
    raise ConfigError(f"config key {key!r}: {str(value)!r} is not one of {', '.join(map(repr, options))}")


def _convert_section(value: Any, tp: type, key: str) -> Any:
    """A nested dataclass from a mapping (``key.name=value`` overrides), YAML text, or ``true`` (defaults)."""
    if isinstance(value, tp):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        value = {} if text in _TRUE or text == "{}" else yaml.safe_load(value)
    if value is True:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"config key {key!r} is a section; give its keys, e.g. {key}.<name>=value")
    return config_from_dict(tp, value, prefix=key + ".")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError("expected true or false")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip())
    number = float(value)
    if not number.is_integer():
        raise ValueError("expected an integer")
    return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return float(value)


def _to_str(value: Any) -> str:
    if isinstance(value, (Mapping, list, tuple)):
        raise ValueError("expected a string")
    return value.value if isinstance(value, enum.Enum) else str(value)


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def _convert_sequence(value: Any, tp: Any, key: str) -> Any:
    """A list/tuple/set from a YAML sequence, ``[a, b]`` or ``a,b`` text, or one item."""
    if isinstance(value, str):
        text = value.strip()
        value = (
            yaml.safe_load(text)
            if text.startswith("[")
            else [v.strip() for v in text.split(",") if v.strip()]
        )
    if not isinstance(value, (list, tuple, set)):
        value = [value]
    item_type = next(iter(typing.get_args(tp)), Any)
    items = [coerce_value(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    container = typing.get_origin(tp) or tp
    return container(items) if container is not list else items


def _convert_mapping(value: Any, tp: Any, key: str) -> Any:
    """A dict from a YAML mapping or ``{name: value}`` text; values converted to the declared value type."""
    if isinstance(value, str):
        value = yaml.safe_load(value)
    if not isinstance(value, Mapping):
        raise ValueError("expected a mapping such as {name: value}")
    args = typing.get_args(tp)
    value_type = args[1] if len(args) == 2 else Any
    return {str(k): coerce_value(v, value_type, f"{key}.{k}") for k, v in value.items()}


def _convert_union(value: Any, members: tuple[Any, ...], key: str) -> Any:
    if type(None) in members and (
        value is None or (isinstance(value, _Raw) and value.strip().lower() in _NULLS)
    ):
        return None
    others = [m for m in members if m is not type(None)]
    # Typed alternatives first (a command-line "5" should become 5 for int | str), text last.
    ordered = [m for m in others if m is not str] + [m for m in others if m is str]
    if int in ordered and float in ordered:  # "20" is a count for float | int; "0.1" still falls to float
        ordered.remove(int)
        ordered.insert(ordered.index(float), int)
    if isinstance(value, str) and not isinstance(value, _Raw) and str in others:
        ordered = [str] + [m for m in ordered if m is not str]  # YAML already decided that this is text
    elif isinstance(value, _Raw) and str in others and not value.strip().startswith("[") and "," not in value:
        sequences = [m for m in ordered if (typing.get_origin(m) or m) in (list, tuple, set)]
        ordered = [m for m in ordered if m not in sequences] + sequences  # one bare word: text, not a list
    flow = _parse_flow_collection(value, others, key)
    if flow is not None:  # "{a: 1}" / "[x, y]" typed on the command line: YAML, never split on commas
        value, containers = flow
        ordered = containers + [m for m in ordered if m not in containers]
    sections = [m for m in others if dataclasses.is_dataclass(m)]
    if len(sections) == 1 and (isinstance(value, Mapping) or value is True):
        return _convert(value, sections[0], key)  # its own errors name the exact key
    errors = []
    for member in ordered:
        try:
            return _convert(value, member, key)
        except (ValueError, TypeError) as e:
            errors.append(f"{type_name(member)}: {e}")
    raise ConfigError(
        f"config key {key!r}: {str(value)!r} does not fit {' | '.join(map(type_name, members))} "
        f"({'; '.join(errors)})"
    )


def _parse_flow_collection(value: Any, members: list[Any], key: str) -> tuple[Any, list[Any]] | None:
    """A command-line value starting with ``{`` (``[``) parsed as a YAML flow mapping (sequence) when the
    union has a mapping/section (sequence) member: the parsed value and those members; else None."""
    text = value.strip() if isinstance(value, _Raw) else ""
    if text.startswith("{"):
        kind, shape, example = "mapping", Mapping, "{train: a.jsonl, test: b.jsonl}"
        containers = [
            m for m in members if (typing.get_origin(m) or m) is dict or dataclasses.is_dataclass(m)
        ]
    elif text.startswith("["):
        kind, shape, example = "sequence", list, "[a.jsonl, b.jsonl]"
        containers = [m for m in members if (typing.get_origin(m) or m) in (list, tuple, set)]
    else:
        return None
    if not containers:
        return None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = str(e).splitlines()[0]
        raise ConfigError(
            f"config key {key!r}: {text!r} starts a YAML flow {kind} but does not parse ({problem}); "
            f"write it like {key}='{example}' (quoted for the shell)"
        ) from None
    return (parsed, containers) if isinstance(parsed, shape) else None
