"""Samples 3 completions for each of 5 prompts with ``sample_groups`` (batches of 2 prompts) and writes the
texts (rank 0): run by tests/test_on_policy.py in one process and in 2 gloo processes."""

import json
import sys

import torch
from accelerate import PartialState
from conftest import TINY_MODEL
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_dpo.eval.generation import DecodingConfig
from hf_dpo.on_policy.sampling import sample_groups


def main(out: str) -> None:
    state = PartialState(cpu=True)  # gloo across the launched CPU processes
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(TINY_MODEL)
    prompts = [tokenizer(f"Question {i}: what is {i} + {i * 3}?")["input_ids"] for i in range(5)]
    decoding = DecodingConfig(max_new_tokens=6, do_sample=True, temperature=1.0, seed=11)
    sampled = sample_groups(model, tokenizer, prompts, 3, decoding, batch_size=2, round_number=1)
    if state.is_main_process:
        groups = [[g.text for g in group] for group in sampled.groups]
        with open(out, "w") as f:
            json.dump({"world_size": state.num_processes, "groups": groups}, f)
    state.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1])
