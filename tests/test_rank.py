"""Rank rules on matrices with a known spectrum: every expected rank is computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from pearl_cl.errors import ConfigError
from pearl_cl.core.rank import (
    RankRule,
    allocate_ranks,
    clip_rank,
    distance_ranks,
    energy_rank,
    factorise,
    fixed_rank_parameters,
    matched_fixed_rank,
    proximity,
    residual_rank,
    singular_values,
)


def with_spectrum(sigma: list[float], rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """A (rows, cols) float64 matrix whose singular values are exactly ``sigma`` (padded with 0)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, rows, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(cols, cols, generator=g, dtype=torch.float64))
    s = torch.zeros(rows, cols, dtype=torch.float64)
    for i, value in enumerate(sigma):
        s[i, i] = value
    return u @ s @ v.T


# sigma = (4, 3, 2, 1): energies 16, 9, 4, 1 (total 30); rank-r residuals sqrt(30), sqrt(14), sqrt(5), 1, 0.
SIGMA = [4.0, 3.0, 2.0, 1.0]


def test_singular_values_recovered():
    delta = with_spectrum(SIGMA, 6, 5)
    assert torch.allclose(singular_values(delta)[:4], torch.tensor(SIGMA, dtype=torch.float64))


@pytest.mark.parametrize("epsilon, expected", [(0.6, 0), (0.5, 1), (0.25, 2), (0.1, 3), (0.05, 4), (0.0, 4)])
def test_residual_rank_by_hand(epsilon, expected):
    # ||W_ref||_F = 10, so the tolerance is 10·epsilon: 6 > sqrt(30)=5.48 -> 0; 5 in [3.74, 5.48) -> 1;
    # 2.5 in [2.24, 3.74) -> 2; 1 = the rank-3 residual -> 3; 0.5 < 1 -> 4.
    sigma = singular_values(with_spectrum(SIGMA, 6, 5))
    assert residual_rank(sigma, reference_norm=10.0, epsilon=epsilon) == expected


@pytest.mark.parametrize("tau, expected", [(0.5, 1), (16 / 30, 1), (0.8, 2), (0.9, 3), (0.99, 4), (1.0, 4)])
def test_energy_rank_by_hand(tau, expected):
    sigma = singular_values(with_spectrum(SIGMA, 5, 7))
    assert energy_rank(sigma, tau) == expected


def test_energy_rank_of_zero_matrix_is_zero():
    assert energy_rank(torch.zeros(3, dtype=torch.float64), 0.9) == 0


def test_distance_ranks_scale_with_proximity():
    assert distance_ranks({"a": 0.2, "b": 0.1, "c": 0.05, "d": 0.0}, r_max=8) == {"a": 8, "b": 4, "c": 2, "d": 0}
    assert distance_ranks({"a": 0.3, "b": 0.1}, r_max=4) == {"a": 4, "b": math.ceil(4 / 3)}
    assert distance_ranks({"a": 0.0}, r_max=8) == {"a": 0}


def test_clip_rank_bounds():
    rule = RankRule(r_min=2, r_max=6)
    assert clip_rank(0, rule, (10, 10)) == 2
    assert clip_rank(9, rule, (10, 10)) == 6
    assert clip_rank(9, rule, (3, 10)) == 3  # the matrix's own rank bounds it
    assert clip_rank(0, RankRule(r_min=5, r_max=8), (3, 4)) == 3  # r_min never exceeds min(out, in)


def test_proximity_is_relative_frobenius_norm():
    ref = torch.full((2, 2), 5.0)  # ||.||_F = 10
    delta = torch.tensor([[3.0, 0.0], [0.0, 4.0]])  # ||.||_F = 5
    assert proximity(delta, ref) == pytest.approx(0.5)


def _layers():
    """A linear layer with spectrum SIGMA and a conv layer (4, 2, 3, 3) with spectrum (2, 1)."""
    lin = with_spectrum(SIGMA, 6, 5).float()
    conv = with_spectrum([2.0, 1.0], 4, 18, seed=1).float().reshape(4, 2, 3, 3)
    refs = {"lin": torch.eye(6, 5) * (10.0 / math.sqrt(5)), "conv": torch.ones(4, 2, 3, 3) * (10.0 / math.sqrt(72))}
    return {"lin": lin, "conv": conv}, refs


def test_allocate_residual_reshapes_convolutions():
    deltas, refs = _layers()  # both references have ||W_ref||_F = 10
    ranks = allocate_ranks(deltas, refs, RankRule("residual", r_min=0, r_max=16, epsilon=0.15))
    # tolerance 1.5: lin residuals 5.48, 3.74, 2.24, 1 -> 3; conv residuals sqrt(5)=2.24, 1 -> 1.
    assert {n: r.rank for n, r in ranks.items()} == {"lin": 3, "conv": 1}
    assert ranks["conv"].shape == (4, 18)
    assert ranks["lin"].proximity == pytest.approx(math.sqrt(30) / 10, rel=1e-5)


def test_allocate_with_shared_spectra_matches_computing_them():
    """The spectra of one shared SVD (factorise, as PEARL passes them) give the same decisions."""
    deltas, refs = _layers()
    spectra = {n: factorise(d).S for n, d in deltas.items()}
    for rule in (RankRule("residual", epsilon=0.15), RankRule("energy", tau=0.8)):
        assert allocate_ranks(deltas, refs, rule, spectra) == allocate_ranks(deltas, refs, rule)
    halved = {n: s / 2 for n, s in spectra.items()}  # and the spectra given are the ones used
    assert allocate_ranks(deltas, refs, RankRule("energy", tau=0.8), halved) == allocate_ranks(deltas, refs, RankRule("energy", tau=0.8))
    assert allocate_ranks(deltas, refs, RankRule("residual", epsilon=0.15), halved)["lin"].rank < 3


def test_allocate_rank_zero_when_r_min_zero_and_layer_did_not_move():
    deltas, refs = _layers()
    deltas["conv"] = torch.zeros_like(deltas["conv"])
    zero = allocate_ranks(deltas, refs, RankRule("residual", r_min=0, r_max=16, epsilon=0.15))
    assert zero["conv"].rank == 0 and zero["conv"].proximity == 0.0
    one = allocate_ranks(deltas, refs, RankRule("residual", r_min=1, r_max=16, epsilon=0.15))
    assert one["conv"].rank == 1


def test_allocate_energy_distance_fixed():
    deltas, refs = _layers()
    energy = allocate_ranks(deltas, refs, RankRule("energy", tau=0.8))
    assert {n: r.rank for n, r in energy.items()} == {"lin": 2, "conv": 1}  # conv: 4/5 = 0.8 -> 1
    distance = allocate_ranks(deltas, refs, RankRule("distance", r_max=6))
    # proximities sqrt(30)/10 = 0.548 and sqrt(5)/10 = 0.224 -> 6 and ceil(6·0.408) = 3; lin is clipped to its 5 columns
    assert {n: r.rank for n, r in distance.items()} == {"lin": 5, "conv": 3}
    fixed = allocate_ranks(deltas, refs, RankRule("fixed", r_max=16, fixed_rank=5))
    assert {n: r.rank for n, r in fixed.items()} == {"lin": 5, "conv": 4}  # conv matrix is 4 x 18


def test_allocate_rejects_mismatched_layers():
    deltas, refs = _layers()
    with pytest.raises(ValueError, match="different layers"):
        allocate_ranks({"lin": deltas["lin"]}, refs, RankRule())
    with pytest.raises(ValueError, match="shape"):
        allocate_ranks({"lin": deltas["lin"], "conv": deltas["conv"][:2]}, refs, RankRule())


@pytest.mark.parametrize("kwargs", [dict(name="svd"), dict(r_min=-1), dict(r_min=5, r_max=2), dict(tau=0.0),
                                    dict(epsilon=-0.1), dict(fixed_rank=0)])
def test_rank_rule_rejects_bad_knobs(kwargs):
    with pytest.raises(ConfigError):
        RankRule(**kwargs)


def test_fixed_rank_parameters_counts_each_layer_up_to_its_own_rank():
    shapes = [(400, 784), (400, 400), (3, 9)]
    assert fixed_rank_parameters(shapes, 2) == 2 * 1184 + 2 * 800 + 2 * 12
    assert fixed_rank_parameters(shapes, 5) == 5 * 1184 + 5 * 800 + 3 * 12  # the 3x9 layer stops at rank 3


def test_matched_fixed_rank_is_the_closest_budget_and_prefers_the_smaller_rank():
    shapes = [(400, 784), (400, 400)]
    per_rank = 1184 + 800
    assert matched_fixed_rank(shapes, 3 * per_rank) == 3
    assert matched_fixed_rank(shapes, 3.4 * per_rank) == 3
    assert matched_fixed_rank(shapes, 3.6 * per_rank) == 4
    assert matched_fixed_rank(shapes, 3.5 * per_rank) == 3  # a tie goes to the smaller rank
    assert matched_fixed_rank(shapes, 0) == 1  # LoRA has rank >= 1
    assert matched_fixed_rank(shapes, 1e12) == 400  # bounded by the layers' shapes
    with pytest.raises(ValueError):
        matched_fixed_rank([], 10)
