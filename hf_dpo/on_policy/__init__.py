"""On-policy DPO: the policy samples completions, a judge scores them, rounds of DPO train on the pairs.

Turn it on with an ``on_policy:`` section in a training config (``OnPolicyOptions``); see docs/on_policy.md.
"""

from hf_dpo.on_policy.config import OnPolicyOptions
from hf_dpo.on_policy.judges import JudgeError, register_pairwise_judge, register_verifier
from hf_dpo.on_policy.pairs import GroupPairs, pick_pairs

__all__ = [
    "GroupPairs",
    "JudgeError",
    "OnPolicyOptions",
    "pick_pairs",
    "register_pairwise_judge",
    "register_verifier",
]
