"""Split a JSON Lines file into a train file and a held-out test file, reproducibly (seeded shuffle).

    python examples/split_jsonl.py ../shared/data/preference/hh_rlhf.test.jsonl .cache/hh --test-rows 400

writes ``.cache/hh/train.jsonl`` and ``.cache/hh/test.jsonl``: the lines are shuffled with
``random.Random(seed)`` and the first ``test_rows`` become the test file; both files keep the source order.
The split is by raw line, before any row is converted, so no training run ever sees a held-out row.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def split_jsonl(source: Path, out_dir: Path, test_rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Write ``out_dir/train.jsonl`` and ``out_dir/test.jsonl``; return their paths."""
    lines = [line for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not 0 < test_rows < len(lines):
        raise ValueError(
            f"test_rows={test_rows} must be between 1 and {len(lines) - 1} ({source} has {len(lines)} rows)"
        )
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:test_rows])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / "train.jsonl", out_dir / "test.jsonl"
    for path, keep in zip(paths, (False, True), strict=True):
        kept = (line + "\n" for i, line in enumerate(lines) if (i in held_out) == keep)
        path.write_text("".join(kept), encoding="utf-8")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--test-rows", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, test = split_jsonl(args.source, args.out_dir, args.test_rows, args.seed)
    print(f"wrote {train} and {test}")


if __name__ == "__main__":
    main()
