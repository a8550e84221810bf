"""``mixture``: a weighted mixture of datasets, each converted to pairs by its own builder.

A source is read as in :func:`source_builder`; entries use the alignment-handbook's keys (the fields of
:class:`Source`) or TRL's (``path``, ``name``, ``fraction``); see docs/datasets.md. Pair counts per source
are logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import datasets

from hf_dpo.data.builder import DatasetBuilder, PreferenceData
from hf_dpo.data.registry import available_builders, builder_class, get_builder, register_builder
from hf_dpo.data.rows import PreferencePair, Skip
from hf_dpo.run.cli_config import ConfigError

logger = logging.getLogger("hf_dpo")


def source_builder(name: str) -> tuple[str, dict[str, Any]]:
    """``name`` -> (builder name, builder options): a registered builder; the Hub id a builder reads by
    default; else ``custom`` reading ``path=name``."""
    if name in available_builders() and name != "mixture":
        return name, {}
    readers = [builder for builder in available_builders() if builder_class(builder).path == name]
    return (readers[0], {}) if readers else ("custom", {"path": name})


def mixture_options(keys: dict[str, Any]) -> dict[str, Any]:
    """Options of the ``mixture`` builder from handbook / TRL config keys: ``dataset_mixture`` (``datasets``,
    ``seed``, ``test_split_size``), ``dataset_mixer`` + ``dataset_splits``, or TRL's ``datasets`` +
    ``test_split_size`` + ``streaming``."""
    styles = [k for k in ("dataset_mixture", "dataset_mixer", "datasets") if k in keys]
    if len(styles) != 1:
        raise ConfigError(
            f"give one dataset mixture, not {' and '.join(styles)}"
            if styles
            else "dataset_splits / test_split_size need dataset_mixer, dataset_mixture or datasets"
        )
    style = styles[0]
    options: dict[str, Any] = {}
    if style == "dataset_mixture":
        mixture = keys["dataset_mixture"]
        if not isinstance(mixture, dict) or "datasets" not in mixture:
            raise ConfigError("dataset_mixture must be a mapping with datasets: [{id, split, weight, ...}]")
        unknown = sorted(set(mixture) - {"datasets", "seed", "test_split_size", "streaming"})
        if unknown:
            raise ConfigError(
                f"dataset_mixture: unknown key(s) {unknown}; valid: datasets, seed, test_split_size"
            )
        if mixture.get("streaming"):
            raise ConfigError("dataset_mixture.streaming=true: streaming datasets are not supported")
        options["datasets"] = mixture["datasets"]
        for key, name in (("seed", "seed"), ("test_size", "test_split_size")):
            if mixture.get(name) is not None:
                options[key] = mixture[name]
    elif style == "dataset_mixer":
        mixer = keys["dataset_mixer"]
        if isinstance(mixer, list):  # a list of {id: weight} or of entries
            mixer = {k: v for item in mixer for k, v in item.items()}
        if not isinstance(mixer, dict):
            raise ConfigError("dataset_mixer must map dataset ids to weights, e.g. {HuggingFaceH4/x: 1.0}")
        train_split, test_split = _old_splits(keys.get("dataset_splits"))
        options["datasets"] = [
            {"id": source, "weight": weight, "split": train_split, "test_split": test_split}
            for source, weight in mixer.items()
        ]
    else:
        options["datasets"] = keys["datasets"]
    if style != "dataset_mixer" and keys.get("dataset_splits") is not None:
        raise ConfigError("dataset_splits goes with dataset_mixer; with a mixture give each dataset's split")
    if keys.get("test_split_size") is not None:
        options["test_size"] = keys["test_split_size"]
    if keys.get("streaming"):
        raise ConfigError("streaming=true: streaming datasets are not supported")
    return options


def _old_splits(splits: Any) -> tuple[str, str | None]:
    """The older handbook's ``dataset_splits``: names containing ``train`` / ``test``."""
    if splits is None:
        return "train", "test"
    splits = [splits] if isinstance(splits, str) else list(splits)
    train = [s for s in splits if "train" in s]
    test = [s for s in splits if "test" in s]
    if len(train) != 1 or len(test) > 1 or len(train) + len(test) != len(splits):
        raise ConfigError(
            f"dataset_splits {splits}: give one split whose name contains 'train' and at most one "
            "containing 'test'"
        )
    return train[0], (test[0] if test else None)


@dataclasses.dataclass(frozen=True)
class Source:
    """One entry of the mixture, checked."""

    id: str
    config: str | None = None
    split: str = "train"
    test_split: str | None = None
    columns: list[str] | None = None
    weight: float | None = None
    fraction: float | None = None
    data_dir: str | None = None
    data_files: Any = None
    options: dict[str, Any] | None = None

    @classmethod
    def from_entry(cls, entry: Any, index: int) -> Source:
        where = f"mixture dataset {index}"
        if isinstance(entry, str):
            entry = {"id": entry}
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected a mapping such as {{id: ..., split: train, weight: 1.0}}")
        unknown = sorted(set(entry) - set(ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {', '.join(ENTRY_KEYS)}")
        values: dict[str, Any] = {}
        for key, value in entry.items():
            field = ENTRY_KEYS[key]
            if field in values:
                raise ValueError(f"{where}: {key!r} and another key both set {field!r}; keep one")
            values[field] = value
        if "id" not in values:
            raise ValueError(f"{where}: no id (the dataset: a builder name, Hub id or local path)")
        source = cls(**values)
        for name, top, allowed in (("weight", 1, "in (0, 1]"), ("fraction", float("inf"), "> 0")):
            value = getattr(source, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 < value <= top):
                raise ValueError(f"{where} ({source.id}): {name} must be {allowed}, got {value!r}")
        if source.weight is not None and source.fraction is not None:
            raise ValueError(f"{where} ({source.id}): give weight (handbook) or fraction (TRL), not both")
        return source


ENTRY_KEYS = {f.name: f.name for f in dataclasses.fields(Source)} | {"path": "id", "name": "config"}


@register_builder("mixture")
@dataclasses.dataclass(kw_only=True)
class MixtureBuilder(DatasetBuilder):
    """A weighted mixture (see the module docstring); ``seed`` shuffles, ``test_size`` (default 0: none)
    carves a test split from the mixed pairs when no source gives a ``test_split``."""

    datasets: list[Any] = dataclasses.field(default_factory=list)
    test_size: float | int = 0

    def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:  # pragma: no cover - not row-based
        raise NotImplementedError("the mixture converts rows with each source's own builder")

    def build(self) -> PreferenceData:
        if not self.datasets:
            raise ValueError("dataset 'mixture' needs datasets=[{id: ..., split: ..., weight: ...}, ...]")
        sources = [Source.from_entry(e, i) for i, e in enumerate(self.datasets)]
        if len({s.fraction is None for s in sources}) > 1:  # some sources have a fraction, some not
            raise ValueError("mixture: give fraction for every dataset or for none")
        trains, tests, source_skips = zip(
            *(self._convert_source(source, index) for index, source in enumerate(sources)), strict=True
        )
        skips = sum(source_skips, Counter())
        weighted = self._weigh(sources, trains)
        for source, train, kept, test in zip(sources, trains, weighted, tests, strict=True):
            note = f"; {len(test)} test pairs" if test is not None else ""
            logger.info(
                "hf_dpo: mixture source %r: %d train pairs, %d kept%s", source.id, len(train), len(kept), note
            )
        train = datasets.concatenate_datasets(weighted).shuffle(seed=self.seed)
        tests = [t for t in tests if t is not None]
        if tests:
            test = datasets.concatenate_datasets(tests)
        else:  # carve test_size pairs (none when it is 0) from the mixed train pairs
            parts = self.carve_test(train)
            train, test = parts["train"], parts["test"]
        logger.info(
            "hf_dpo: mixture of %d datasets: %d train pairs, %d test pairs",
            len(sources),
            len(train),
            len(test),
        )
        if len(train) == 0:
            raise ValueError(f"dataset 'mixture': no train pairs left (skipped: {dict(skips)})")
        return PreferenceData(train=train, test=test, skips=dict(skips))

    def _convert_source(
        self, source: Source, index: int
    ) -> tuple[datasets.Dataset, datasets.Dataset | None, Counter[str]]:
        where = f"mixture dataset {index} ({source.id})"
        name, options = source_builder(source.id)
        loading = {"data_dir": source.data_dir, "data_files": source.data_files, "config_name": source.config}
        options = {**options, **(source.options or {}), **{k: v for k, v in loading.items() if v is not None}}
        options.update(train_split=source.split, test_split=source.test_split, num_proc=self.num_proc)
        try:
            builder = get_builder(name, **options)
            raw = builder.load_raw()
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from e
        if source.columns is not None:
            missing = [c for c in source.columns if c not in raw["train"].column_names]
            if missing:
                raise ValueError(f"{where}: no column(s) {missing} in {raw['train'].column_names}")
            raw = raw.select_columns(list(source.columns))
        train, skips = builder.convert_split(raw["train"], f"{source.id} {source.split}")
        test = None
        if "test" in raw:
            test, test_skips = builder.convert_split(raw["test"], f"{source.id} {source.test_split}")
            skips.update(test_skips)
        return train, test, skips

    def _weigh(self, sources: list[Source], trains: Sequence[datasets.Dataset]) -> list[datasets.Dataset]:
        """Handbook ``weight``: keep that fraction of each source (after a seeded shuffle). TRL ``fraction``:
        shares f_i / Σf of the largest mixture N with round(share_i · N) <= n_i for every source."""
        if sources[0].fraction is not None:
            total = sum(s.fraction for s in sources)
            shares = [s.fraction / total for s in sources]
            size = min(len(t) / share for t, share in zip(trains, shares, strict=True))
            return [
                t.select(range(min(len(t), round(share * size))))
                for t, share in zip(trains, shares, strict=True)
            ]
        kept = []
        for s, t in zip(sources, trains, strict=True):
            keep = int((1.0 if s.weight is None else s.weight) * len(t))
            kept.append(t if keep == len(t) else t.shuffle(seed=self.seed).select(range(keep)))
        return kept
