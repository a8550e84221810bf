"""Builder registry: names -> builder classes, typed options, and ``build_preference_dataset``."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from hf_dpo.data.builder import DatasetBuilder, PreferenceData
from hf_dpo.tokens.renderers import closest_name_error

_BUILDERS: dict[str, type[DatasetBuilder]] = {}


def register_builder(name: str) -> Callable[[type[DatasetBuilder]], type[DatasetBuilder]]:
    """Class decorator registering a :class:`DatasetBuilder` dataclass under ``name`` (re-registering
    replaces)."""

    def decorate(cls: type[DatasetBuilder]) -> type[DatasetBuilder]:
        if not (isinstance(cls, type) and issubclass(cls, DatasetBuilder) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"@register_builder({name!r}) needs a @dataclass subclass of DatasetBuilder")
        cls.name = name
        _BUILDERS[name] = cls
        return cls

    return decorate


def available_builders() -> list[str]:
    """Names accepted by :func:`get_builder`."""
    return sorted(_BUILDERS)


def builder_class(name: str) -> type[DatasetBuilder]:
    """The builder class registered as ``name``; unknown names raise ``ValueError`` with the closest match."""
    if name not in _BUILDERS:
        raise closest_name_error("dataset", name, list(_BUILDERS))
    return _BUILDERS[name]


def builder_options(builder: str | type[DatasetBuilder] | DatasetBuilder) -> dict[str, Any]:
    """Option name -> type hint, for a registered name, a builder class or an instance."""
    cls = builder_class(builder) if isinstance(builder, str) else builder
    cls = cls if isinstance(cls, type) else type(cls)
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def get_builder(name: str, **options: Any) -> DatasetBuilder:
    """Instantiate builder ``name`` with ``options``; unknown names or options, or wrongly typed values,
    raise ``ValueError`` naming the valid choices."""
    cls = builder_class(name)
    _check_options(cls, options)
    return cls(**options)


def build_preference_dataset(name_or_builder: str | DatasetBuilder, **options: Any) -> PreferenceData:
    """Build train/test preference pairs from a registered name (with options) or a builder instance
    (options then override its fields)."""
    if isinstance(name_or_builder, DatasetBuilder):
        _check_options(type(name_or_builder), options)
        builder = dataclasses.replace(name_or_builder, **options) if options else name_or_builder
    else:
        builder = get_builder(name_or_builder, **options)
    return builder.build()


def _check_options(cls: type[DatasetBuilder], options: dict[str, Any]) -> None:
    valid = builder_options(cls)
    for key, value in options.items():
        if key not in valid:
            raise closest_name_error(f"option for dataset {cls.name!r}:", key, list(valid))
        if not _matches(value, valid[key]):
            raise ValueError(
                f"option {key!r} of dataset {cls.name!r} must be {_type_name(valid[key])}, "
                f"got {type(value).__name__} {value!r:.60}"
            )


def _matches(value: Any, hint: Any) -> bool:
    """A shallow isinstance check against a type hint (unions, containers' outer type, Any)."""
    if hint is Any:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint) or hint
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, origin) if isinstance(origin, type) else True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
