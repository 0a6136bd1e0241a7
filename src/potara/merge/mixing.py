"""Closed-form mixing weights from the variance-trace bound. Pure arithmetic, no tensors needed.

For ``τ(λ) = λ τ_F + (1−λ) τ_L`` the bound ``½[λ² v_F + (1−λ)² v_L]`` is minimised at
``λ* = v_L / (v_F + v_L)``, where it equals ``½ v_F v_L / (v_F + v_L) < ½ min(v_F, v_L)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

EPS = 1e-12


def closed_form_lambda(v_fed: float, v_local: float) -> float:
    """``λ* = v_L / (v_F + v_L)``: the federated model's weight. Both zero: equal weights."""
    _check_variances(v_fed, v_local)
    total = v_fed + v_local
    return 0.5 if total <= EPS else v_local / total


def joint_lambda(a: float, b: float, c: float = 0.0) -> tuple[float, str]:
    """``λ = (b − c) / (a + b − 2c)`` clipped to [0, 1], the minimiser of ``λ² a + (1−λ)² b + 2λ(1−λ) c``: the
    weight of the model whose variance trace is ``a``, with ``b`` the other's and ``c`` their cross trace. With
    ``c = 0`` it is :func:`closed_form_lambda`. ``a + b − 2c ≤ 0`` (no curvature in λ): ½, and a note says so."""
    _check_variances(a, b)
    if not math.isfinite(c):
        raise ValueError(f"the cross trace must be finite, got {c}")
    denom = a + b - 2.0 * c
    if denom <= 0.0:
        return 0.5, "a + b - 2c <= 0: took λ = 0.5"
    return min(max((b - c) / denom, 0.0), 1.0), ""


def clipped_cross(cosine: float, a: float, b: float) -> float:
    """``c = clip(cos, 0, 1) · min(a, b)``: a cross trace that is non-negative and no larger than either marginal."""
    return min(max(cosine, 0.0), 1.0) * min(a, b)


def signed_cross(cosine: float, a: float, b: float) -> float:
    """``c = clip(cos, −1, 1) · min(a, b)``: gradients that point apart give a negative cross trace, which pulls λ
    toward ½ (errors that cancel favour an even merge)."""
    return min(max(cosine, -1.0), 1.0) * min(a, b)


def geometric_cross(cosine: float, a: float, b: float) -> float:
    """``c = clip(cos, 0, 1) · √(a b)``: a correlation times the geometric mean of the marginals, the covariance's own
    form; it may exceed the smaller marginal, and then λ clips to the endpoint of the smaller variance."""
    return min(max(cosine, 0.0), 1.0) * math.sqrt(a * b)


# The forms of the cross term the paper leaves open (docs/method.md, ``paper``); "none" is c = 0.
CROSS_TERMS = {
    "cosine": clipped_cross,
    "signed": signed_cross,
    "geometric": geometric_cross,
    "none": lambda cosine, a, b: 0.0,
}


def complement(lam: float | Mapping[str, float]) -> float | dict[str, float]:
    """``1 − λ``, for one weight or one per module."""
    return 1.0 - lam if isinstance(lam, (int, float)) else {k: 1.0 - v for k, v in lam.items()}


def bound(lam: float, v_fed: float, v_local: float) -> float:
    return 0.5 * (lam**2 * v_fed + (1 - lam) ** 2 * v_local)


def moment_fed_variance(sq_distance: float, v_local: float, eps: float = EPS) -> float:
    """``E‖τ_F − τ_L‖²_D = v_F + v_L`` so ``v_F = max(‖τ_F − τ_L‖²_D − v_L, ε)`` (independent errors)."""
    return max(sq_distance - v_local, eps)


@dataclass(frozen=True)
class QuadraticFit:
    """``f(λ) = f* + ½[λ² v_F + (1−λ)² v_L]`` through three held-out losses at λ = 0, ½, 1."""

    v_fed: float
    v_local: float
    lam: float
    curved: bool


def fit_three_points(f0: float, f_half: float, f1: float) -> QuadraticFit:
    """Fit the bound's quadratic; without positive curvature take the endpoint with the lower loss."""
    for f in (f0, f_half, f1):
        if not math.isfinite(f):
            raise ValueError(f"held-out losses must be finite, got {(f0, f_half, f1)}")
    curvature = 4.0 * (f0 - 2.0 * f_half + f1)  # = v_F + v_L
    v_local = 3.0 * f0 - 4.0 * f_half + f1
    if curvature <= EPS:
        return QuadraticFit(0.0, 0.0, 1.0 if f1 < f0 else 0.0, False)
    lam = min(max(v_local / curvature, 0.0), 1.0)
    return QuadraticFit(curvature - v_local, v_local, lam, True)


def module_lambdas(
    v_local: Mapping[str, float], sq_dist: Mapping[str, float], pooled_lambda: float
) -> dict[str, float]:
    """Per-module λ with a variance *shape* across modules and a pooled estimate's *scale*.

    ``v_{L,m} = c · u_m`` with ``u_m`` a per-module shape of the local variance; ``v_{F,m} = max(d_m − c u_m, ε)``.
    ``c`` is chosen by bisection so that the pooled ``Σ v_L / Σ (v_F + v_L)`` equals ``pooled_lambda``.
    """
    keys = list(v_local)
    if pooled_lambda <= 0.0 or pooled_lambda >= 1.0 or not keys:
        return {k: pooled_lambda for k in keys}

    def pooled(c: float) -> float:
        vl = [c * v_local[k] for k in keys]
        vf = [moment_fed_variance(sq_dist[k], v) for k, v in zip(keys, vl)]
        return sum(vl) / (sum(vl) + sum(vf))

    lo, hi = 0.0, 1.0
    while pooled(hi) < pooled_lambda and hi < 1e30:
        hi *= 10.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if pooled(mid) < pooled_lambda else (lo, mid)
    c = 0.5 * (lo + hi)
    return {k: closed_form_lambda(moment_fed_variance(sq_dist[k], c * v_local[k]), c * v_local[k]) for k in keys}


def _check_variances(*values: float) -> None:
    for v in values:
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"variances must be finite and non-negative, got {v}")
