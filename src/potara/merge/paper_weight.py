"""The paper's λ as read (docs/method.md, ``paper``): inverse-Fisher variance traces of the two models, a cross
trace from the clipped correlation of their loss gradients, and the joint-Gaussian weight. Pure tensor code.

Per group ``g`` (one group for pooled traces, one per module otherwise): ``T_X = Σ_j 1/(F_X,j + δ)`` for the
federated and the local model, ``cos = ⟨g_F, g_L⟩ / (‖g_F‖ ‖g_L‖)``, a cross trace ``c`` from it (by default
``clip(cos, 0, 1) · min(T_F, T_L)``; the other forms in ``mixing.CROSS_TERMS``) and ``λ_F = (b − c)/(a + b − 2c)``
with ``a = T_F, b = T_L`` (``fed_is_a``) or the other way round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from .mixing import CROSS_TERMS, joint_lambda
from .taskvec import Metric

POOLED = "all"


def inverse_traces(fisher: Metric, damping: float) -> dict[str, float]:
    """``Σ_j 1/(F_j + δ)`` per key of a diagonal Fisher (a factored ``(g, x)`` entry row by row, never whole)."""
    if damping <= 0:
        raise ValueError(f"the damping must be > 0, got {damping}")
    out = {}
    for key, entry in fisher.items():
        if isinstance(entry, tuple):
            g, x = entry
            out[key] = float(sum((1.0 / (row * x + damping)).sum() for row in g))
        else:
            out[key] = float((1.0 / (entry + damping)).sum())
    return out


def gradient_products(g_fed: Mapping[str, Tensor], g_local: Mapping[str, Tensor]) -> dict[str, tuple[float, ...]]:
    """Per key: ``(⟨g_F, g_L⟩, ‖g_F‖², ‖g_L‖²)``."""
    return {
        k: (float((g * g_local[k]).sum()), float(g.pow(2).sum()), float(g_local[k].pow(2).sum()))
        for k, g in g_fed.items()
    }


def cosine(dot: float, sq_a: float, sq_b: float) -> float:
    """``dot / √(sq_a sq_b)``; 0 when either gradient vanishes (no evidence of a correlation)."""
    norm = math.sqrt(sq_a * sq_b)
    return dot / norm if norm > 0 else 0.0


@dataclass(frozen=True)
class JointWeight:
    lam: float  # the federated weight
    v_fed: float  # the trace that plays the federated model's variance (a or b, by the assignment)
    v_local: float
    cross: float
    note: str = ""


def joint_weight(t_fed: float, t_local: float, cos: float, *, cross: str = "cosine", fed_is_a: bool = True) -> JointWeight:
    """λ_F from the two traces and the gradient cosine, the cross trace of form ``cross`` (``mixing.CROSS_TERMS``);
    ``fed_is_a=False`` swaps which trace is whose."""
    v_fed, v_local = (t_fed, t_local) if fed_is_a else (t_local, t_fed)
    c = CROSS_TERMS[cross](cos, v_fed, v_local)
    lam, note = joint_lambda(v_fed, v_local, c)
    return JointWeight(lam, v_fed, v_local, c, note)


def grouped_weights(
    fisher_fed: Metric, fisher_local: Metric, g_fed: Mapping[str, Tensor], g_local: Mapping[str, Tensor],
    damping: float, group: Callable[[str], str], *, cross: str = "cosine", fed_is_a: bool = True,
) -> dict[str, JointWeight]:
    """One :class:`JointWeight` per group of keys (``group(key)``): traces and gradient products summed per group."""
    t_fed, t_local = inverse_traces(fisher_fed, damping), inverse_traces(fisher_local, damping)
    products = gradient_products(g_fed, g_local)
    sums: dict[str, list[float]] = {}
    for key in t_fed:
        acc = sums.setdefault(group(key), [0.0] * 5)
        for i, value in enumerate((t_fed[key], t_local[key], *products[key])):
            acc[i] += value
    return {
        name: joint_weight(tf, tl, cosine(dot, sf, sl), cross=cross, fed_is_a=fed_is_a)
        for name, (tf, tl, dot, sf, sl) in sums.items()
    }


def check_finite_pieces(pieces: Mapping[str, Tensor | tuple[Tensor, Tensor]], what: str) -> None:
    """``ValueError`` naming ``what`` and the key when a Fisher or gradient has a non-finite value."""
    for key, entry in pieces.items():
        if not all(torch.isfinite(t).all() for t in (entry if isinstance(entry, tuple) else (entry,))):
            raise ValueError(f"{what}: '{key}' has non-finite values")
