"""The paper's estimator as read: its λ formula, traces and cross term, its Fisher in factor space, and a run."""

from __future__ import annotations

import pytest
import torch

from potara.mixing import clipped_cross, closed_form_lambda, joint_lambda
from potara.paper_weight import POOLED, cosine, grouped_weights, inverse_traces, joint_weight


def test_without_a_cross_term_the_weight_is_the_closed_form():
    for a, b in [(1.0, 3.0), (4.0, 1.0), (2.0, 2.0)]:
        assert joint_lambda(a, b, 0.0) == (pytest.approx(b / (a + b)), "")
        assert joint_lambda(a, b)[0] == pytest.approx(closed_form_lambda(a, b))


def test_hand_computed_cross_terms():
    assert joint_lambda(1.0, 3.0, 0.5)[0] == pytest.approx((3.0 - 0.5) / (1.0 + 3.0 - 1.0))  # 2.5 / 3
    # c = min(a, b): all the weight on the smaller variance (perfectly correlated errors)
    assert joint_lambda(1.0, 3.0, 1.0)[0] == 1.0
    assert joint_lambda(3.0, 1.0, 1.0)[0] == 0.0
    lam, note = joint_lambda(2.0, 2.0, 2.0)  # a + b − 2c = 0
    assert lam == 0.5 and "0.5" in note


def test_the_cross_term_is_clipped_and_bounded_by_both_marginals():
    assert clipped_cross(-0.4, 1.0, 3.0) == 0.0
    assert clipped_cross(0.5, 1.0, 3.0) == 0.5
    assert clipped_cross(1.7, 1.0, 3.0) == 1.0
    assert cosine(1.0, 0.0, 4.0) == 0.0 and cosine(2.0, 1.0, 4.0) == pytest.approx(1.0)


def test_swapping_the_assignment_swaps_the_traces():
    plain, swapped = joint_weight(1.0, 3.0, 0.2), joint_weight(1.0, 3.0, 0.2, fed_is_a=False)
    assert plain.lam == pytest.approx((3.0 - 0.2) / (4.0 - 0.4))
    assert swapped.lam == pytest.approx((1.0 - 0.2) / (4.0 - 0.4))
    assert (swapped.v_fed, swapped.v_local) == (plain.v_local, plain.v_fed)
    assert joint_weight(1.0, 3.0, 0.9, cross=False).lam == pytest.approx(0.75)


def test_traces_on_a_known_diagonal():
    fisher = {"w": torch.tensor([1.0, 3.0]), "kfac": (torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0]))}
    traces = inverse_traces(fisher, 1.0)
    assert traces["w"] == pytest.approx(1 / 2 + 1 / 4)
    assert traces["kfac"] == pytest.approx(1 / 1.5 + 1 / 2 + 1 / 2 + 1 / 3)  # g ⊗ x = [[.5, 1], [1, 2]]
    with pytest.raises(ValueError):
        inverse_traces(fisher, 0.0)


def test_grouped_weights_pool_or_split_by_module():
    f_fed = {"m1.lora_A.weight": torch.full((2,), 1.0), "m2.lora_A.weight": torch.full((2,), 4.0)}
    f_loc = {"m1.lora_A.weight": torch.full((2,), 4.0), "m2.lora_A.weight": torch.full((2,), 1.0)}
    g = {k: torch.zeros(2) for k in f_fed}
    pooled = grouped_weights(f_fed, f_loc, g, g, 1e-12, lambda _: POOLED)
    assert list(pooled) == [POOLED] and pooled[POOLED].lam == pytest.approx(0.5)  # traces 2.5 and 2.5
    per = grouped_weights(f_fed, f_loc, g, g, 1e-12, lambda k: k.split(".")[0])
    assert per["m1"].lam == pytest.approx(0.5 / 2.5) and per["m2"].lam == pytest.approx(2.0 / 2.5)


def test_inverse_fisher_weight_is_the_minimum_variance_merge_of_two_gaussians():
    """Known answer: F = 1/σ² per coordinate makes the traces Σσ², and λ = b/(a+b) the minimum-variance weight."""
    gen = torch.Generator().manual_seed(0)
    sd_fed, sd_loc = torch.rand(50, generator=gen) + 0.2, torch.rand(50, generator=gen) * 2 + 0.2
    est = joint_weight(*inverse_traces({"f": sd_fed**-2, "l": sd_loc**-2}, 1e-12).values(), 0.0)
    a, b = float(sd_fed.pow(2).sum()), float(sd_loc.pow(2).sum())
    assert est.lam == pytest.approx(b / (a + b), rel=1e-6)
    e_fed = torch.randn(20_000, 50, generator=gen) * sd_fed
    e_loc = torch.randn(20_000, 50, generator=gen) * sd_loc
    grid = torch.linspace(0, 1, 101)
    variance = torch.stack([(lam * e_fed + (1 - lam) * e_loc).pow(2).sum(1).mean() for lam in grid])
    assert float(grid[variance.argmin()]) == pytest.approx(est.lam, abs=0.02)


def test_the_cross_term_weight_is_the_minimum_variance_merge_of_correlated_gaussians():
    gen = torch.Generator().manual_seed(1)
    shared = torch.randn(20_000, 40, generator=gen)
    e_fed = shared + 0.5 * torch.randn(20_000, 40, generator=gen)
    e_loc = shared + 1.5 * torch.randn(20_000, 40, generator=gen)
    a, b, c = (float((x * y).sum(1).mean()) for x, y in ((e_fed, e_fed), (e_loc, e_loc), (e_fed, e_loc)))
    lam, _ = joint_lambda(a, b, c)
    grid = torch.linspace(0, 1, 101)
    variance = torch.stack([(x * e_fed + (1 - x) * e_loc).pow(2).sum(1).mean() for x in grid])
    assert float(grid[variance.argmin()]) == pytest.approx(lam, abs=0.015)
    assert abs(lam - b / (a + b)) > 0.05  # the cross term matters here
