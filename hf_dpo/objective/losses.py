"""DPO-family losses: pure functions from per-pair summed log-probs (B,) to per-pair losses (B,).

Notation (arXiv:2305.18290): u(y) = log πθ(y|x) − log πref(y|x), reward r = β·u(y), and
L_DPO = −E[log σ(β·(u(y_w) − u(y_l)))] (Eq. 7). ``preference_loss`` sums weighted loss types as TRL 1.16.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from hf_dpo.modeling.forward import ChosenRejectedLogps

F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


@dataclass(frozen=True)
class PreferenceLogps:
    """Summed completion log-probs of a batch of pairs, each (B,); ``ref_*`` None for reference-free losses.
    Token counts |y_w|, |y_l| (EOS included): needed by ``TOKEN_COUNT_LOSS_TYPES``; ``ipo`` then averages."""

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
        """From ``sequence_logps`` records (token counts: the policy's); ``reference=None``: no reference."""
        ref = (reference.chosen_logps, reference.rejected_logps) if reference is not None else (None, None)
        counts = (policy.chosen_num_tokens, policy.rejected_num_tokens)
        return cls(policy.chosen_logps, policy.rejected_logps, *ref, *counts)


@dataclass(frozen=True)
class DPOLossOutput:
    """Per-pair loss and implicit rewards, each of shape (B,). Rewards carry no gradient."""

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


@dataclass(frozen=True)
class LossConfig:
    """Hyperparameters of ``preference_loss``, with TRL 1.16 ``DPOConfig`` names and defaults.
    ``loss_type``: a name of ``LOSS_TYPES`` or a list of them, summed with ``loss_weights`` (None: 1.0 each).
    ``label_smoothing`` ε: flip rate of ``sigmoid`` (cDPO), ``robust`` ([0, 0.5)), ``aot*``; ``exo_pair``
    needs ε > 0. A non-default ``f_divergence_type`` needs every loss type in ``F_DIVERGENCE_LOSS_TYPES``.
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
        if not self.loss_types:
            raise ValueError("loss_type is empty; give one of " + ", ".join(LOSS_TYPES))
        if unknown := [name for name in self.loss_types if name not in LOSS_TYPES]:
            raise ValueError(f"unknown loss_type {unknown[0]!r}; expected one of {', '.join(LOSS_TYPES)}")
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

    @classmethod
    def from_args(cls, args: Any) -> LossConfig:
        """From an object with (some of) these fields as attributes (``DPOConfig``), or a mapping of them."""
        names = [f.name for f in cls.__dataclass_fields__.values() if f.init]
        if isinstance(args, Mapping):
            return cls(**{name: args[name] for name in names if args.get(name) is not None})
        return cls(**{name: getattr(args, name) for name in names if hasattr(args, name)})


def f_divergence_score(log_ratio: torch.Tensor, f_divergence_type: str, alpha: float = 0.5) -> torch.Tensor:
    """f'(t) at t = exp(log_ratio), shape preserved: the f-DPO score (arXiv:2309.16240, Thm. 1). reverse_kl:
    log t; forward_kl: 1 − 1/t; js_divergence: log 2 + log σ(log t); alpha_divergence: (t^(α−1) − 1)/(α − 1),
    exponent clamped (11 in float16, else 80)."""
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


# ---- losses on d = s(y_w) − s(y_l) (s: the log-ratio u, or its f-divergence score); all (B,) -> (B,) ----


def sigmoid_loss(delta: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """DPO (arXiv:2305.18290, Eq. 7): −log σ(βd); cDPO with ε > 0 (TRL 1.16's ``sigmoid`` ignores ε)."""
    return _cdpo(beta * delta, label_smoothing)


def robust_loss(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """rDPO (arXiv:2403.00409, Eq. 8): (−(1−ε)·log σ(βd) + ε·log σ(−βd)) / (1 − 2ε), ε ∈ [0, 0.5)."""
    eps = label_smoothing
    return (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)


def hinge_loss(delta: torch.Tensor, beta: float) -> torch.Tensor:
    """SLiC-HF (arXiv:2305.10425, Eq. 1): max(0, 1 − β·d)."""
    return torch.relu(1 - beta * delta)


def ipo_loss(delta: torch.Tensor, beta: float) -> torch.Tensor:
    """IPO (arXiv:2310.12036, Eq. 17) with τ = β: (d − 1/(2β))²."""
    return (delta - 1 / (2 * beta)) ** 2


def exo_pair_loss(delta: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    """EXO for pairs (arXiv:2402.00856, Eq. 16): KL(q ‖ p), q = (σ(βd), σ(−βd)), p = (1−ε, ε), ε > 0."""
    z = beta * delta
    kl_chosen = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-label_smoothing))
    kl_rejected = torch.sigmoid(-z) * (F.logsigmoid(-z) - math.log(label_smoothing))
    return kl_chosen + kl_rejected


def discopop_loss(delta: torch.Tensor, beta: float, tau: float = 0.05) -> torch.Tensor:
    """DiscoPOP (arXiv:2406.08414, Eq. 5): z = β·d, m = σ(z/τ), (1 − m)·(−log σ(z)) + m·exp(−z)."""
    z = beta * delta
    mix = torch.sigmoid(z / tau)
    return (1 - mix) * -F.logsigmoid(z) + mix * torch.exp(-z)


# ---- losses on the separate log-ratios u_w = u(y_w), u_l = u(y_l); all (B,) -> (B,) ----


def nca_pair_loss(u_w: torch.Tensor, u_l: torch.Tensor, beta: float) -> torch.Tensor:
    """NCA (arXiv:2402.05369, Eq. 12): −log σ(β·u_w) − ½·log σ(−β·u_w) − ½·log σ(−β·u_l)."""
    chosen, rejected = beta * u_w, beta * u_l
    return -F.logsigmoid(chosen) - 0.5 * F.logsigmoid(-chosen) - 0.5 * F.logsigmoid(-rejected)


def bco_pair_loss(u_w: torch.Tensor, u_l: torch.Tensor, beta: float, delta: float = 0.0) -> torch.Tensor:
    """BCO (arXiv:2404.04656, Eq. 9): −log σ(β·u_w − δ) − log σ(−(β·u_l − δ)), δ = 0 as in TRL 1.16."""
    return -F.logsigmoid(beta * u_w - delta) - F.logsigmoid(-(beta * u_l - delta))


def sppo_hard_loss(u_w: torch.Tensor, u_l: torch.Tensor, beta: float) -> torch.Tensor:
    """SPPO, hard win probabilities (arXiv:2405.00675, Eq. 4.7): (u_w − 1/(2β))² + (u_l + 1/(2β))²."""
    return (u_w - 0.5 / beta) ** 2 + (u_l + 0.5 / beta) ** 2


def apo_zero_loss(u_w: torch.Tensor, u_l: torch.Tensor, beta: float) -> torch.Tensor:
    """APO-zero (arXiv:2408.06266, Eq. 7): (1 − σ(β·u_w)) + σ(β·u_l)."""
    return 1 - torch.sigmoid(beta * u_w) + torch.sigmoid(beta * u_l)


def apo_down_loss(u_w: torch.Tensor, u_l: torch.Tensor, beta: float) -> torch.Tensor:
    """APO-down (arXiv:2408.06266, Eq. 8): σ(β·u_w) + (1 − σ(β·(u_w − u_l)))."""
    return torch.sigmoid(beta * u_w) + 1 - torch.sigmoid(beta * (u_w - u_l))


def aot_loss(
    logps: PreferenceLogps, beta: float, label_smoothing: float = 0.0, paired: bool = True
) -> torch.Tensor:
    """AOT (arXiv:2406.05882), (B,): cDPO loss on d_(i) = policy_(i) − ref_(i), the batch-sorted policy and
    reference margins (paired), or the sorted u_w and u_l (unpaired). Only the batch mean has a meaning."""
    pc, pr, rc, rr = logps.policy_chosen, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected
    policy, reference = (pc - pr, rc - rr) if paired else (pc - rc, pr - rr)
    policy, reference = (torch.sort(x, dim=0).values for x in (policy, reference))
    return _cdpo(beta * (policy - reference), label_smoothing)


def sft_batch_loss(chosen_logps: torch.Tensor, chosen_num_tokens: torch.Tensor) -> torch.Tensor:
    """TRL 1.16's ``sft``: −Σ_b log πθ(y_w,b) / Σ_b |y_w,b|, repeated to shape (B,)."""
    total = -chosen_logps.sum() / chosen_num_tokens.to(chosen_logps.dtype).sum().clamp(min=1)
    return total.expand(chosen_logps.shape[0])


def sft_loss(chosen_logps: torch.Tensor, chosen_num_tokens: torch.Tensor) -> torch.Tensor:
    """Per-pair NLL per token of the chosen completion, (B,): the RPO term (arXiv:2404.19733)."""
    return -_per_token(chosen_logps, chosen_num_tokens)


def simpo_loss(
    logps: PreferenceLogps, beta: float = 2.0, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimPO (arXiv:2405.14734, Eq. 6): r(y) = β/|y|·log πθ(y|x), L = −log σ(r(y_w) − r(y_l) − γ).
    Returns (losses, r(y_w), r(y_l)), each (B,); the rewards are detached."""
    chosen = beta * _per_token(logps.policy_chosen, logps.chosen_num_tokens)
    rejected = beta * _per_token(logps.policy_rejected, logps.rejected_num_tokens)
    return -F.logsigmoid(chosen - rejected - gamma), chosen.detach(), rejected.detach()


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x < 0, accurate on both sides of −ln 2."""
    return torch.where(x < -math.log(2), torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def orpo_loss(logps: PreferenceLogps, lam: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ORPO (arXiv:2403.07691, Eqs. 2-7): p̄(y) = exp(log πθ(y|x)/|y|), odds = p̄/(1 − p̄),
    L = −log πθ(y_w|x)/|y_w| − λ·log σ(log odds(y_w) − log odds(y_l)); log p̄ capped at −eps to stay finite.
    Returns (losses, λ·log p̄(y_w), λ·log p̄(y_l)), each (B,); TRL ORPOTrainer's rewards, detached."""
    cap = -torch.finfo(logps.policy_chosen.dtype).eps
    chosen = _per_token(logps.policy_chosen, logps.chosen_num_tokens)
    rejected = _per_token(logps.policy_rejected, logps.rejected_num_tokens)
    chosen_capped, rejected_capped = chosen.clamp(max=cap), rejected.clamp(max=cap)
    log_odds = (chosen_capped - rejected_capped) - (_log1mexp(chosen_capped) - _log1mexp(rejected_capped))
    losses = -chosen - lam * F.logsigmoid(log_odds)
    return losses, lam * chosen.detach(), lam * rejected.detach()


# ---- the combination: a registry of losses that declare what they need ----


@dataclass(frozen=True)
class LossTerms:
    """What the losses are computed from, once per batch, each (B,); all None without reference log-probs:
    u(y_w), u(y_l), d = s(y_w) − s(y_l) (s: f-divergence score of u), and d of per-token s (needs counts)."""

    logps: PreferenceLogps
    chosen_logratio: torch.Tensor | None = None
    rejected_logratio: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    delta_per_token: torch.Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    """One registered loss ``fn(terms, config) -> (B,)``, and whether it needs reference log-probs, completion
    lengths, or takes d = s(y_w) − s(y_l) (so a non-default ``f_divergence_type`` applies)."""

    fn: Callable[[LossTerms, LossConfig], torch.Tensor]
    needs_reference: bool = True
    needs_token_counts: bool = False
    f_divergence: bool = False


_POLICY_ONLY = {"needs_reference": False, "needs_token_counts": True}  # reference-free, per-token losses


# In the order of TRL 1.16's DPOTrainer loss types, then the reference-free ones TRL's DPOTrainer lacks.
LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(lambda t, c: sigmoid_loss(t.delta, c.beta, c.label_smoothing), f_divergence=True),
    "hinge": LossSpec(lambda t, c: hinge_loss(t.delta, c.beta), f_divergence=True),
    "ipo": LossSpec(  # on per-token averages when token counts are given (TRL 1.16), else on sums
        lambda t, c: ipo_loss(t.delta_per_token if t.delta_per_token is not None else t.delta, c.beta),
        f_divergence=True,
    ),
    "exo_pair": LossSpec(lambda t, c: exo_pair_loss(t.delta, c.beta, c.label_smoothing), f_divergence=True),
    "nca_pair": LossSpec(lambda t, c: nca_pair_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "robust": LossSpec(lambda t, c: robust_loss(t.delta, c.beta, c.label_smoothing), f_divergence=True),
    "bco_pair": LossSpec(lambda t, c: bco_pair_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "sppo_hard": LossSpec(lambda t, c: sppo_hard_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "aot": LossSpec(lambda t, c: aot_loss(t.logps, c.beta, c.label_smoothing)),
    "aot_unpaired": LossSpec(lambda t, c: aot_loss(t.logps, c.beta, c.label_smoothing, paired=False)),
    "apo_zero": LossSpec(lambda t, c: apo_zero_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "apo_down": LossSpec(lambda t, c: apo_down_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "discopop": LossSpec(lambda t, c: discopop_loss(t.delta, c.beta, c.discopop_tau), f_divergence=True),
    "sft": LossSpec(
        lambda t, c: sft_batch_loss(t.logps.policy_chosen, t.logps.chosen_num_tokens),
        f_divergence=True,
        **_POLICY_ONLY,
    ),
    "sigmoid_norm": LossSpec(
        lambda t, c: sigmoid_loss(t.delta_per_token, c.beta), needs_token_counts=True, f_divergence=True
    ),
    "simpo": LossSpec(lambda t, c: simpo_loss(t.logps, c.simpo_beta, c.simpo_gamma)[0], **_POLICY_ONLY),
    "orpo": LossSpec(lambda t, c: orpo_loss(t.logps, c.orpo_lambda)[0], **_POLICY_ONLY),
}
LOSS_TYPES = tuple(LOSSES)
TRL_LOSS_TYPES = LOSS_TYPES[:-2]
TOKEN_COUNT_LOSS_TYPES = frozenset(n for n, s in LOSSES.items() if s.needs_token_counts)
F_DIVERGENCE_LOSS_TYPES = frozenset(n for n, s in LOSSES.items() if s.f_divergence)


def needs_reference(loss_types: str | Sequence[str]) -> bool:
    """Whether any of the loss types needs reference log-probs (False for simpo, orpo, sft alone)."""
    types = (loss_types,) if isinstance(loss_types, str) else tuple(loss_types)
    return any(t not in LOSSES or LOSSES[t].needs_reference for t in types)


def loss_terms(logps: PreferenceLogps, config: LossConfig) -> LossTerms:
    """The log-ratios u and score differences d of ``logps`` (see ``LossTerms``)."""
    if not logps.has_reference:
        return LossTerms(logps)
    chosen = logps.policy_chosen - logps.ref_chosen
    rejected = logps.policy_rejected - logps.ref_rejected
    score_chosen = f_divergence_score(chosen, config.f_divergence_type, config.f_alpha_divergence_coef)
    score_rejected = f_divergence_score(rejected, config.f_divergence_type, config.f_alpha_divergence_coef)
    per_token = None
    if logps.has_token_counts:
        per_token = _per_token(score_chosen, logps.chosen_num_tokens) - _per_token(
            score_rejected, logps.rejected_num_tokens
        )
    return LossTerms(logps, chosen, rejected, score_chosen - score_rejected, per_token)


def implicit_rewards(terms: LossTerms, config: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Detached per-pair rewards (B,) of chosen and rejected: β·u(y) (as TRL), but for reference-free losses
    alone SimPO's β_s/|y|·log πθ(y) with ``simpo``, else ORPO's λ/|y|·log πθ(y) with ``orpo``, else
    1/|y|·log πθ(y) (``sft`` alone)."""
    logps, types = terms.logps, set(config.loss_types)
    reference_free = not needs_reference(config.loss_types)
    if reference_free and "simpo" in types:
        return tuple(simpo_loss(logps, config.simpo_beta, config.simpo_gamma)[1:])
    if terms.chosen_logratio is not None and not (reference_free and "orpo" in types):
        return config.beta * terms.chosen_logratio.detach(), config.beta * terms.rejected_logratio.detach()
    scale = config.orpo_lambda if reference_free and "orpo" in types else 1.0
    chosen = _per_token(logps.policy_chosen, logps.chosen_num_tokens).detach()
    return scale * chosen, scale * _per_token(logps.policy_rejected, logps.rejected_num_tokens).detach()


def preference_loss(logps: PreferenceLogps, config: LossConfig) -> DPOLossOutput:
    """Per-pair loss Σ_k w_k · loss_k over ``config.loss_types``, (B,), and the implicit rewards. The batch
    mean equals TRL 1.16's ``DPOTrainer`` loss (except ``sigmoid`` with ε > 0: cDPO here)."""
    if needs_reference(config.loss_types) and not logps.has_reference:
        raise ValueError(
            f"loss types {list(config.loss_types)} need reference log-probs: PreferenceLogps.ref_chosen "
            "and ref_rejected are None. Pass them, or use a reference-free loss (simpo, orpo, sft)."
        )
    counted = sorted(TOKEN_COUNT_LOSS_TYPES.intersection(config.loss_types))
    if counted and not logps.has_token_counts:
        raise ValueError(
            f"loss types {counted} need completion token counts: set PreferenceLogps.chosen_num_tokens and "
            "rejected_num_tokens (shape (B,))."
        )
    shape = logps.policy_chosen.shape
    for name in ("policy_rejected", "ref_chosen", "ref_rejected", "chosen_num_tokens", "rejected_num_tokens"):
        tensor = getattr(logps, name)
        if tensor is not None and (tensor.dim() != 1 or tensor.shape != shape):
            raise ValueError(
                f"PreferenceLogps.{name} has shape {tuple(tensor.shape)}; every field must have shape (B,) "
                f"with B = {shape[0] if len(shape) == 1 else '?'} (one value per pair)."
            )
    if logps.policy_chosen.dim() != 1:
        raise ValueError(f"PreferenceLogps.policy_chosen has shape {tuple(shape)}; it must be (B,).")
    terms = loss_terms(logps, config)
    losses = sum(
        w * LOSSES[n].fn(terms, config) for n, w in zip(config.loss_types, config.weights, strict=True)
    )
    return DPOLossOutput(losses, *implicit_rewards(terms, config))


def dpo_loss(
    logps: PreferenceLogps, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0
) -> DPOLossOutput:
    """``preference_loss`` of one loss type, other settings at their defaults: per-pair losses (B,) and the
    detached implicit rewards β·(log πθ − log πref) of chosen and rejected (B,)."""
    return preference_loss(logps, LossConfig(loss_type, beta=beta, label_smoothing=label_smoothing))


def pair_accuracy(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """1 where the chosen reward is higher, 0 where lower, 0.5 on a tie; shape (B,)."""
    return (chosen_rewards > rejected_rewards).float() + 0.5 * (chosen_rewards == rejected_rewards).float()
