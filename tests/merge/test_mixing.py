"""The closed form on known variances, the held-out fit, and degenerate inputs."""

from __future__ import annotations

import math
import random

import pytest

from potara.merge.mixing import (
    bound,
    closed_form_lambda,
    fit_three_points,
    module_lambdas,
    moment_fed_variance,
)


@pytest.mark.parametrize("v_fed,v_local", [(1.0, 3.0), (4.0, 1.0), (0.01, 10.0), (2.5, 2.5)])
def test_closed_form_minimises_the_bound_and_beats_both_ends(v_fed, v_local):
    lam = closed_form_lambda(v_fed, v_local)
    assert lam == pytest.approx(v_local / (v_fed + v_local))
    grid = [i / 1000 for i in range(1001)]
    assert bound(lam, v_fed, v_local) <= min(bound(x, v_fed, v_local) for x in grid) + 1e-12
    assert bound(lam, v_fed, v_local) == pytest.approx(0.5 * v_fed * v_local / (v_fed + v_local))
    assert bound(lam, v_fed, v_local) < 0.5 * min(v_fed, v_local)


def test_closed_form_matches_simulated_gaussian_errors():
    """Monte Carlo: with τ_F, τ_L = τ* + noise, the empirical best λ is the closed form."""
    rng = random.Random(0)
    v_fed, v_local, dim = 0.5, 2.0, 200
    losses = {lam / 20: 0.0 for lam in range(21)}
    for _ in range(200):
        e_f = [rng.gauss(0, math.sqrt(v_fed / dim)) for _ in range(dim)]
        e_l = [rng.gauss(0, math.sqrt(v_local / dim)) for _ in range(dim)]
        for lam in losses:
            losses[lam] += sum((lam * f + (1 - lam) * l) ** 2 for f, l in zip(e_f, e_l))
    best = min(losses, key=losses.get)
    assert best == pytest.approx(closed_form_lambda(v_fed, v_local), abs=0.06)


def test_three_point_fit_recovers_the_quadratic():
    f_star, v_fed, v_local = 0.7, 0.3, 1.2
    f = lambda lam: f_star + bound(lam, v_fed, v_local)  # noqa: E731
    fit = fit_three_points(f(0.0), f(0.5), f(1.0))
    assert fit.v_fed == pytest.approx(v_fed) and fit.v_local == pytest.approx(v_local)
    assert fit.lam == pytest.approx(closed_form_lambda(v_fed, v_local))


def test_fit_without_curvature_takes_the_better_endpoint():
    assert fit_three_points(1.0, 0.9, 0.8).lam == 1.0  # linear, decreasing toward the federated end
    assert fit_three_points(0.5, 0.7, 0.9).lam == 0.0
    assert fit_three_points(1.0, 1.0, 1.0).lam in (0.0, 1.0)


def test_fit_is_clipped_to_the_unit_interval():
    assert fit_three_points(2.0, 1.0, 0.5).lam == 1.0  # minimum beyond λ = 1
    assert fit_three_points(0.5, 1.0, 2.0).lam == 0.0


def test_degenerate_inputs_have_defined_answers():
    assert closed_form_lambda(0.0, 0.0) == 0.5
    assert closed_form_lambda(0.0, 1.0) == 1.0
    assert closed_form_lambda(1.0, 0.0) == 0.0
    assert moment_fed_variance(0.1, 5.0) > 0
    with pytest.raises(ValueError, match="finite"):
        closed_form_lambda(float("nan"), 1.0)
    with pytest.raises(ValueError, match="finite"):
        fit_three_points(float("inf"), 1.0, 1.0)


def test_module_lambdas_keep_the_pooled_scale():
    traces = {"a": 1.0, "b": 4.0, "c": 0.5}
    dist = {"a": 3.0, "b": 5.0, "c": 2.0}
    lams = module_lambdas(traces, dist, 0.4)
    assert set(lams) == set(traces)
    assert lams["b"] > lams["a"] > lams["c"]
    assert module_lambdas(traces, dist, 1.0) == {k: 1.0 for k in traces}
