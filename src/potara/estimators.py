"""Estimators of the federated weight λ for one client (SPEC, "Estimating v_L and v_F").

Each takes a :class:`ClientSession` and returns an :class:`Estimate`; none sends anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .client import ClientSession
from .fisher import laplace_traces
from .mixing import (
    QuadraticFit,
    closed_form_lambda,
    fit_three_points,
    moment_fed_variance,
)
from .taskvec import sq_distances, sum_by_group

THREE_POINTS = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class Estimate:
    lam: float
    v_fed: float | None = None
    v_local: float | None = None
    note: str = ""


def heldout(session: ClientSession, damping: float = 1e-8) -> Estimate:
    """Fit the bound's quadratic to the validation loss of the exact merge at λ = 0, ½, 1."""
    val = session.split("val")
    if len(val) == 0:
        fallback = crossfit(session)
        return Estimate(fallback.lam, fallback.v_fed, fallback.v_local, "empty validation split: used crossfit")
    f = [session.fed_local_eval(lam, val, accuracy=False).loss for lam in THREE_POINTS]
    return _from_fit(fit_three_points(*f))


def crossfit(session: ClientSession, damping: float = 1e-8) -> Estimate:
    """Pool held-out losses: each half-data local adapter scored on the other half, plus validation."""
    pooled = [0.0, 0.0, 0.0]
    count = 0
    parts = list(session.halves())
    parts.append((session.local(), session.split("val")))
    for local, data in parts:
        for i, lam in enumerate(THREE_POINTS):
            ev = session.fed_local_eval(lam, data, local, accuracy=False)
            pooled[i] += ev.loss * ev.n if ev.n else 0.0
        count += len(data)
    if count == 0:
        return Estimate(1.0, note="no held-out examples")
    return _from_fit(fit_three_points(*(f / count for f in pooled)))


def fisher(session: ClientSession, damping: float = 1e-8) -> Estimate:
    """Laplace: ``v_L = Σ_j F_j / (n F_j + δ)`` at the local adapter, ``v_F`` by moments."""
    n = len(session.split("train"))
    if n == 0:
        return Estimate(1.0, note="no training data")
    metric = session.fisher()
    v_local = sum(laplace_traces(metric, n, damping).values())
    dist = sum(sq_distances(session.fed, session.local(), session.settings.scale, metric).values())
    return _from_variances(moment_fed_variance(dist, v_local), v_local)


def folds(session: ClientSession, damping: float = 1e-8) -> Estimate:
    """``v_L = ‖τ_L⁽¹⁾ − τ_L⁽²⁾‖²_D / 4`` from two half-data local adapters, ``v_F`` by moments."""
    if len(session.split("train")) < 2:
        return Estimate(1.0, note="fewer than two training examples")
    metric = session.fisher()
    (first, _), (second, _) = session.halves()
    scale = session.settings.scale
    v_local = sum(sq_distances(first, second, scale, metric).values()) / 4.0
    dist = sum(sq_distances(session.fed, session.local(), scale, metric).values())
    return _from_variances(moment_fed_variance(dist, v_local), v_local)


def cautious(session: ClientSession, damping: float = 1e-8) -> Estimate:
    """The more local of ``folds`` and ``heldout``: two estimates of one λ*, from the training data's spread and
    from the validation loss. Erring federated costs far more accuracy than erring local (the federated head
    can be biased against a small client's classes), and each fails alone on tiny clients (README)."""
    return min(folds(session, damping), heldout(session, damping), key=lambda est: est.lam)


def _from_fit(fit: QuadraticFit) -> Estimate:
    note = "" if fit.curved else "no positive curvature: took the better endpoint"
    return Estimate(fit.lam, fit.v_fed, fit.v_local, note)


def _from_variances(v_fed: float, v_local: float) -> Estimate:
    return Estimate(closed_form_lambda(v_fed, v_local), v_fed, v_local)


def module_shape(session: ClientSession, damping: float = 1e-8) -> tuple[dict[str, float], dict[str, float]]:
    """Per module: the local estimator's spread ``‖τ_L⁽¹⁾ − τ_L⁽²⁾‖²_D / 4`` (the shape of ``v_L``) and the
    Fisher distance ``‖τ_F − τ_L‖²_D``. The Laplace traces are no shape: they are ~P_m/n everywhere."""
    metric = session.fisher()
    local = session.local()
    scale = session.settings.scale
    (first, _), (second, _) = session.halves()
    spread = sum_by_group({k: v / 4.0 for k, v in sq_distances(first, second, scale, metric).items()}, local)
    dist = sum_by_group(sq_distances(session.fed, local, scale, metric), local)
    return spread, dist


EXTRA_LOCAL_TRAININGS = {"heldout": 0, "crossfit": 1, "fisher": 0, "folds": 1, "cautious": 1}
"""Full local trainings each estimator spends beyond the local adapter (two half-data adapters count as one)."""

ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "heldout": heldout, "crossfit": crossfit, "fisher": fisher, "folds": folds, "cautious": cautious,
}
