"""examples/split_jsonl.py: a seeded line split whose two files partition the source."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from split_jsonl import split_jsonl  # noqa: E402


def test_split_partitions_the_source_reproducibly(tmp_path):
    source = tmp_path / "rows.jsonl"
    lines = [f'{{"i": {i}}}' for i in range(50)]
    source.write_text("\n".join(lines) + "\n\n")  # a blank line is not a row
    train, test = split_jsonl(source, tmp_path / "a", test_rows=12)
    train_lines, test_lines = train.read_text().splitlines(), test.read_text().splitlines()
    assert len(test_lines) == 12 and len(train_lines) == 38
    assert sorted(train_lines + test_lines) == sorted(lines)
    assert train_lines == [line for line in lines if line in set(train_lines)]  # source order kept
    again = split_jsonl(source, tmp_path / "b", test_rows=12)[1].read_text().splitlines()
    assert again == test_lines  # same seed, same held-out rows
    larger = split_jsonl(source, tmp_path / "c", test_rows=20)[1].read_text().splitlines()
    assert set(test_lines) <= set(larger)  # a larger held-out set contains the smaller one
    other_seed = split_jsonl(source, tmp_path / "d", test_rows=12, seed=1)[1].read_text().splitlines()
    assert other_seed != test_lines


@pytest.mark.parametrize("rows", [0, 50])
def test_split_rejects_an_empty_side(tmp_path, rows):
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(f'{{"i": {i}}}' for i in range(50)))
    with pytest.raises(ValueError, match="must be between 1 and 49"):
        split_jsonl(source, tmp_path / "out", test_rows=rows)
