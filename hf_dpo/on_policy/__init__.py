"""On-policy DPO: the policy samples, a judge scores, DPO trains on the pairs (docs/on_policy.md)."""

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
