"""benchmarks/flops.py: the closed-form FLOPs equal FlopCounterMode's count of the real code, and the mask
geometry (allowed pairs, flex tiles) matches hand-computed values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import flops  # noqa: E402
from synthetic import FIRST_ID, make_pairs, model_config  # noqa: E402


@pytest.fixture(scope="module")
def fake() -> flops.FakeModel:
    return flops.FakeModel(model_config("micro"))


@pytest.mark.parametrize("variant", flops.VARIANTS, ids=lambda v: v.name)
def test_counted_equals_analytic(fake: flops.FakeModel, variant: flops.Variant) -> None:
    if variant.is_trl:
        pytest.importorskip("trl")
    pairs = make_pairs("loguniform", 3, 0.08, fake.config.vocab_size, seed=1)
    g = flops.variant_geometry(fake.config, fake.model, variant, pairs)
    analytic = flops.step_flops(fake.config, g, "dense", variant.gradient_checkpointing)["total"]
    assert flops.count_variant(fake, variant, pairs) == analytic


def _pair(p: int, c: int, r: int) -> dict[str, list[int]]:
    return {"prompt_ids": [FIRST_ID] * p, "chosen_ids": [FIRST_ID] * c, "rejected_ids": [FIRST_ID] * r}


def test_prefix_shared_geometry_closed_form(fake: flops.FakeModel) -> None:
    p, c, r = 100, 90, 80  # one row of 270 tokens: 3 tiles of 128
    batch = flops.collate([_pair(p, c, r)], "prefix_shared", "all")
    g = flops.hf_dpo_geometry(fake.config, fake.model, batch)
    tri = lambda n: n * (n + 1) // 2  # noqa: E731
    assert g.allowed_pairs == tri(p + c) + r * p + tri(r)
    assert (g.positions, g.real_tokens, g.dense_pairs) == (270, 270, 270 * 270)
    # lower-triangular tiles (0,0) (1,0) (1,1) (2,0) (2,1) (2,2): rejected (190..269) sees the prompt (tile 0)
    # and itself, chosen (100..189) sits in tiles 0-1; every lower tile has an allowed pair
    assert g.block_pairs == 6 * flops.BLOCK**2
    assert (g.scored, g.completion_tokens, g.last_logits) == (c + r, c + r, 1)


def test_packed_block_diagonal_tiles(fake: flops.FakeModel) -> None:
    # two pairs -> four sequences of exactly 128 tokens in one row: only the 4 diagonal tiles are computed
    pairs = [_pair(64, 64, 64), _pair(64, 64, 64)]
    g = flops.hf_dpo_geometry(fake.config, fake.model, flops.collate(pairs, "packed", "all"))
    assert g.width == 512 and g.block_pairs == 4 * flops.BLOCK**2
    assert g.allowed_pairs == 4 * 128 * 129 // 2
    useful = flops.step_flops(fake.config, g, "useful")
    dense = flops.step_flops(fake.config, g, "dense")
    # dense: policy forward + backward (1 + 2.5) and reference forward (1) over 512² pairs; useful: 4x forward
    assert dense["attention"] / useful["attention"] == pytest.approx(
        (2 + flops.ATTN_BACKWARD) * 512 * 512 / (4 * g.allowed_pairs)
    )


def test_padded_padding_is_not_useful(fake: flops.FakeModel) -> None:
    pairs = [_pair(10, 5, 20), _pair(3, 2, 2)]
    g = flops.hf_dpo_geometry(fake.config, fake.model, flops.collate(pairs, "padded"))
    lengths = [15, 5, 30, 5]
    assert (g.rows, g.width, g.real_tokens) == (4, 30, sum(lengths))
    assert g.allowed_pairs == sum(n * (n + 1) // 2 for n in lengths)


def test_cpu_sdpa_formula_counts_real_cpu_attention() -> None:
    b, h, s, d = 2, 4, 16, 8
    q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
    mask = torch.ones(s, s, dtype=torch.bool).tril()
    with flops.flop_counter() as counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    assert counter.get_total_flops() == 4 * b * h * s * s * d * (1 + flops.ATTN_BACKWARD)
