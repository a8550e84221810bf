"""The loss zoo: every loss type against closed forms computed with ``math``, against TRL 1.16's own
DPOTrainer / CPOTrainer / ORPOTrainer code, and the invariants (ln 2, finite gradients, weighted lists)."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from hf_dpo.objective.losses import (
    F_DIVERGENCE_LOSS_TYPES,
    F_DIVERGENCE_TYPES,
    LOSS_TYPES,
    LOSSES,
    TRL_LOSS_TYPES,
    LossConfig,
    PreferenceLogps,
    dpo_loss,
    f_divergence_score,
    needs_reference,
    preference_loss,
)

# Three pairs; summed log-probs and completion token counts.
PC, PR, RC, RR = [-10.0, -3.0, -7.5], [-12.0, -2.0, -6.0], [-11.0, -2.5, -8.0], [-11.5, -2.5, -5.0]
NC, NR = [4, 2, 5], [6, 1, 3]
BETA, EPS = 0.5, 0.2


def _logps(dtype=torch.float64, requires_grad=False) -> PreferenceLogps:
    pc, pr = (torch.tensor(v, dtype=dtype, requires_grad=requires_grad) for v in (PC, PR))
    rc, rr = (torch.tensor(v, dtype=dtype) for v in (RC, RR))
    return PreferenceLogps(pc, pr, rc, rr, torch.tensor(NC), torch.tensor(NR))


def _ls(x: float) -> float:
    """log σ(x) with math only."""
    return -math.log1p(math.exp(-x))


def _sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _uw(i: int) -> float:
    return PC[i] - RC[i]


def _ul(i: int) -> float:
    return PR[i] - RR[i]


def _d(i: int) -> float:
    return _uw(i) - _ul(i)


def _dnorm(i: int) -> float:
    return _uw(i) / NC[i] - _ul(i) / NR[i]


def _cdpo(z: float) -> float:
    return -(1 - EPS) * _ls(z) - EPS * _ls(-z)


def _aot(paired: bool) -> list[float]:
    if paired:
        policy = sorted(PC[i] - PR[i] for i in range(3))
        ref = sorted(RC[i] - RR[i] for i in range(3))
    else:
        policy, ref = sorted(_uw(i) for i in range(3)), sorted(_ul(i) for i in range(3))
    return [_cdpo(BETA * (p - r)) for p, r in zip(policy, ref, strict=True)]


def _orpo(i: int, lam: float) -> float:
    ac, ar = PC[i] / NC[i], PR[i] / NR[i]
    log_odds = (ac - math.log(1 - math.exp(ac))) - (ar - math.log(1 - math.exp(ar)))
    return -ac - lam * _ls(log_odds)


def _discopop(i: int, tau: float = 0.05) -> float:
    z = BETA * _d(i)
    m = _sig(z / tau)
    return (1 - m) * -_ls(z) + m * math.exp(-z)


SFT = -sum(PC) / sum(NC)
PER_PAIR = {
    "sigmoid": lambda i: _cdpo(BETA * _d(i)),
    "robust": lambda i: (-(1 - EPS) * _ls(BETA * _d(i)) + EPS * _ls(-BETA * _d(i))) / (1 - 2 * EPS),
    "hinge": lambda i: max(0.0, 1 - BETA * _d(i)),
    "ipo": lambda i: (_dnorm(i) - 1 / (2 * BETA)) ** 2,
    "exo_pair": lambda i: (
        _sig(BETA * _d(i)) * (_ls(BETA * _d(i)) - math.log(1 - EPS))
        + _sig(-BETA * _d(i)) * (_ls(-BETA * _d(i)) - math.log(EPS))
    ),
    "nca_pair": lambda i: -_ls(BETA * _uw(i)) - 0.5 * _ls(-BETA * _uw(i)) - 0.5 * _ls(-BETA * _ul(i)),
    "bco_pair": lambda i: -_ls(BETA * _uw(i)) - _ls(-BETA * _ul(i)),
    "sppo_hard": lambda i: (_uw(i) - 1 / (2 * BETA)) ** 2 + (_ul(i) + 1 / (2 * BETA)) ** 2,
    "apo_zero": lambda i: 1 - _sig(BETA * _uw(i)) + _sig(BETA * _ul(i)),
    "apo_down": lambda i: _sig(BETA * _uw(i)) + 1 - _sig(BETA * _d(i)),
    "discopop": _discopop,
    "sft": lambda i: SFT,
    "sigmoid_norm": lambda i: -_ls(BETA * _dnorm(i)),
    "simpo": lambda i: -_ls(2.0 * (PC[i] / NC[i] - PR[i] / NR[i]) - 1.0),
    "orpo": lambda i: _orpo(i, 0.1),
}
EXPECTED = {name: [fn(i) for i in range(3)] for name, fn in PER_PAIR.items()}
EXPECTED["aot"], EXPECTED["aot_unpaired"] = _aot(True), _aot(False)


def test_every_loss_type_has_a_closed_form_here():
    assert set(EXPECTED) == set(LOSS_TYPES)
    assert set(LOSS_TYPES) == set(TRL_LOSS_TYPES) | {"simpo", "orpo"}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_matches_closed_form(loss_type):
    out = preference_loss(_logps(), LossConfig(loss_type, beta=BETA, label_smoothing=EPS))
    assert out.losses.shape == (3,)
    assert out.losses.tolist() == pytest.approx(EXPECTED[loss_type], rel=1e-12, abs=1e-12)
    if needs_reference(loss_type) or loss_type == "sft":  # β·u, as TRL reports it
        assert out.chosen_rewards.tolist() == pytest.approx([BETA * _uw(i) for i in range(3)])
        assert out.rejected_rewards.tolist() == pytest.approx([BETA * _ul(i) for i in range(3)])


def test_reference_free_rewards():
    simpo = preference_loss(_logps(), LossConfig("simpo", simpo_beta=2.5, simpo_gamma=0.3))
    assert simpo.chosen_rewards.tolist() == pytest.approx([2.5 * PC[i] / NC[i] for i in range(3)])
    assert simpo.rejected_rewards.tolist() == pytest.approx([2.5 * PR[i] / NR[i] for i in range(3)])
    margin = [2.5 * (PC[i] / NC[i] - PR[i] / NR[i]) - 0.3 for i in range(3)]
    assert simpo.losses.tolist() == pytest.approx([-_ls(m) for m in margin])
    orpo = preference_loss(_logps(), LossConfig("orpo", orpo_lambda=0.25))
    assert orpo.losses.tolist() == pytest.approx([_orpo(i, 0.25) for i in range(3)])
    assert orpo.chosen_rewards.tolist() == pytest.approx([0.25 * PC[i] / NC[i] for i in range(3)])
    no_reference = PreferenceLogps(
        torch.tensor(PC),
        torch.tensor(PR),
        chosen_num_tokens=torch.tensor(NC),
        rejected_num_tokens=torch.tensor(NR),
    )
    sft_only = preference_loss(no_reference, LossConfig("sft"))
    assert sft_only.chosen_rewards.tolist() == pytest.approx([PC[i] / NC[i] for i in range(3)])


def test_reference_free_losses_need_no_reference():
    logps = PreferenceLogps(
        torch.tensor(PC), torch.tensor(PR), None, None, torch.tensor(NC), torch.tensor(NR)
    )
    for loss_type in ("simpo", "orpo", "sft", ["simpo", "sft"]):
        assert not needs_reference(loss_type)
        preference_loss(logps, LossConfig(loss_type))
    for loss_type in ("sigmoid", ["simpo", "sigmoid"], "aot"):
        assert needs_reference(loss_type)
        with pytest.raises(ValueError, match="need reference log-probs"):
            preference_loss(logps, LossConfig(loss_type))


def test_ipo_without_token_counts_is_the_summed_form():
    out = dpo_loss(
        PreferenceLogps(*(torch.tensor(v, dtype=torch.float64) for v in (PC, PR, RC, RR))), BETA, "ipo"
    )
    assert out.losses.tolist() == pytest.approx([(_d(i) - 1 / (2 * BETA)) ** 2 for i in range(3)])


@pytest.mark.parametrize("f_div", F_DIVERGENCE_TYPES)
def test_f_divergence_scores(f_div):
    u = torch.tensor([-1.5, 0.0, 0.7], dtype=torch.float64)
    expected = {
        "reverse_kl": lambda x: x,
        "forward_kl": lambda x: 1 - math.exp(-x),
        "js_divergence": lambda x: math.log(2 * math.exp(x) / (1 + math.exp(x))),
        "alpha_divergence": lambda x: (math.exp(x) ** (0.3 - 1) - 1) / (0.3 - 1),
    }[f_div]
    assert f_divergence_score(u, f_div, 0.3).tolist() == pytest.approx([expected(x) for x in u.tolist()])
    assert f_divergence_score(u, "alpha_divergence", 1.0).tolist() == u.tolist()  # α → 1 limit is log t


def test_f_divergence_enters_the_score_difference():
    cfg = LossConfig("sigmoid", beta=BETA, f_divergence_type="forward_kl")
    out = preference_loss(_logps(), cfg)
    d = [(1 - math.exp(-_uw(i))) - (1 - math.exp(-_ul(i))) for i in range(3)]
    assert out.losses.tolist() == pytest.approx([-_ls(BETA * x) for x in d])
    assert out.chosen_rewards.tolist() == pytest.approx([BETA * _uw(i) for i in range(3)])  # rewards stay β·u


def test_f_divergence_restricted_to_score_difference_losses():
    for loss_type in sorted(set(LOSS_TYPES) - F_DIVERGENCE_LOSS_TYPES):
        with pytest.raises(ValueError, match="not defined for loss types"):
            LossConfig(loss_type, f_divergence_type="js_divergence", label_smoothing=EPS)
    with pytest.raises(ValueError, match="unknown f_divergence_type"):
        LossConfig("sigmoid", f_divergence_type="kl")


def test_list_with_weights_is_the_weighted_sum():
    types, weights = ["sigmoid", "bco_pair", "sft", "apo_zero"], [0.8, 0.2, 1.0, 0.5]
    combined = preference_loss(_logps(), LossConfig(types, loss_weights=weights, beta=BETA))
    singles = [preference_loss(_logps(), LossConfig(t, beta=BETA)).losses for t in types]
    assert torch.allclose(combined.losses, sum(w * s for w, s in zip(weights, singles, strict=True)))
    unweighted = preference_loss(_logps(), LossConfig(types, beta=BETA)).losses
    assert torch.allclose(unweighted, sum(singles))
    with pytest.raises(ValueError, match="3 weights for 4 loss types"):
        LossConfig(types, loss_weights=[1.0, 1.0, 1.0])


@pytest.mark.parametrize("loss_type", ["sigmoid", "sigmoid_norm", "ipo", "apo_zero", "discopop", "robust"])
def test_policy_equal_reference(loss_type):
    """h = 0: sigmoid-type losses are ln 2, apo_zero is 1, discopop is ½·ln 2 + ½, ipo is 1/(4β²)."""
    x, y = torch.tensor([-5.0, -17.25, -0.5]), torch.tensor([-7.0, -1.0, -30.0])
    n = torch.tensor([3, 9, 1])
    out = preference_loss(PreferenceLogps(x, y, x.clone(), y.clone(), n, n), LossConfig(loss_type, beta=0.1))
    expected = {"apo_zero": 1.0, "discopop": 0.5 * math.log(2) + 0.5, "ipo": 1 / (4 * 0.1**2)}
    assert out.losses.tolist() == pytest.approx([expected.get(loss_type, math.log(2))] * 3, rel=1e-6)
    assert torch.equal(out.chosen_rewards, torch.zeros(3))


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_and_flow(loss_type, dtype):
    logps = _logps(dtype, requires_grad=True)
    out = preference_loss(logps, LossConfig(loss_type, beta=BETA, label_smoothing=EPS))
    out.losses.sum().backward()
    grads = [logps.policy_chosen.grad, logps.policy_rejected.grad]
    if loss_type == "sft":  # the NLL of the chosen completion only
        assert grads[1] is None
        grads = grads[:1]
    grads = torch.cat(grads)
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0
    assert not out.chosen_rewards.requires_grad and not out.rejected_rewards.requires_grad


def test_orpo_finite_when_a_completion_has_probability_one():
    logps = PreferenceLogps(
        torch.tensor([0.0, -1e-9], requires_grad=True),
        torch.tensor([-3.0, -2.0], requires_grad=True),
        chosen_num_tokens=torch.tensor([2, 1]),
        rejected_num_tokens=torch.tensor([2, 2]),
    )
    out = preference_loss(logps, LossConfig("orpo"))
    out.losses.sum().backward()
    assert torch.isfinite(out.losses).all() and torch.isfinite(logps.policy_chosen.grad).all()


def test_registry_covers_every_loss_type_and_declares_needs():
    assert set(LOSSES) == set(LOSS_TYPES)
    for name, spec in LOSSES.items():
        assert spec.needs_reference == needs_reference(name)
        if spec.needs_token_counts:  # a loss that declares token counts refuses to run without them
            logps = _logps()
            bare = PreferenceLogps(
                logps.policy_chosen, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected
            )
            with pytest.raises(ValueError, match="token counts"):
                preference_loss(bare, LossConfig(name, beta=BETA))


def test_bco_pair_uses_zero_shift_as_trl():
    cfg = LossConfig("bco_pair", beta=BETA)
    assert preference_loss(_logps(), cfg).losses.tolist() == pytest.approx(EXPECTED["bco_pair"])


def test_bad_inputs_name_the_field_and_fix():
    with pytest.raises(ValueError, match="unknown loss_type 'nope'"):
        LossConfig(["sigmoid", "nope"])
    with pytest.raises(ValueError, match="exo_pair.*1e-3"):
        LossConfig("exo_pair")
    with pytest.raises(ValueError, match=r"\[0, 0.5\) for 'robust'"):
        LossConfig("robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match="beta must be > 0"):
        LossConfig(beta=0.0)
    no_counts = PreferenceLogps(*(torch.tensor(v) for v in (PC, PR, RC, RR)))
    with pytest.raises(ValueError, match=r"\['sigmoid_norm', 'simpo'\] need completion token counts"):
        preference_loss(no_counts, LossConfig(["sigmoid_norm", "simpo"]))
    wrong = PreferenceLogps(torch.tensor(PC), torch.tensor(PR), torch.tensor(RC), torch.tensor(RR[:2]))
    with pytest.raises(ValueError, match=r"ref_rejected has shape \(2,\)"):
        preference_loss(wrong, LossConfig())


def test_from_args_reads_matching_fields():
    args = SimpleNamespace(beta=0.3, loss_type=["sigmoid", "sft"], loss_weights=[1.0, 0.1], output_dir="x")
    cfg = LossConfig.from_args(args)
    assert (cfg.beta, cfg.loss_types, cfg.weights, cfg.label_smoothing) == (
        0.3,
        ("sigmoid", "sft"),
        (1.0, 0.1),
        0.0,
    )


# ---- against TRL 1.16 -------------------------------------------------------------------------------------


def _trl_dpo_loss(logps: PreferenceLogps, *, loss_types, loss_weights=None, f_div="reverse_kl", alpha=0.5):
    """TRL 1.16's DPOTrainer._compute_loss, called unbound on a stand-in trainer and a stand-in model whose
    per-token log-probs sum to ``logps`` (completion after a 2-token prompt, zeros elsewhere)."""
    trl_dpo = pytest.importorskip("trl.trainer.dpo_trainer")
    b = logps.policy_chosen.shape[0]
    counts = torch.cat([logps.chosen_num_tokens, logps.rejected_num_tokens])
    seq = 2 + int(counts.max())
    completion_mask = torch.zeros(2 * b, seq, dtype=torch.long)
    for row, n in enumerate(counts.tolist()):
        completion_mask[row, 2 : 2 + n] = 1
    per_token = torch.zeros(2 * b, seq - 1, dtype=logps.policy_chosen.dtype)
    totals = torch.cat([logps.policy_chosen, logps.policy_rejected])
    for row, n in enumerate(counts.tolist()):  # spread each total unevenly over its tokens
        shares = torch.arange(1, n + 1, dtype=per_token.dtype)
        per_token[row, 1 : 1 + n] = totals[row] * shares / shares.sum()

    def model(**kwargs):
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    model.training = False
    gather = lambda t: t  # noqa: E731
    trainer = SimpleNamespace(
        model=model,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=gather, gather=gather),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type=f_div,
        f_alpha_divergence_coef=alpha,
        loss_types=list(loss_types),
        loss_weights=list(loss_weights or [1.0] * len(loss_types)),
        beta=BETA,
        label_smoothing=EPS,
        args=SimpleNamespace(discopop_tau=0.05),
        use_weighting=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    inputs = {
        "input_ids": torch.zeros(2 * b, seq, dtype=torch.long),
        "attention_mask": torch.ones(2 * b, seq, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": logps.ref_chosen,
        "ref_rejected_logps": logps.ref_rejected,
    }
    loss = trl_dpo.DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    metrics = trainer._metrics["eval"]
    return float(loss), metrics["rewards/chosen"][0], metrics["rewards/rejected"][0]


def _random_logps(seed: int, b: int = 5) -> PreferenceLogps:
    g = torch.Generator().manual_seed(seed)
    nc, nr = torch.randint(1, 9, (b,), generator=g), torch.randint(1, 9, (b,), generator=g)
    pc, pr = -nc * torch.rand(b, generator=g) * 2, -nr * torch.rand(b, generator=g) * 2
    rc, rr = pc + torch.randn(b, generator=g), pr + torch.randn(b, generator=g)
    return PreferenceLogps(pc, pr, rc, rr, nc, nr)


def _assert_matches_trl(logps, cfg_kwargs, trl_kwargs):
    ours = preference_loss(logps, LossConfig(beta=BETA, label_smoothing=EPS, **cfg_kwargs))
    loss, chosen_reward, rejected_reward = _trl_dpo_loss(logps, **trl_kwargs)
    assert float(ours.losses.mean()) == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert float(ours.chosen_rewards.mean()) == pytest.approx(chosen_reward, rel=1e-5, abs=1e-6)
    assert float(ours.rejected_rewards.mean()) == pytest.approx(rejected_reward, rel=1e-5, abs=1e-6)


# TRL 1.16's sigmoid ignores label_smoothing (ours is cDPO with ε > 0): compared with ε = 0 below.
TRL_COMPARABLE = [t for t in TRL_LOSS_TYPES if t != "sigmoid"]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("loss_type", TRL_COMPARABLE)
def test_matches_trl_dpo_trainer(loss_type, seed):
    logps = _random_logps(seed)
    _assert_matches_trl(logps, {"loss_type": loss_type}, {"loss_types": [loss_type]})


def test_sigmoid_matches_trl_at_zero_label_smoothing():
    logps = _random_logps(3)
    ours = preference_loss(logps, LossConfig("sigmoid", beta=BETA))
    # TRL reads label_smoothing only in robust/exo_pair/aot, so its sigmoid is plain DPO.
    loss, *_ = _trl_dpo_loss(logps, loss_types=["sigmoid"])
    assert float(ours.losses.mean()) == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize("f_div", ["forward_kl", "js_divergence", "alpha_divergence"])
@pytest.mark.parametrize("loss_type", sorted(F_DIVERGENCE_LOSS_TYPES - {"sigmoid"}))
def test_f_divergences_match_trl(loss_type, f_div):
    logps = _random_logps(7)
    _assert_matches_trl(
        logps,
        {"loss_type": loss_type, "f_divergence_type": f_div, "f_alpha_divergence_coef": 0.3},
        {"loss_types": [loss_type], "f_div": f_div, "alpha": 0.3},
    )


def test_weighted_list_matches_trl():
    types, weights = ["robust", "sft", "apo_down", "aot"], [0.8, 0.2, 1.0, 0.5]
    logps = _random_logps(11)
    _assert_matches_trl(
        logps, {"loss_type": types, "loss_weights": weights}, {"loss_types": types, "loss_weights": weights}
    )


def test_simpo_matches_trl_cpo_trainer():
    cpo = pytest.importorskip("trl.experimental.cpo.cpo_trainer")
    logps = _random_logps(5)
    avg_c = logps.policy_chosen / logps.chosen_num_tokens
    avg_r = logps.policy_rejected / logps.rejected_num_tokens
    stand_in = SimpleNamespace(
        alpha=0.0, beta=2.0, simpo_gamma=1.0, label_smoothing=0.0, loss_type="simpo",
        accelerator=SimpleNamespace(device=torch.device("cpu")),
    )  # fmt: skip
    losses, chosen_rewards, rejected_rewards = cpo.CPOTrainer.cpo_loss(stand_in, avg_c, avg_r)
    ours = preference_loss(logps, LossConfig("simpo"))
    assert torch.allclose(ours.losses, losses, atol=1e-6)
    assert torch.allclose(ours.chosen_rewards, chosen_rewards) and torch.allclose(
        ours.rejected_rewards, rejected_rewards
    )


def test_orpo_matches_trl_orpo_trainer():
    orpo = pytest.importorskip("trl.experimental.orpo.orpo_trainer")
    logps = _random_logps(9)
    avg_c = logps.policy_chosen / logps.chosen_num_tokens
    avg_r = logps.policy_rejected / logps.rejected_num_tokens
    stand_in = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device=torch.device("cpu")))
    or_terms, chosen_rewards, rejected_rewards, *_ = orpo.ORPOTrainer.odds_ratio_loss(stand_in, avg_c, avg_r)
    ours = preference_loss(logps, LossConfig("orpo", orpo_lambda=0.1))
    # TRL's ORPO loss is NLL − mean(λ·log σ(log odds)); per pair, −avg log-prob − λ·log σ(.).
    assert torch.allclose(ours.losses, -avg_c - or_terms, atol=1e-6)
    assert torch.allclose(ours.chosen_rewards, chosen_rewards) and torch.allclose(
        ours.rejected_rewards, rejected_rewards
    )
