"""Files for measuring HH-RLHF recipes on rows they never saw, by subset (docs/recipes.md).

    python benchmarks/hh_unseen.py ../shared/data/preference/hh_rlhf.test.jsonl harmless-base.test.jsonl.gz \
        .cache/hh_unseen

``shared`` is the 1000-row mixed sample; ``harmless`` is the official ``harmless-base/test.jsonl.gz`` of
github.com/anthropics/hh-rlhf (2312 rows; the Hub's ``Anthropic/hh-rlhf``, ``data_dir="harmless-base"``,
``test`` split). A row of the sample is harmless-base when it appears verbatim in that file, otherwise it
is one of the three helpful subsets. Written to ``out_dir``:

* ``infile/{train,test}.jsonl``: the recipe's in-file split (``examples/split_jsonl.py``, seed 0, 400 test);
* ``infile/test.{harmless,helpful}.jsonl``: the in-file test rows by subset;
* ``unseen/harmless.test.jsonl``: ``--unseen-test-rows`` harmless-base rows that are not in the sample
  (drawn with ``random.Random(seed)``); ``unseen/harmless.train.jsonl``: the other unseen harmless rows;
* ``recipe/train.jsonl``: the in-file training rows plus ``--extra-harmless-rows`` rows of
  ``unseen/harmless.train.jsonl``, shuffled: a training file that never overlaps any test file;
* ``recipe/harmless_only.train.jsonl``: ``--harmless-only-rows`` harmless-base rows only (the in-file
  training rows that are harmless-base, then ``unseen/harmless.train.jsonl``), shuffled.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from split_jsonl import split_jsonl  # noqa: E402


def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def _key(line: str) -> tuple[str, str]:
    row = json.loads(line)
    return row["chosen"], row["rejected"]


def _write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def build(
    shared: Path,
    harmless: Path,
    out_dir: Path,
    unseen_test_rows: int,
    extra_harmless_rows: int,
    seed: int,
    harmless_only_rows: int = 600,
) -> dict[str, int]:
    """Write the files listed in the module docstring; return their row counts by name."""
    harmless_lines = _lines(harmless)
    harmless_keys = {_key(line) for line in harmless_lines}
    train_path, test_path = split_jsonl(shared, out_dir / "infile", test_rows=400, seed=0)
    test_lines = _lines(test_path)
    files = {
        "infile/train.jsonl": _lines(train_path),
        "infile/test.jsonl": test_lines,
        "infile/test.harmless.jsonl": [line for line in test_lines if _key(line) in harmless_keys],
        "infile/test.helpful.jsonl": [line for line in test_lines if _key(line) not in harmless_keys],
    }
    shared_keys = {_key(line) for line in _lines(shared)}
    unseen = [line for line in harmless_lines if _key(line) not in shared_keys]
    random.Random(seed).shuffle(unseen)
    if not 0 < unseen_test_rows < len(unseen):
        raise ValueError(f"--unseen-test-rows must be in 1..{len(unseen) - 1}, got {unseen_test_rows}")
    files["unseen/harmless.test.jsonl"] = unseen[:unseen_test_rows]
    files["unseen/harmless.train.jsonl"] = unseen[unseen_test_rows:]
    recipe = files["infile/train.jsonl"] + files["unseen/harmless.train.jsonl"][:extra_harmless_rows]
    random.Random(seed).shuffle(recipe)
    files["recipe/train.jsonl"] = recipe
    harmless_train = [line for line in files["infile/train.jsonl"] if _key(line) in harmless_keys]
    harmless_only = (harmless_train + files["unseen/harmless.train.jsonl"])[:harmless_only_rows]
    random.Random(seed).shuffle(harmless_only)
    files["recipe/harmless_only.train.jsonl"] = harmless_only
    for name, lines in files.items():
        _write(out_dir / name, lines)
    return {name: len(lines) for name, lines in files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shared", type=Path)
    parser.add_argument("harmless", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--unseen-test-rows", type=int, default=1000)
    parser.add_argument("--extra-harmless-rows", type=int, default=400)
    parser.add_argument("--harmless-only-rows", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build(
        args.shared,
        args.harmless,
        args.out_dir,
        args.unseen_test_rows,
        args.extra_harmless_rows,
        args.seed,
        args.harmless_only_rows,
    )
    for name, count in counts.items():
        print(f"{count:5d} rows  {args.out_dir / name}")


if __name__ == "__main__":
    main()
