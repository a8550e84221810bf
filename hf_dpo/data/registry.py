"""Builder registry: names -> builder classes, typed options, and ``build_preference_dataset``."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from hf_dpo.data.builder import DatasetBuilder, PreferenceData
from hf_dpo.registry import Registry, unknown_name_error
from hf_dpo.run.cli_config import fits_type, type_name

_BUILDERS: Registry[type[DatasetBuilder]] = Registry("dataset")


def register_builder(name: str) -> Callable[[type[DatasetBuilder]], type[DatasetBuilder]]:
    """Class decorator registering a :class:`DatasetBuilder` dataclass as ``name`` (again: replaces)."""

    def decorate(cls: type[DatasetBuilder]) -> type[DatasetBuilder]:
        if not (isinstance(cls, type) and issubclass(cls, DatasetBuilder) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"@register_builder({name!r}) needs a @dataclass subclass of DatasetBuilder")
        cls.name = name
        return _BUILDERS.register(name, cls)

    return decorate


def available_builders() -> list[str]:
    """Names accepted by :func:`get_builder`."""
    return _BUILDERS.names()


def builder_class(name: str) -> type[DatasetBuilder]:
    """The builder class registered as ``name``; unknown names raise ``ValueError`` with the closest match."""
    return _BUILDERS.get(name)


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
            raise unknown_name_error(f"option for dataset {cls.name!r}:", key, valid)
        if not fits_type(value, valid[key]):
            raise ValueError(
                f"option {key!r} of dataset {cls.name!r} must be {type_name(valid[key])}, "
                f"got {type(value).__name__} {value!r:.60}"
            )
