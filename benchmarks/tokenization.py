"""Tokenization throughput: HH-RLHF pairs rendered with a chat template and tokenized, pairs per second.

    python benchmarks/tokenization.py --data ../shared/data/preference/hh_rlhf.test.jsonl \
        --tokenizer ../shared/models/smollm2-135m-instruct --num_proc 1 2

Times ``tokenize_dataset`` (the trainer's tokenization step) on the ``hhh`` builder's pairs, first on a cold
``datasets`` cache, then again with the same fingerprint (a cache hit, as on a second training run).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import datasets
from transformers import AutoTokenizer

from hf_dpo.data import build_preference_dataset
from hf_dpo.tokens.renderers import get_renderer
from hf_dpo.tokens.tokenization import tokenize_dataset


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--renderer", default="chat_template")
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1])
    parser.add_argument("--repeat", type=int, default=4, help="concatenate the pairs this many times")
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    renderer = get_renderer(args.renderer, tokenizer)
    pairs = build_preference_dataset("hhh", data_files=args.data, test_size=0.0).train
    rows = datasets.concatenate_datasets([pairs] * args.repeat)
    print(f"{len(rows)} pairs, renderer={args.renderer}")
    print("| num_proc | cold cache: pairs/s | cached second run: s |")
    print("| --- | --- | --- |")
    for num_proc in args.num_proc:
        with tempfile.TemporaryDirectory() as cache:
            data = datasets.Dataset.from_list(rows.to_list()).flatten_indices(
                cache_file_name=f"{cache}/rows.arrow"
            )
            start = time.perf_counter()
            tokenize_dataset(data, tokenizer, renderer, 1024, 512, num_proc if num_proc > 1 else None)
            cold = time.perf_counter() - start
            start = time.perf_counter()
            tokenize_dataset(data, tokenizer, renderer, 1024, 512, num_proc if num_proc > 1 else None)
            warm = time.perf_counter() - start
        print(f"| {num_proc} | {len(data) / cold:.0f} | {warm:.2f} |")


if __name__ == "__main__":
    main()
