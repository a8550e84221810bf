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
from collections.abc import Callable, Mapping, Sequence
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
F_DIVERGENCE_TYPES = ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence")


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
        """Build from any object with (a subset of) these fields as attributes, e.g. a ``DPOConfig``, or
        from a mapping of them (a run's ``config.yaml``)."""
        names = [f.name for f in cls.__dataclass_fields__.values() if f.init]
        if isinstance(args, Mapping):
            return cls(**{name: args[name] for name in names if args.get(name) is not None})
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


# ---- score transforms ----


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


# ---- the combination: a registry of losses that declare what they need ----


@dataclass(frozen=True)
class LossTerms:
    """What the losses are computed from, built once per batch by ``preference_loss``, each (B,).

    ``chosen_logratio``/``rejected_logratio``: u(y_w), u(y_l); ``delta``: d = s(y_w) − s(y_l) with s the
    f-divergence score of u (u itself for ``reverse_kl``); ``delta_per_token``: d with each s divided by its
    completion length (None without token counts). All None without reference log-probs.
    """

    logps: PreferenceLogps
    chosen_logratio: torch.Tensor | None = None
    rejected_logratio: torch.Tensor | None = None
    delta: torch.Tensor | None = None
    delta_per_token: torch.Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    """One registered loss: ``fn(terms, config) -> (B,)`` and what it needs.

    ``needs_reference``: reference log-probs; ``needs_token_counts``: completion lengths;
    ``f_divergence``: defined on d = s(y_w) − s(y_l), so a non-default ``f_divergence_type`` applies.
    """

    fn: Callable[[LossTerms, LossConfig], torch.Tensor]
    needs_reference: bool = True
    needs_token_counts: bool = False
    f_divergence: bool = False


def _ipo(t: LossTerms, c: LossConfig) -> torch.Tensor:
    """IPO on per-token averages when token counts are given (TRL 1.16), else on sums."""
    return ipo_loss(t.delta_per_token if t.delta_per_token is not None else t.delta, c.beta)


def _aot(paired: bool) -> Callable[[LossTerms, LossConfig], torch.Tensor]:
    return lambda t, c: aot_loss(t.logps, c.beta, c.label_smoothing, paired=paired)


LOSSES: dict[str, LossSpec] = {
    "sigmoid": LossSpec(lambda t, c: sigmoid_loss(t.delta, c.beta, c.label_smoothing), f_divergence=True),
    "robust": LossSpec(lambda t, c: robust_loss(t.delta, c.beta, c.label_smoothing), f_divergence=True),
    "hinge": LossSpec(lambda t, c: hinge_loss(t.delta, c.beta), f_divergence=True),
    "ipo": LossSpec(_ipo, f_divergence=True),
    "sigmoid_norm": LossSpec(
        lambda t, c: sigmoid_loss(t.delta_per_token, c.beta), needs_token_counts=True, f_divergence=True
    ),
    "exo_pair": LossSpec(lambda t, c: exo_pair_loss(t.delta, c.beta, c.label_smoothing), f_divergence=True),
    "discopop": LossSpec(lambda t, c: discopop_loss(t.delta, c.beta, c.discopop_tau), f_divergence=True),
    "nca_pair": LossSpec(lambda t, c: nca_pair_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "bco_pair": LossSpec(lambda t, c: bco_pair_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "sppo_hard": LossSpec(lambda t, c: sppo_hard_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "apo_zero": LossSpec(lambda t, c: apo_zero_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "apo_down": LossSpec(lambda t, c: apo_down_loss(t.chosen_logratio, t.rejected_logratio, c.beta)),
    "aot": LossSpec(_aot(paired=True)),
    "aot_unpaired": LossSpec(_aot(paired=False)),
    "sft": LossSpec(
        lambda t, c: sft_batch_loss(t.logps.policy_chosen, t.logps.chosen_num_tokens),
        needs_reference=False,
        needs_token_counts=True,
        f_divergence=True,
    ),
    "simpo": LossSpec(
        lambda t, c: simpo_loss(t.logps, c.simpo_beta, c.simpo_gamma)[0],
        needs_reference=False,
        needs_token_counts=True,
    ),
    "orpo": LossSpec(
        lambda t, c: orpo_loss(t.logps, c.orpo_lambda)[0], needs_reference=False, needs_token_counts=True
    ),
}
REFERENCE_FREE_LOSS_TYPES = frozenset(n for n, s in LOSSES.items() if not s.needs_reference)
TOKEN_COUNT_LOSS_TYPES = frozenset(n for n, s in LOSSES.items() if s.needs_token_counts)
F_DIVERGENCE_LOSS_TYPES = frozenset(n for n, s in LOSSES.items() if s.f_divergence)


def needs_reference(loss_types: str | Sequence[str]) -> bool:
    """Whether any of the loss types needs reference log-probs (False for simpo, orpo, sft alone)."""
    types = (loss_types,) if isinstance(loss_types, str) else tuple(loss_types)
    return any(t not in LOSSES or LOSSES[t].needs_reference for t in types)


def _check_inputs(logps: PreferenceLogps, config: LossConfig) -> None:
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
    """Detached per-pair rewards (B,) of chosen and rejected. For reference-free losses alone: SimPO's
    β_simpo/|y|·log πθ(y) if ``simpo`` is among them, else ORPO's λ/|y|·log πθ(y) if ``orpo`` is (as TRL's
    ORPOTrainer logs it); otherwise β·u(y) given reference log-probs (as TRL reports it), else the per-token
    mean log-prob 1/|y|·log πθ(y) (``sft`` alone)."""
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
    """Per-pair loss Σ_k w_k · loss_k over ``config.loss_types`` (each ``LOSSES[k].fn``), shape (B,), and
    the implicit rewards (``implicit_rewards``).

    Reference-based losses see u(y) = log πθ(y) − log πref(y), or its f-divergence score s(y) where the loss
    takes d = s(y_w) − s(y_l) (``loss_terms``). The batch mean equals the loss of TRL 1.16's ``DPOTrainer``
    on the same inputs (``sigmoid`` with ε > 0 is cDPO here, DPO in TRL; ``bco_pair`` uses δ = 0 as TRL).
    """
    _check_inputs(logps, config)
    terms = loss_terms(logps, config)
    losses = sum(
        w * LOSSES[n].fn(terms, config) for n, w in zip(config.loss_types, config.weights, strict=True)
    )
    return DPOLossOutput(losses, *implicit_rewards(terms, config))


def dpo_loss(
    logps: PreferenceLogps, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0
) -> DPOLossOutput:
    """Per-pair loss of one loss type with default settings otherwise: ``preference_loss`` with
    ``LossConfig(loss_type, beta=beta, label_smoothing=label_smoothing)``. With the log-ratio difference
    h = (log πθ(y_w) − log πref(y_w)) − (log πθ(y_l) − log πref(y_l)) and ε = label_smoothing, e.g.:

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
