"""Local data files checked before and diagnosed after ``datasets.load_dataset``, so a bad file is reported
as file + line + fix instead of a generator traceback."""

from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_CHUNK = 1 << 24
_PLAIN = {".json", ".jsonl", ".csv"}  # text formats we can read line by line (not compressed, not parquet)


def file_names(data_files: str | Path | list | Mapping[str, Any] | None) -> list[str]:
    """Every name in ``data_files``: a path, a list of them, or a split -> path(s) mapping."""
    if data_files is None:
        return []
    entries = data_files.values() if isinstance(data_files, Mapping) else [data_files]
    return [str(name) for entry in entries for name in ([entry] if isinstance(entry, (str, Path)) else entry)]


def local_files(data_files: str | list | Mapping[str, Any] | None) -> list[Path]:
    """The existing local files among ``data_files`` (globs, URLs and Hub paths are left to ``datasets``)."""
    return [path for name in file_names(data_files) if (path := Path(name).expanduser()).is_file()]


def check_files(data_files: Any) -> None:
    """Raise ``ValueError`` naming the file (and line) for an empty file or bytes that are not UTF-8."""
    for path in local_files(data_files):
        if path.stat().st_size == 0:
            raise ValueError(f"data file {str(path)!r} is empty; give a file with at least one row")
        if path.suffix.lower() in _PLAIN:
            _check_utf8(path)


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                line += chunk.count(b"\n", 0, e.start)
                raise ValueError(
                    f"data file {str(path)!r}, line {line}: bytes that are not UTF-8 ({e.reason} at byte "
                    f"{e.object[e.start : e.end]!r}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from None
            line += chunk.count(b"\n")


def diagnose(data_files: Any) -> str | None:
    """After ``load_dataset`` failed: the first malformed line of a local JSON-lines or CSV file, if any."""
    checks = {".csv": _csv_problem, ".jsonl": _json_lines_problem, ".json": _json_lines_problem}
    for path in local_files(data_files):
        check = checks.get(path.suffix.lower())
        problem = check(path) if check else None
        if problem:
            return f"data file {str(path)!r}, {problem}"
    return None


def _json_lines_problem(path: Path) -> str | None:
    with path.open(encoding="utf-8") as f:
        if f.read(64).lstrip().startswith("["):  # one JSON array, not JSON lines
            return None
        f.seek(0)
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                cut = " (the line is cut off)" if not line.endswith("\n") else ""
                return f"line {number}: not valid JSON{cut}: {e.msg}; each line must be one JSON object"
            if not isinstance(row, dict):
                return f'line {number}: a JSON {type(row).__name__}, not an object {{"prompt": ..., ...}}'
    return None


def _csv_problem(path: Path) -> str | None:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, strict=True)
        start, width = 1, None
        try:
            for row in reader:
                if width is None:
                    width = len(row)
                elif row and len(row) != width:
                    fields = f"{len(row)} fields where the header has {width}"
                    return f"line {start}: {fields}; quote fields that hold commas"
                start = reader.line_num + 1
        except csv.Error as e:
            fix = 'quote fields as "..." and double the quotes inside them'
            return f"line {start}: {e} (an unclosed or stray double quote?); {fix}"
    return None
