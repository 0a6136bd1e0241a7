"""The safety rule (``potara.safety=val_loss``): when the client's validation split cannot tell the two parents
apart, take the parent with the lower validation loss instead of a merge.

"Cannot tell" is either of: fewer than ``potara.safety_min_val`` validation examples (a λ fitted on a handful
of losses swings with one example), or a validation loss with no positive curvature in λ at λ = 0, ½, 1 (the
bound's quadratic does not hold there, so no interior λ is supported). Ties go to the local parent (λ = 0), as
in the ``heldout`` fit. An empty validation split has nothing to compare: the estimate stands.
"""

from __future__ import annotations

from .estimators import THREE_POINTS, Estimate
from .session import ClientSession

EPS = 1e-12


def unsure(f0: float, f_half: float, f1: float, n_val: int, min_val: int) -> str:
    """Why validation cannot tell the parents apart (``""``: it can); ``f`` are its losses at λ = 0, ½, 1."""
    if n_val < min_val:
        return f"{n_val} validation examples < {min_val}"
    if 4.0 * (f0 - 2.0 * f_half + f1) <= EPS:
        return "no positive curvature of the validation loss in λ"
    return ""


def safe(session: ClientSession, estimate: Estimate, min_val: int) -> Estimate:
    """``estimate``, or the parent with the lower validation loss when validation cannot tell them apart."""
    val = session.split("val")
    if len(val) == 0:
        return estimate
    f0, f_half, f1 = (session.fed_local_eval(lam, val, accuracy=False).loss for lam in THREE_POINTS)
    reason = unsure(f0, f_half, f1, len(val), min_val)
    if not reason:
        return estimate
    lam, parent = (1.0, "federated") if f1 < f0 else (0.0, "local")
    note = "; ".join(filter(None, [estimate.note, f"safety: {reason}: the {parent} parent (lower validation loss)"]))
    return Estimate(lam, estimate.v_fed, estimate.v_local, note)
