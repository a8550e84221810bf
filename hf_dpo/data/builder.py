"""The dataset-builder interface: ``load_raw()`` gives the source splits, ``convert_row(row)`` turns each row
into a :class:`PreferencePair` or a :class:`Skip`, and :meth:`DatasetBuilder.build` returns TRL conversational
columns ``prompt`` / ``chosen`` / ``rejected`` (messages)."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import inspect
import logging
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import datasets

from hf_dpo import chat
from hf_dpo.chat import check_reply, row_error
from hf_dpo.data import files, rows
from hf_dpo.data.rows import PreferencePair, Skip, as_messages

logger = logging.getLogger("hf_dpo")

# A list literal rather than datasets.List, which datasets < 4 lacks (setup.cfg allows datasets >= 3).
MESSAGES = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]
PAIR_FEATURES = datasets.Features({"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES})
_SKIP_COLUMN = "skip_reason"
_FILE_FORMATS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclasses.dataclass
class PreferenceData:
    """Converted splits plus the number of skipped source rows per reason (all splits together)."""

    train: datasets.Dataset
    test: datasets.Dataset
    skips: dict[str, int]


@dataclasses.dataclass(kw_only=True)
class DatasetBuilder(abc.ABC):
    """Base class; subclass it as a dataclass (fields = options) and register it with ``register_builder``.
    The shared options below are described in docs/datasets.md."""

    name: ClassVar[str] = "builder"

    path: str | None = None
    config_name: str | None = None
    data_dir: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None
    train_split: str = "train"
    test_split: str | None = "test"
    test_size: float | int = 0.1
    seed: int = 42
    num_proc: int | None = None

    def load_raw(self) -> datasets.DatasetDict:
        """Source rows with splits ``train`` and, if the source has one, ``test``."""
        return self.select_splits(self.load_source())

    @abc.abstractmethod
    def convert_row(self, row: dict[str, Any]) -> PreferencePair | Skip:
        """One source row -> a pair, or ``Skip(reason)``; raise ``row_error`` for malformed rows."""

    def load_source(self) -> datasets.DatasetDict:
        """``datasets.load_dataset`` on ``data_files`` (format from the extension) or ``path``."""
        if self.data_files is not None:
            return load_files(self.data_files)
        if self.path is None:
            raise ValueError(f"dataset {self.name!r} needs path=<hub id or local path> or data_files=<files>")
        if Path(self.path).is_file():
            return load_files(self.path)
        try:
            return datasets.load_dataset(self.path, self.config_name, data_dir=self.data_dir)
        except ConnectionError as e:  # offline, or the Hub out of reach: name the local-files override
            raise ConnectionError(
                f"{e}. Without Hub access, use local files in the source's schema: dataset={self.name} "
                "data_files=<file> or data_files={train: <file>, test: <file>} (JSON lines, CSV, Parquet)"
            ) from e

    def select_splits(self, raw: datasets.DatasetDict) -> datasets.DatasetDict:
        """Rename the source's ``train_split``/``test_split`` to ``train``/``test``; with ``data_files``,
        splits named ``train``/``test`` also count, and a test-only file set has no train split."""

        def find(wanted: str | None, default: str) -> str | None:
            if wanted in raw:
                return wanted
            return default if self.data_files is not None and default in raw else None

        train_split, test_split = find(self.train_split, "train"), find(self.test_split, "test")
        if train_split is None and test_split is not None and self.data_files is not None:
            return datasets.DatasetDict({"test": raw[test_split]})  # a test-only file set (evaluation)
        if train_split is None:
            raise ValueError(
                f"dataset {self.name!r}: no split {self.train_split!r} in the source "
                f"(splits: {sorted(raw)}); set train_split=<name>"
            )
        splits = {"train": raw[train_split]}
        if test_split is not None and test_split != train_split:
            splits["test"] = raw[test_split]
        return datasets.DatasetDict(splits)

    def build(self) -> PreferenceData:
        """Load, convert, count skips, carve a test split if needed."""
        raw = self.load_raw()
        skips: Counter[str] = Counter()
        converted = {}
        for split, dataset in raw.items():
            converted[split], split_skips = self.convert_split(dataset, split)
            skips.update(split_skips)
        if "train" not in converted:  # data_files={test: ...}: nothing to train on, all to evaluate
            converted["train"] = converted["test"].select([])
        elif "test" not in converted:
            converted = self.carve_test(converted["train"])
        if len(converted["train"]) == 0 and "train" in raw:
            raise ValueError(f"dataset {self.name!r}: no train pairs left (skipped: {dict(skips)})")
        return PreferenceData(train=converted["train"], test=converted["test"], skips=dict(skips))

    def convert_split(self, dataset: datasets.Dataset, split: str) -> tuple[datasets.Dataset, Counter[str]]:
        """Run ``convert_row`` on every row (batched map), then drop and count the skipped rows."""
        source = f"{self.name} {split}"
        if len(dataset) == 0:  # an empty split may lack the source columns; map would not add ours
            empty = datasets.Dataset.from_dict({c: [] for c in PAIR_FEATURES}, features=PAIR_FEATURES)
            return empty, Counter()

        def convert_batch(batch: dict[str, list], indices: list[int], code_version: str) -> dict[str, list]:
            out: dict[str, list] = {"prompt": [], "chosen": [], "rejected": [], _SKIP_COLUMN: []}
            for j, index in enumerate(indices):
                try:
                    result = self.convert_row({key: values[j] for key, values in batch.items()})
                    pair = _check_result(result)
                except ValueError as err:
                    raise ValueError(f"dataset {source!r} row {index} (0-based): {err}") from err
                out["prompt"].append(pair.prompt if pair else [])
                out["chosen"].append([pair.chosen] if pair else [])
                out["rejected"].append([pair.rejected] if pair else [])
                out[_SKIP_COLUMN].append("" if pair else result.reason)
            return out

        features = datasets.Features({**PAIR_FEATURES, _SKIP_COLUMN: datasets.Value("string")})
        mapped = dataset.map(
            convert_batch,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            features=features,
            # fn_kwargs enter the cache fingerprint; datasets cannot see edits to an imported class's code
            fn_kwargs={"code_version": _code_version(type(self))},
            num_proc=self.num_proc,
            desc=f"Converting {source}",
        )
        skips = Counter(reason for reason in mapped[_SKIP_COLUMN] if reason)
        if skips:
            detail = ", ".join(f"{reason}={count}" for reason, count in sorted(skips.items()))
            logger.warning(
                "hf_dpo: %s: skipped %d of %d rows (%s)", source, sum(skips.values()), len(dataset), detail
            )
            mapped = mapped.filter(
                lambda reasons: [not r for r in reasons],
                input_columns=_SKIP_COLUMN,
                batched=True,
                num_proc=self.num_proc,
            )
        return mapped.remove_columns(_SKIP_COLUMN), skips

    def carve_test(self, train: datasets.Dataset) -> dict[str, datasets.Dataset]:
        """Split the converted pairs into train/test with ``test_size`` and ``seed``."""
        if not self.test_size:
            return {"train": train, "test": train.select([])}
        if len(train) < 2:
            raise ValueError(
                f"dataset {self.name!r}: only {len(train)} pair(s), too few to carve a test split; "
                "pass test_size=0 or more data"
            )
        logger.info(
            "hf_dpo: %s has no test split; carving test_size=%s (seed %d)",
            self.name,
            self.test_size,
            self.seed,
        )
        return dict(train.train_test_split(test_size=self.test_size, seed=self.seed))


def _code_version(cls: type[DatasetBuilder]) -> str:
    """Hash of the source of the modules defining ``cls``, its builder bases and the row/message checks."""
    modules = {sys.modules[c.__module__] for c in cls.__mro__ if issubclass(c, DatasetBuilder)} | {rows, chat}
    digest = hashlib.sha256()
    for module in sorted(modules, key=lambda m: m.__name__):
        try:
            digest.update(inspect.getsource(module).encode())
        except (OSError, TypeError):  # no source file (e.g. a notebook): datasets pickles such code by value
            digest.update(module.__name__.encode())
    return digest.hexdigest()


def _check_result(result: Any) -> PreferencePair | None:
    """The pair with its messages validated, None for a Skip; anything else is a builder bug."""
    if isinstance(result, Skip):
        if not (isinstance(result.reason, str) and result.reason):
            raise TypeError(f"Skip needs a non-empty reason string, got {result.reason!r}")
        return None
    if not isinstance(result, PreferencePair):
        raise TypeError(f"convert_row must return PreferencePair or Skip, got {type(result).__name__}")
    replies = []
    for field, reply in (("chosen", result.chosen), ("rejected", result.rejected)):
        try:
            replies.append(check_reply(reply, field))
        except ValueError as err:
            raise row_error(field, str(err), "the reply must be one assistant message") from err
    return PreferencePair(as_messages(result.prompt, "prompt"), *replies)


def load_files(data_files: Any) -> datasets.DatasetDict:
    """``load_dataset`` on local files; an empty, non-UTF-8 or malformed file raises ``ValueError`` naming the
    file and line (see ``hf_dpo.data.files``)."""
    files.check_files(data_files)
    try:
        return datasets.load_dataset(_file_format(data_files), data_files=data_files)
    except Exception as e:  # datasets wraps the reader's error in its own generation error
        problem = files.diagnose(data_files)
        if problem is None:
            raise
        raise ValueError(problem) from e


def _file_format(data_files: str | Sequence[str] | Mapping[str, Any]) -> str:
    """``datasets`` loader name (json/csv/parquet) from the data files' extension."""
    names = files.file_names(data_files)
    formats = {_FILE_FORMATS.get(_data_suffix(f)) for f in names}
    if len(formats) != 1 or None in formats:
        raise ValueError(
            f"cannot tell the file format of {names}; use files ending in {sorted(_FILE_FORMATS)} "
            "(one format for all files)"
        )
    return formats.pop()


def _data_suffix(file: str) -> str:
    """The data extension, looking through a compression suffix (``rows.jsonl.gz`` -> ``.jsonl``)."""
    suffixes = [s.lower() for s in Path(file).suffixes]
    if suffixes and suffixes[-1] in {".gz", ".bz2", ".xz", ".zst", ".zip"}:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""
