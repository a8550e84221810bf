"""DPO-family losses: pure functions from per-pair log-probabilities to per-pair losses.

Notation (Rafailov et al. 2023, arXiv:2305.18290): for a prompt x with preferred completion y_w and
dispreferred completion y_l, the log-ratio of a completion and its implicit reward are

    u(y) = log πθ(y|x) − log πref(y|x),        r(x, y) = β · u(y),

and the DPO objective (paper Eq. 7) is L_DPO = −E[ log σ( β·(u(y_w) − u(y_l)) ) ].

Every loss function takes tensors of shape (B,) (one value per pair, log-probs summed over completion
tokens) and returns per-pair losses of shape (B,). ``preference_loss`` combines any list of loss types
with weights, the way TRL 1.16's ``DPOTrainer`` does (Σ_k w_k · loss_k); ``dpo_loss`` is its short form for a
single loss type. No I/O, no model, no Trainer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from hf_dpo.modeling.forward import ChosenRejectedLogps

# The loss types of TRL 1.16's DPOTrainer, with TRL's meaning ...
TRL_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)
# ... plus reference-free objectives that TRL's DPOTrainer does not have.
LOSS_TYPES = TRL_LOSS_TYPES + ("simpo", "orpo")
# Loss types that need no reference log-probs (the trainer can skip the reference forward).
REFERENCE_FREE_LOSS_TYPES = frozenset({"simpo", "orpo", "sft"})
# Loss types that need completion token counts.
TOKEN_COUNT_LOSS_TYPES = frozenset({"sigmoid_norm", "simpo", "orpo", "sft"})
F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")
# Loss types built on the chosen − rejected score difference: the only ones a non-default f-divergence
# generalises (TRL 1.16 rejects the others).
F_DIVERGENCE_LOSS_TYPES = frozenset(
    {"sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop", "sft"}
)


@dataclass(frozen=True)
class PreferenceLogps:
    """Summed completion log-probs of a batch of pairs, each of shape (B,).

    ``ref_chosen``/``ref_rejected`` may be None for reference-free losses (``simpo``, ``orpo``, ``sft``).
    ``chosen_num_tokens``/``rejected_num_tokens`` (|y_w|, |y_l|, counted over completion tokens, EOS
    included) are needed by ``sigmoid_norm``, ``simpo``, ``orpo`` and ``sft``; given to ``ipo``, they make it
    average log-ratios over tokens as TRL 1.16 does.
    """

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor | None = None
    ref_rejected: torch.Tensor | None = None
    chosen_num_tokens: torch.Tensor | None = None
    rejected_num_tokens: torch.Tensor | None = None

    @property
    def has_reference(self) -> bool:
        return self.ref_chosen is not None and self.ref_rejected is not None

    @property
    def has_token_counts(self) -> bool:
        return self.chosen_num_tokens is not None and self.rejected_num_tokens is not None

    @classmethod
    def from_records(
        cls, policy: ChosenRejectedLogps, reference: ChosenRejectedLogps | None
    ) -> PreferenceLogps:
        """From the policy's and the reference's chosen/rejected records (``sequence_logps`` outputs); the
        token counts are the policy's. ``reference=None`` for the reference-free losses."""
        return cls(
            policy.chosen_logps,
            policy.rejected_logps,
            reference.chosen_logps if reference is not None else None,
            reference.rejected_logps if reference is not None else None,
            policy.chosen_num_tokens,
            policy.rejected_num_tokens,
        )


@dataclass(frozen=True)
class DPOLossOutput:
    """Per-pair loss and implicit rewards, each of shape (B,). Rewards carry no gradient."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


@dataclass(frozen=True)
class LossConfig:
    """Hyperparameters of ``preference_loss``; TRL's fields keep TRL 1.16 ``DPOConfig`` names and defaults.

    Args:
        loss_type: one name of ``LOSS_TYPES`` or a list of them (summed with ``loss_weights``).
        loss_weights: one weight per loss type; None = 1.0 each.
        beta: β > 0 of every reference-based loss (τ of IPO).
        label_smoothing: ε; flip probability for ``sigmoid`` (cDPO), ``robust`` (in [0, 0.5)), ``aot`` and
            ``aot_unpaired``; the label smoothing of ``exo_pair`` (must be > 0; the EXO paper suggests 1e-3).
        f_divergence_type: one of ``F_DIVERGENCE_TYPES``; a non-default value is only allowed when every loss
            type is in ``F_DIVERGENCE_LOSS_TYPES``.
        f_alpha_divergence_coef: α of ``alpha_divergence``.
        discopop_tau: τ of ``discopop`` (the DiscoPOP paper's 0.05).
        simpo_beta, simpo_gamma: β and target margin γ of ``simpo`` (SimPO's β = 2.0, γ/β = 0.5).
        orpo_lambda: λ, weight of the odds-ratio term of ``orpo`` (ORPO's 0.1).
    """

    loss_type: str | Sequence[str] = "sigmoid"
    loss_weights: Sequence[float] | None = None
    beta: float = 0.1
    label_smoothing: float = 0.0
    f_divergence_type: str = "reverse_kl"
    f_alpha_divergence_coef: float = 0.5
    discopop_tau: float = 0.05
    simpo_beta: float = 2.0
    simpo_gamma: float = 1.0
    orpo_lambda: float = 0.1
    loss_types: tuple[str, ...] = field(init=False)
    weights: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        types = (self.loss_type,) if isinstance(self.loss_type, str) else tuple(self.loss_type)
        object.__setattr__(self, "loss_types", types)
        weights = tuple(float(w) for w in self.loss_weights) if self.loss_weights is not None else None
        object.__setattr__(self, "weights", weights if weights is not None else (1.0,) * len(types))
        self._validate()

    @classmethod
    def from_args(cls, args: Any) -> LossConfig:
        """Build from any object with (a subset of) these fields as attributes, e.g. a ``DPOConfig``."""
        names = [f.name for f in cls.__dataclass_fields__.values() if f.init]
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})

    def _validate(self) -> None:
        if not self.loss_types:
            raise ValueError("loss_type is empty; give one of " + ", ".join(LOSS_TYPES))
        for name in self.loss_types:
            if name not in LOSS_TYPES:
                raise ValueError(f"unknown loss_type {name!r}; expected one of {', '.join(LOSS_TYPES)}")
        if len(self.weights) != len(self.loss_types):
            raise ValueError(
                f"loss_weights has {len(self.weights)} weights for {len(self.loss_types)} loss types "
                f"{list(self.loss_types)}; give one weight per loss type, or None for 1.0 each."
            )
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}.")
        if "robust" in self.loss_types and not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5) for 'robust', got {self.label_smoothing}.")
        if "exo_pair" in self.loss_types and not 0.0 < self.label_smoothing < 1.0:
            raise ValueError(
                f"label_smoothing must be in (0, 1) for 'exo_pair', got {self.label_smoothing}; "
                "the EXO paper suggests 1e-3."
            )
        if self.f_divergence_type not in F_DIVERGENCE_TYPES:
            raise ValueError(
                f"unknown f_divergence_type {self.f_divergence_type!r}; "
                f"expected one of {', '.join(F_DIVERGENCE_TYPES)}"
            )
        unsupported = [t for t in self.loss_types if t not in F_DIVERGENCE_LOSS_TYPES]
        if self.f_divergence_type != "reverse_kl" and unsupported:
            raise ValueError(
                f"f_divergence_type={self.f_divergence_type!r} is not defined for loss types {unsupported}; "
                f"it applies to {sorted(F_DIVERGENCE_LOSS_TYPES)}. Use f_divergence_type='reverse_kl'."
            )
        if "discopop" in self.loss_types and not self.discopop_tau > 0:
            raise ValueError(f"discopop_tau must be > 0, got {self.discopop_tau}.")
        if "simpo" in self.loss_types and not self.simpo_beta > 0:
            raise ValueError(f"simpo_beta must be > 0, got {self.simpo_beta}.")
        if "orpo" in self.loss_types and not self.orpo_lambda >= 0:
            raise ValueError(f"orpo_lambda must be >= 0, got {self.orpo_lambda}.")


class BCORewardMean:
    """Running mean δ of the implicit rewards seen by ``bco_pair``; the caller owns it (and checkpoints it).

    BCO (Jung et al. 2024, arXiv:2404.04656, Eq. 9) shifts rewards by δ, a moving average of past rewards.
    TRL 1.16's ``bco_pair`` uses δ = 0; pass an instance of this class to ``preference_loss`` to use the
    shifted form. ``update`` takes the rewards of the batch (gather them across processes first for a
    process-independent δ).
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.count = 0

    def update(self, rewards: torch.Tensor) -> float:
        """Fold in the rewards (any shape); return the new mean."""
        n = rewards.numel()
        if n:
            total = self.mean * self.count + float(rewards.detach().double().sum())
            self.count += n
            self.mean = total / self.count
        return self.mean

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.count = float(state["mean"]), int(state["count"])


# ---- score transforms ----


def preference_logits(logps: PreferenceLogps) -> torch.Tensor:
    """h = (log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l)), shape (B,)."""
    return (logps.policy_chosen - logps.ref_chosen) - (logps.policy_rejected - logps.ref_rejected)


def f_divergence_score(log_ratio: torch.Tensor, f_divergence_type: str, alpha: float = 0.5) -> torch.Tensor:
    """f'(t) at t = πθ/πref = exp(log_ratio), shape preserved: the per-completion score of f-DPO
    (Wang et al. 2023, arXiv:2309.16240, Thm. 1), whose difference replaces u(y_w) − u(y_l) in the loss.

    - ``reverse_kl``: f'(t) = log t (DPO).
    - ``forward_kl``: f'(t) = 1 − 1/t.
    - ``js_divergence``: f'(t) = log(2t / (1 + t)) = log 2 + log σ(log t).
    - ``alpha_divergence``: f'(t) = (t^(α−1) − 1)/(α − 1); log t at α = 1. The exponent is clamped (at 11
      in float16, 80 otherwise) so that t^(α−1) stays finite.
    """
    if f_divergence_type == "reverse_kl":
        return log_ratio
    if f_divergence_type == "forward_kl":
        return 1 - torch.exp(-log_ratio)
    if f_divergence_type == "js_divergence":
        return math.log(2) + F.logsigmoid(log_ratio)
    if f_divergence_type == "alpha_divergence":
        if abs(alpha - 1.0) < 1e-6:
            return log_ratio
        exponent = (alpha - 1.0) * log_ratio
        compute_dtype = torch.promote_types(exponent.dtype, torch.float32)
        limit = 11.0 if exponent.dtype == torch.float16 else 80.0
        powered = torch.exp(exponent.to(compute_dtype).clamp(max=limit)).to(exponent.dtype)
        return (powered - 1.0) / (alpha - 1.0)
    raise ValueError(f"unknown f_divergence_type {f_divergence_type!r}; expected one of {F_DIVERGENCE_TYPES}")


def _cdpo(logits: torch.Tensor, eps: float) -> torch.Tensor:
    """−(1−ε)·log σ(z) − ε·log σ(−z): the logistic loss with labels flipped with probability ε."""
    return -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)


def _per_token(summed: torch.Tensor, num_tokens: torch.Tensor) -> torch.Tensor:
    return summed / num_tokens.to(summed.dtype).clamp(min=1)


# ---- losses on the score difference d = s(y_w) − s(y_l) (s = log-ratio, or its f-divergence score) ----


def sigmoid_loss(delta: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (arXiv:2305.18290, Eq. 7): −log σ(β·d), shape (B,). With ε = ``label_smoothing`` > 0, conservative
    DPO: −(1−ε)·log σ(βd) − ε·log σ(−βd) (TRL 1.16's ``sigmoid`` ignores ε)."""
    return _cdpo(beta * delta, label_smoothing)


def robust_loss(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """rDPO (Chowdhury et al. 2024, arXiv:2403.00409, Eq. 8), unbiased under label-flip rate ε ∈ [0, 0.5):
    (−(1−ε)·log σ(βd) + ε·log σ(−βd)) / (1 − 2ε), shape (B,)."""
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)


def hinge_loss(delta: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-HF calibration loss (Zhao et al. 2023, arXiv:2305.10425, Eq. 1): max(0, 1 − β·d), shape (B,)."""
    return torch.relu(1 - beta * delta)


def ipo_loss(delta: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO (Azar et al. 2023, arXiv:2310.12036, Eq. 17) with τ = β: (d − 1/(2β))², shape (B,)."""
    return (delta - 1 / (2 * beta)) ** 2


def exo_pair_loss(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """EXO for pairs (Ji et al. 2024, arXiv:2402.00856, Eq. 16): KL(q ‖ p) between q = (σ(βd), σ(−βd)), the
    policy's distribution over {y_w, y_l}, and the smoothed label p = (1−ε, ε); shape (B,). Needs ε > 0."""
    z = beta * delta
    kl_chosen = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-label_smoothing))
    kl_rejected = torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(label_smoothing))
    return kl_chosen + kl_rejected


def discopop_loss(delta: torch.Tensor, beta: float, tau: float = 0.05) -> torch.Tensor:
    """DiscoPOP / log-ratio modulated loss (Chan Lu et al. 2024, arXiv:2406.08414, Eq. 5), shape (B,): with
    z = β·d and m = σ(z/τ), (1 − m)·(−log σ(z)) + m·exp(−z)."""
    z = beta * delta
    mix = torch.sigmoid(z / tau)
    return (1 - mix) * -F.logsigmoid(z) + mix * torch.exp(-z)


# ---- losses on the separate log-ratios u_w = u(y_w), u_l = u(y_l) ----


def nca_pair_loss(
    chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float
) -> torch.Tensor:
    """NCA for pairs (Chen et al. 2024, arXiv:2402.05369, Eq. 12), shape (B,):
    −log σ(β·u_w) − ½·log σ(−β·u_w) − ½·log σ(−β·u_l)."""
    chosen, rejected = beta * chosen_logratio, beta * rejected_logratio
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


def bco_pair_loss(
    chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float, delta: float = 0.0
) -> torch.Tensor:
    """BCO for pairs (Jung et al. 2024, arXiv:2404.04656, Eq. 9), shape (B,): each completion classified on
    its own, −log σ(β·u_w − δ) − log σ(−(β·u_l − δ)), δ the running reward mean (0 in TRL 1.16)."""
    return -F.logsigmoid(beta * chosen_logratio - delta) - F.logsigmoid(-(beta * rejected_logratio - delta))


def sppo_hard_loss(
    chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float
) -> torch.Tensor:
    """SPPO with hard win probabilities (Wu et al. 2024, arXiv:2405.00675, Eq. 4.7 with P(y_w ≻ y_l) = 1),
    shape (B,): (u_w − 1/(2β))² + (u_l + 1/(2β))²."""
    return (chosen_logratio - 0.5 / beta) ** 2 + (rejected_logratio + 0.5 / beta) ** 2


def apo_zero_loss(
    chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float
) -> torch.Tensor:
    """APO-zero (D'Oosterlinck et al. 2024, arXiv:2408.06266, Eq. 7): raise chosen, lower rejected
    likelihood; (1 − σ(β·u_w)) + σ(β·u_l), shape (B,). For chosen outputs better than the model's own."""
    return 1 - torch.sigmoid(beta * chosen_logratio) + torch.sigmoid(beta * rejected_logratio)


def apo_down_loss(
    chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float
) -> torch.Tensor:
    """APO-down (arXiv:2408.06266, Eq. 8): lower both likelihoods, the rejected one more;
    σ(β·u_w) + (1 − σ(β·(u_w − u_l))), shape (B,). For chosen outputs worse than the model's own."""
    return (
        torch.sigmoid(beta * chosen_logratio)
        + 1
        - torch.sigmoid(beta * (chosen_logratio - rejected_logratio))
    )


def aot_loss(
    logps: PreferenceLogps, beta: float, label_smoothing: float = 0.0, paired: bool = True
) -> torch.Tensor:
    """AOT, distributional alignment via optimal transport (Melnyk et al. 2024, arXiv:2406.05882), shape (B,).

    Paired (``aot``): sort the policy margins log πθ(y_w) − log πθ(y_l) and, separately, the reference
    margins over the batch, d_(i) = policy_(i) − ref_(i). Unpaired (``aot_unpaired``): sort u_w and u_l
    separately, d_(i) = u_w,(i) − u_l,(i). Loss −(1−ε)·log σ(β·d_(i)) − ε·log σ(−β·d_(i)). Entry i belongs to
    the i-th order statistic, not to pair i; only the batch mean has a meaning.
    """
    if paired:
        policy = torch.sort(logps.policy_chosen - logps.policy_rejected, dim=0).values
        reference = torch.sort(logps.ref_chosen - logps.ref_rejected, dim=0).values
    else:
        policy = torch.sort(logps.policy_chosen - logps.ref_chosen, dim=0).values
        reference = torch.sort(logps.policy_rejected - logps.ref_rejected, dim=0).values
    return _cdpo(beta * (policy - reference), label_smoothing)


# ---- losses that need token counts ----


def sft_batch_loss(chosen_logps: torch.Tensor, chosen_num_tokens: torch.Tensor) -> torch.Tensor:
    """The ``sft`` loss of TRL 1.16: NLL per token of the chosen completions over the whole batch,
    −Σ_b log πθ(y_w,b) / Σ_b |y_w,b|, repeated to shape (B,) (so its batch mean is that value)."""
    total = -chosen_logps.sum() / chosen_num_tokens.to(chosen_logps.dtype).sum().clamp(min=1)
    return total.expand(chosen_logps.shape[0])


def sft_loss(chosen_logps: torch.Tensor, chosen_num_tokens: torch.Tensor) -> torch.Tensor:
    """Per-pair negative log-likelihood per token of the chosen completion, shape (B,).

    The RPO term (Pang et al. 2024, arXiv:2404.19733): total loss = L_DPO + α · NLL(y_w|x)/|y_w|.
    """
    return -_per_token(chosen_logps, chosen_num_tokens)


def simpo_loss(
    logps: PreferenceLogps, beta: float = 2.0, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (Meng et al. 2024, arXiv:2405.14734, Eq. 6), reference-free, shape (B,):

        r(y) = β/|y| · log πθ(y|x),      L = −log σ( r(y_w) − r(y_l) − γ ).

    Returns (losses, r(y_w), r(y_l)); the rewards are detached. Defaults β = 2.0, γ = 1.0 (γ/β = 0.5).
    """
    chosen = beta * _per_token(logps.policy_chosen, logps.chosen_num_tokens)
    rejected = beta * _per_token(logps.policy_rejected, logps.rejected_num_tokens)
    return -F.logsigmoid(chosen - rejected - gamma), chosen.detach(), rejected.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, accurate on both sides of −ln 2."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(logps: PreferenceLogps, lam: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO (Hong et al. 2024, arXiv:2403.07691, Eqs. 2-7), reference-free, shape (B,):

        p̄(y) = exp(log πθ(y|x)/|y|),  odds(y) = p̄/(1 − p̄),
        L = −log πθ(y_w|x)/|y_w|  −  λ · log σ( log odds(y_w) − log odds(y_l) ).

    The per-token mean log-prob is capped just below 0 (−machine ε) so that log odds stays finite when a
    completion has probability 1. Returns (losses, λ·log p̄(y_w), λ·log p̄(y_l)), the rewards TRL's
    ORPOTrainer logs (detached).
    """
    cap = -torch.finfo(logps.policy_chosen.dtype).eps
    chosen = _per_token(logps.policy_chosen, logps.chosen_num_tokens)
    rejected = _per_token(logps.policy_rejected, logps.rejected_num_tokens)
    chosen_capped, rejected_capped = chosen.clamp(max=cap), rejected.clamp(max=cap)
    log_odds = (chosen_capped - rejected_capped) - (_log1mexp(chosen_capped) - _log1mexp(rejected_capped))
    losses = -chosen - lam * F.logsigmoid(log_odds)
    return losses, lam * chosen.detach(), lam * rejected.detach()


# ---- the combination ----


def needs_reference(loss_types: str | Sequence[str]) -> bool:
    """Whether any of the loss types needs reference log-probs (False for simpo, orpo, sft alone)."""
    types = (loss_types,) if isinstance(loss_types, str) else tuple(loss_types)
    return any(t not in REFERENCE_FREE_LOSS_TYPES for t in types)


def _check_inputs(logps: PreferenceLogps, config: LossConfig) -> None:
    fields = {"policy_chosen": logps.policy_chosen, "policy_rejected": logps.policy_rejected}
    if needs_reference(config.loss_types):
        if not logps.has_reference:
            raise ValueError(
                f"loss types {list(config.loss_types)} need reference log-probs: PreferenceLogps.ref_chosen "
                "and ref_rejected are None. Pass them, or use a reference-free loss (simpo, orpo, sft)."
            )
    if logps.has_reference:
        fields.update(ref_chosen=logps.ref_chosen, ref_rejected=logps.ref_rejected)
    counted = sorted(TOKEN_COUNT_LOSS_TYPES.intersection(config.loss_types))
    if counted and not logps.has_token_counts:
        raise ValueError(
            f"loss types {counted} need completion token counts: set PreferenceLogps.chosen_num_tokens and "
            "rejected_num_tokens (shape (B,))."
        )
    if logps.has_token_counts:
        fields.update(
            chosen_num_tokens=logps.chosen_num_tokens, rejected_num_tokens=logps.rejected_num_tokens
        )
    shape = logps.policy_chosen.shape
    for name, tensor in fields.items():
        if tensor.dim() != 1 or tensor.shape != shape:
            raise ValueError(
                f"PreferenceLogps.{name} has shape {tuple(tensor.shape)}; every field must have shape (B,) "
                f"with B = {shape[0] if len(shape) == 1 else '?'} (one value per pair)."
            )


def preference_loss(
    logps: PreferenceLogps, config: LossConfig, bco_reward_mean: BCORewardMean | None = None
) -> DPOLossOutput:
    """Per-pair loss Σ_k w_k · loss_k over ``config.loss_types``, shape (B,), and the implicit rewards.

    Reference-based losses see u(y) = log πθ(y) − log πref(y), or its f-divergence score s(y) (see
    ``f_divergence_score``) where the loss takes d = s(y_w) − s(y_l). ``ipo`` and ``sigmoid_norm`` divide
    s(y) by the completion's token count (``ipo`` only when counts are given). The batch mean equals the
    loss of TRL 1.16's ``DPOTrainer`` on the same inputs (``sigmoid`` with ε > 0 is cDPO here, DPO in TRL).

    Rewards (detached): when every loss type is reference-free and one is ``simpo``, the SimPO reward
    β_simpo/|y|·log πθ(y); else, if one is ``orpo``, λ/|y|·log πθ(y) (as TRL's ORPOTrainer logs it); else
    β·u(y) as TRL reports it (given reference log-probs), or the per-token mean log-prob 1/|y|·log πθ(y)
    (``sft`` alone without a reference).

    ``bco_reward_mean``: running reward mean δ for ``bco_pair``, updated with this batch's rewards before
    use; None uses δ = 0 (TRL 1.16).
    """
    _check_inputs(logps, config)
    beta, eps = config.beta, config.label_smoothing
    types = set(config.loss_types)
    rewards = None
    if logps.has_reference:
        chosen_logratio = logps.policy_chosen - logps.ref_chosen
        rejected_logratio = logps.policy_rejected - logps.ref_rejected
        rewards = (beta * chosen_logratio.detach(), beta * rejected_logratio.detach())
        score_chosen = f_divergence_score(
            chosen_logratio, config.f_divergence_type, config.f_alpha_divergence_coef
        )
        score_rejected = f_divergence_score(
            rejected_logratio, config.f_divergence_type, config.f_alpha_divergence_coef
        )
        delta = score_chosen - score_rejected
        if types & {"ipo", "sigmoid_norm"} and logps.has_token_counts:
            delta_per_token = _per_token(score_chosen, logps.chosen_num_tokens) - _per_token(
                score_rejected, logps.rejected_num_tokens
            )
    per_type: dict[str, torch.Tensor] = {}
    for name in types:
        if name == "sigmoid":
            per_type[name] = sigmoid_loss(delta, beta, eps)
        elif name == "robust":
            per_type[name] = robust_loss(delta, beta, eps)
        elif name == "hinge":
            per_type[name] = hinge_loss(delta, beta)
        elif name == "ipo":
            per_type[name] = ipo_loss(delta_per_token if logps.has_token_counts else delta, beta)
        elif name == "sigmoid_norm":
            per_type[name] = sigmoid_loss(delta_per_token, beta)
        elif name == "exo_pair":
            per_type[name] = exo_pair_loss(delta, beta, eps)
        elif name == "discopop":
            per_type[name] = discopop_loss(delta, beta, config.discopop_tau)
        elif name == "nca_pair":
            per_type[name] = nca_pair_loss(chosen_logratio, rejected_logratio, beta)
        elif name == "bco_pair":
            shift = 0.0
            if bco_reward_mean is not None:
                shift = bco_reward_mean.update(torch.cat(rewards))
            per_type[name] = bco_pair_loss(chosen_logratio, rejected_logratio, beta, shift)
        elif name == "sppo_hard":
            per_type[name] = sppo_hard_loss(chosen_logratio, rejected_logratio, beta)
        elif name == "apo_zero":
            per_type[name] = apo_zero_loss(chosen_logratio, rejected_logratio, beta)
        elif name == "apo_down":
            per_type[name] = apo_down_loss(chosen_logratio, rejected_logratio, beta)
        elif name in ("aot", "aot_unpaired"):
            per_type[name] = aot_loss(logps, beta, eps, paired=name == "aot")
        elif name == "sft":
            per_type[name] = sft_batch_loss(logps.policy_chosen, logps.chosen_num_tokens)
        elif name == "orpo":
            per_type[name], *orpo_rewards = orpo_loss(logps, config.orpo_lambda)
        elif name == "simpo":
            per_type[name], *simpo_rewards = simpo_loss(logps, config.simpo_beta, config.simpo_gamma)
    losses = sum(w * per_type[name] for name, w in zip(config.loss_types, config.weights, strict=True))
    if not needs_reference(types) and "simpo" in types:
        rewards = tuple(simpo_rewards)
    elif not needs_reference(types) and "orpo" in types:
        rewards = tuple(orpo_rewards)
    elif rewards is None:
        rewards = (
            _per_token(logps.policy_chosen, logps.chosen_num_tokens).detach(),
            _per_token(logps.policy_rejected, logps.rejected_num_tokens).detach(),
        )
    return DPOLossOutput(losses, rewards[0], rewards[1])


def dpo_loss(
    logps: PreferenceLogps, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0
) -> DPOLossOutput:
    """Per-pair loss of one loss type with default settings otherwise: ``preference_loss`` with
    ``LossConfig(loss_type, beta=beta, label_smoothing=label_smoothing)``. With h = preference_logits(logps)
    and ε = label_smoothing, e.g.:

    - ``sigmoid``: −(1−ε)·log σ(βh) − ε·log σ(−βh). ε = 0 is DPO (Eq. 7); ε > 0 is conservative DPO.
    - ``robust``: (−(1−ε)·log σ(βh) + ε·log σ(−βh)) / (1 − 2ε), rDPO.
    - ``hinge``: max(0, 1 − βh), SLiC-HF.
    - ``ipo``: (h − 1/(2β))² on summed log-probs (per-token averages when token counts are given).

    Returns:
        losses (B,), and detached implicit rewards β·(log πθ − log πref) of chosen and rejected (B,).
    """
    return preference_loss(logps, LossConfig(loss_type, beta=beta, label_smoothing=label_smoothing))


def pair_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """1 where the chosen reward is higher, 0 where lower, 0.5 on a tie; shape (B,)."""
    return (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
