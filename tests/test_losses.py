"""Every loss type against values computed by hand with math (not torch), and the ln 2 invariant."""

import math

import pytest
import torch

from hf_dpo.objective.losses import PreferenceLogps, dpo_loss, pair_accuracy, sft_loss

PC, PR, RC, RR = [-10.0, -3.0], [-12.0, -2.0], [-11.0, -2.5], [-11.5, -2.5]
BETA, EPS = 0.5, 0.2


def _logps():
    return PreferenceLogps(*(torch.tensor(v, dtype=torch.float64) for v in (PC, PR, RC, RR)))


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _h(i: int) -> float:
    return (PC[i] - RC[i]) - (PR[i] - RR[i])  # pair 0: 1.5, pair 1: -1.0


EXPECTED = {
    "sigmoid": lambda h: -(1 - EPS) * _log_sigmoid(BETA * h) - EPS * _log_sigmoid(-BETA * h),
    "robust": lambda h: (-(1 - EPS) * _log_sigmoid(BETA * h) + EPS * _log_sigmoid(-BETA * h)) / (1 - 2 * EPS),
    "hinge": lambda h: max(0.0, 1 - BETA * h),
    "ipo": lambda h: (h - 1 / (2 * BETA)) ** 2,
}


@pytest.mark.parametrize("loss_type", sorted(EXPECTED))
def test_loss_matches_hand_computation(loss_type):
    out = dpo_loss(_logps(), BETA, loss_type, label_smoothing=EPS)
    expected = [EXPECTED[loss_type](_h(i)) for i in range(2)]
    assert out.losses.tolist() == pytest.approx(expected, abs=1e-12)
    assert out.chosen_rewards.tolist() == pytest.approx([BETA * (PC[i] - RC[i]) for i in range(2)])
    assert out.rejected_rewards.tolist() == pytest.approx([BETA * (PR[i] - RR[i]) for i in range(2)])


def test_known_values():
    # h = 1.5, β = 0.5: sigmoid loss = log(1 + e^-0.75) = 0.3856...; hinge = 0.25; ipo = (1.5 - 1)^2 = 0.25
    logps = _logps()
    assert dpo_loss(logps, BETA, "sigmoid").losses[0].item() == pytest.approx(math.log1p(math.exp(-0.75)))
    assert dpo_loss(logps, BETA, "hinge").losses[0].item() == pytest.approx(0.25)
    assert dpo_loss(logps, BETA, "ipo").losses[0].item() == pytest.approx(0.25)


def test_policy_equal_reference_gives_ln2_and_zero_rewards():
    x = torch.tensor([-5.0, -17.25, -0.5])
    y = torch.tensor([-7.0, -1.0, -30.0])
    out = dpo_loss(PreferenceLogps(x, y, x.clone(), y.clone()), beta=0.1)
    assert torch.equal(out.losses, torch.full((3,), math.log(2.0)))
    assert torch.equal(out.chosen_rewards, torch.zeros(3)) and torch.equal(
        out.rejected_rewards, torch.zeros(3)
    )


def test_rewards_carry_no_gradient_but_loss_does():
    pc = torch.tensor([-1.0], requires_grad=True)
    out = dpo_loss(PreferenceLogps(pc, torch.tensor([-2.0]), torch.tensor([-1.0]), torch.tensor([-2.0])), 0.1)
    assert not out.chosen_rewards.requires_grad
    out.losses.sum().backward()
    assert pc.grad.item() == pytest.approx(-0.1 * 0.5)  # d/dh −log σ(βh) = −β σ(−βh) = −β/2 at h = 0


def test_unknown_loss_type():
    with pytest.raises(ValueError, match="unknown loss_type"):
        dpo_loss(_logps(), 0.1, "nope")


def test_accuracy_counts_ties_as_half_and_sft_loss():
    acc = pair_accuracy(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.0, 3.0]))
    assert acc.tolist() == [1.0, 0.5, 0.0]
    assert sft_loss(torch.tensor([-6.0, -3.0]), torch.tensor([3.0, 1.0])).tolist() == [2.0, 3.0]
