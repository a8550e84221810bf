"""Inspect a preference dataset as the trainer will see it: pair and skip counts, token lengths, and a
rendered example with the trained completion tokens marked.

    python -m hf_dpo.data dataset=hhh data_files=hh.jsonl model_name=HuggingFaceTB/SmolLM2-135M-Instruct \\
        [renderer_name=chat_template max_length=1024 max_prompt_length=512 split=train num_examples=1]

Keys other than the ones of :class:`InspectArgs` are options of the dataset builder (``data_files``,
``test_size``, ``column_map``, ``num_proc`` ...), typed by ``hf_dpo.run.cli_config``. Give a mapping option
key by key: ``data_files.train=a.jsonl data_files.test=b.jsonl``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections import Counter
from typing import Literal

import datasets
from rich.console import Console
from rich.text import Text
from transformers import PreTrainedTokenizerBase

from hf_dpo.config import dpo_default
from hf_dpo.data.builder import DatasetBuilder
from hf_dpo.data.registry import builder_class, builder_options
from hf_dpo.modeling.loading import load_tokenizer
from hf_dpo.registry import unknown_name_error
from hf_dpo.run.cli_config import ConfigError, load_config, parse_argv
from hf_dpo.tokens.renderers import Renderer, get_renderer
from hf_dpo.tokens.tokenization import tokenize_row

OPEN, CLOSE = "[[", "]]"  # marks trained tokens when colour is not available
PERCENTILES = (50, 90, 99)
PARTS = ("prompt", "chosen", "rejected")


@dataclasses.dataclass
class InspectArgs:
    """The command's own keys; see the module docstring."""

    dataset: str
    model_name: str
    renderer_name: str | None = None
    max_length: int | None = dpo_default("max_length")
    max_prompt_length: int | None = dpo_default("max_prompt_length")
    split: Literal["train", "test"] = "train"
    num_examples: int = 1


def parse_args(argv: list[str]) -> tuple[InspectArgs, DatasetBuilder]:
    """``key=value`` arguments -> the command's own args and the dataset builder (the other keys)."""
    path, overrides = parse_argv(argv)
    if path is not None:
        raise ConfigError(f"argument {path!r} is not key=value; e.g. dataset=hhh model_name=<tokenizer>")
    own = {f.name for f in dataclasses.fields(InspectArgs)}
    args = load_config(InspectArgs, [f"{k}={v}" for k, v in overrides.items() if k in own])
    cls = builder_class(args.dataset)
    options = set(builder_options(cls))
    for key in overrides:
        if key not in own and key.split(".")[0] not in options:
            raise unknown_name_error(f"key for dataset {args.dataset!r}:", key, sorted(own | options))
    return args, load_config(cls, [f"{k}={v}" for k, v in overrides.items() if k not in own])


def nearest_rank(values: list[int], q: float) -> int:
    """The q-th percentile by the nearest-rank rule: the smallest value with at least q% of values <= it."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)), 1) - 1]


def measure(
    dataset: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    renderer: Renderer,
    args: InspectArgs,
    num_proc: int | None,
) -> datasets.Dataset:
    """Per pair: untruncated token lengths, which parts truncation cuts, and any tokenization skip."""

    def measure_batch(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {"skip": [], "cut": [], **{part: [] for part in PARTS}}
        for j, index in enumerate(indices):
            row = {key: values[j] for key, values in batch.items()}
            # Two calls so that truncation stays the tokenizer's own rule (nothing re-implemented here).
            full = tokenize_row(row, index, tokenizer, renderer, None, None)
            cut = tokenize_row(row, index, tokenizer, renderer, args.max_length, args.max_prompt_length)
            skip = next((result for result in (full, cut) if isinstance(result, str)), "")
            out["skip"].append(skip)
            for part in PARTS:
                out[part].append(0 if skip else len(full[f"{part}_ids"]))
            out["cut"].append(
                [] if skip else [p for p in PARTS if len(cut[f"{p}_ids"]) < len(full[f"{p}_ids"])]
            )
        return out

    return dataset.map(
        measure_batch,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc,
        desc="Tokenizing",
    )


def report(args: InspectArgs, builder: DatasetBuilder, console: Console) -> None:
    """Build the dataset, tokenize it, and print counts, length percentiles and examples."""
    data = builder.build()
    pairs = data.train if args.split == "train" else data.test
    tokenizer = load_tokenizer(args.model_name)
    renderer = get_renderer(args.renderer_name, tokenizer)
    sizes = f"{len(data.train)} train / {len(data.test)} test pairs"
    print(f"dataset {args.dataset!r}: {sizes}; showing {args.split}")
    print(f"source rows skipped: {_counts(data.skips)}")
    if len(pairs) == 0:
        print(f"the {args.split} split is empty; nothing to tokenize")
        return

    start = time.perf_counter()
    stats = measure(pairs, tokenizer, renderer, args, builder.num_proc)
    seconds = time.perf_counter() - start
    skips = Counter(s for s in stats["skip"] if s)
    kept = stats.filter(lambda s: [not x for x in s], input_columns="skip", batched=True)
    print(
        f"tokenizer {args.model_name!r}, renderer {renderer.name!r}: {len(kept)} pairs kept "
        f"({len(pairs)} tokenized in {seconds:.1f} s); tokenization skips: {_counts(skips)}"
    )
    print(f"token lengths before truncation ({' / '.join(f'p{q}' for q in PERCENTILES)} / max):")
    for part in PARTS:
        values = list(kept[part])
        if values:
            cells = " / ".join(str(nearest_rank(values, q)) for q in PERCENTILES)
            print(f"  {part:<9} {cells} / {max(values)}")
    cuts = Counter(p for parts in kept["cut"] for p in parts)
    limits = f"max_length={args.max_length}, max_prompt_length={args.max_prompt_length}"
    print(f"truncation ({limits}): " + ", ".join(f"{cuts[p]} {p}" for p in PARTS) + " cut")
    for index in range(min(args.num_examples, len(pairs))):
        ids = tokenize_row(pairs[index], index, tokenizer, renderer, args.max_length, args.max_prompt_length)
        print_example(console, tokenizer, ids, f"{args.split} pair {index}")


def print_example(console: Console, tokenizer: PreTrainedTokenizerBase, ids: dict | str, title: str) -> None:
    """The prompt followed by each completion; trained tokens coloured (terminal) or inside [[ ]]."""
    if isinstance(ids, str):
        print(f"--- {title}: skipped ({ids})")
        return
    text = {key: tokenizer.decode(value, clean_up_tokenization_spaces=False) for key, value in ids.items()}
    lengths = ", ".join(f"{key.split('_')[0]} {len(ids[key])}" for key in ids)
    colour = console.is_terminal
    legend = "coloured" if colour else f"inside {OPEN} {CLOSE}"
    print(f"--- {title} (tokens: {lengths}); trained tokens are {legend}, the prompt is masked")
    for key, style in (("chosen_ids", "bold green"), ("rejected_ids", "bold red")):
        print(f"[{key.split('_')[0]}]")
        prompt = text["prompt_ids"] if key == "chosen_ids" else "…"
        if colour:
            console.print(Text.assemble((prompt, "dim"), (text[key], style)), soft_wrap=True)
        else:
            print(f"{prompt}{OPEN}{text[key]}{CLOSE}")


def _counts(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{reason}={n}" for reason, n in sorted(counter.items())) or "none"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hf_dpo.data``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0 if argv else 2
    try:
        args, builder = parse_args(argv)
        report(args, builder, Console(highlight=False))
    except (ConfigError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
