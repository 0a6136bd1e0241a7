"""Estimators of the federated weight λ for one client (docs/method.md, "Estimators of λ").

Each takes a :class:`ClientSession` and returns an :class:`Estimate`; none sends anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

from ..config import PotaraSettings
from ..merge.fisher import laplace_traces
from ..merge.mixing import (
    QuadraticFit,
    closed_form_lambda,
    fit_three_points,
    moment_fed_variance,
)
from ..merge.paper_weight import POOLED, grouped_weights
from ..merge.taskvec import extra_keys, group_of, lora_modules, sq_distances, sum_by_group
from .session import ClientSession

THREE_POINTS = (0.0, 0.5, 1.0)


@dataclass(frozen=True)
class Estimate:
    lam: float | Mapping[str, float]  # one federated weight, or one per module
    v_fed: float | None = None
    v_local: float | None = None
    note: str = ""


def heldout(session: ClientSession, granularity: str = "one") -> Estimate:
    """Fit the bound's quadratic to the validation loss of the exact merge at λ = 0, ½, 1; with ``granularity``
    ``head_lora``, then a λ for the head and one for the LoRA modules (:func:`head_then_lora`)."""
    val = session.split("val")
    if len(val) == 0:
        fallback = crossfit(session)
        return Estimate(fallback.lam, fallback.v_fed, fallback.v_local, "empty validation split: used crossfit")
    f = [session.fed_local_eval(lam, val, accuracy=False).loss for lam in THREE_POINTS]
    joint = _from_fit(fit_three_points(*f))
    return head_then_lora(session, joint) if granularity == "head_lora" else joint


def head_then_lora(session: ClientSession, joint: Estimate) -> Estimate:
    """One sweep of coordinate-wise fits from the joint λ: the head's λ by the three-point fit with the LoRA modules
    at the joint λ, then the LoRA modules' λ by the three-point fit with the head at its own. Six more forward
    passes over validation at most (points that repeat one are cached); no head: the joint estimate."""
    head = sorted({group_of(k) for k in extra_keys(session.fed)})
    if not head:
        return Estimate(joint.lam, joint.v_fed, joint.v_local, "no head: one λ")
    lora = lora_modules(session.fed)
    val = session.split("val")

    def loss(lam_head: float, lam_lora: float) -> float:
        weights = {**dict.fromkeys(lora, lam_lora), **dict.fromkeys(head, lam_head)}
        return session.fed_local_eval(weights, val, accuracy=False).loss

    at_head = fit_three_points(*(loss(lam, joint.lam) for lam in THREE_POINTS))
    at_lora = fit_three_points(*(loss(at_head.lam, lam) for lam in THREE_POINTS))
    lams = {**dict.fromkeys(lora, at_lora.lam), **dict.fromkeys(head, at_head.lam)}
    note = "; ".join(filter(None, [joint.note, f"head λ {at_head.lam:.3g}, LoRA λ {at_lora.lam:.3g}"]))
    return Estimate(lams, at_lora.v_fed, at_lora.v_local, note)


def crossfit(session: ClientSession) -> Estimate:
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


def folds(session: ClientSession) -> Estimate:
    """``v_L = ‖τ_L⁽¹⁾ − τ_L⁽²⁾‖²_D / 4`` from two half-data local adapters, ``v_F`` by moments."""
    if len(session.split("train")) < 2:
        return Estimate(1.0, note="fewer than two training examples")
    metric = session.fisher()
    (first, _), (second, _) = session.halves()
    scale = session.settings.scale
    v_local = sum(sq_distances(first, second, scale, metric).values()) / 4.0
    dist = sum(sq_distances(session.fed, session.local(), scale, metric).values())
    return _from_variances(moment_fed_variance(dist, v_local), v_local)


def spread(session: ClientSession, scale: str = "mean") -> Estimate:
    """``v_F`` from the spread ``s²`` of the ``m`` client updates the server aggregated in the last round: ``s²/m``,
    the noise of their average (``scale`` ``mean``), or ``s²``, one client's deviation from it (``client``);
    ``v_L = max(‖τ_F − τ_L‖² − v_F, ε)`` by moments (Euclidean). No training and no forward passes: the spread came
    with the global adapter. Without one (not released under DP or SecAgg+, fewer than two updates, no
    federation): ``heldout``, with a note."""
    sent = session.update_spread
    if sent is None or sent.count < 2:
        why = "no update spread" if sent is None else f"update spread of {sent.count} update(s)"
        fallback = heldout(session)
        note = "; ".join(filter(None, [f"{why}: used heldout", fallback.note]))
        return Estimate(fallback.lam, fallback.v_fed, fallback.v_local, note)
    v_fed = sent.spread / sent.count if scale == "mean" else sent.spread
    dist = sum(sq_distances(session.fed, session.local(), session.settings.scale).values())
    return _from_variances(v_fed, moment_fed_variance(dist, v_fed))  # the same moment identity, solved for v_L


def cautious(session: ClientSession) -> Estimate:
    """The more local of ``folds`` and ``heldout``: two estimates of one λ*, from the training data's spread and
    from the validation loss. Erring federated costs far more accuracy than erring local (the federated head
    can be biased against a small client's classes), and each fails alone on tiny clients (docs/earlier-measurements.md)."""
    return min(folds(session), heldout(session), key=lambda est: est.lam)


@dataclass(frozen=True)
class PaperOptions:
    """The ``paper`` estimator's choices (``potara.paper_*``; docs/method.md)."""

    samples: int = 30
    space: str = "factors"
    fisher: str = "model"
    damping: float = 1e-4
    traces: str = "pooled"
    cross: str = "signed"  # potara.paper_cross's default
    assign: str = "fed_is_a"

    @classmethod
    def of(cls, potara: PotaraSettings) -> PaperOptions:
        return cls(potara.paper_samples, potara.paper_space, potara.paper_fisher, potara.paper_damping,
                   potara.paper_traces, potara.paper_cross, potara.paper_assign)


def paper(session: ClientSession, options: PaperOptions = PaperOptions()) -> Estimate:
    """The paper's practice as read: diagonal Fisher of both models on a few training examples, inverse traces,
    a clipped gradient correlation, ``λ_F = (b − c)/(a + b − 2c)``; its δ is ``options.damping``."""
    if len(session.split("train")) == 0:
        return Estimate(1.0, note="no training data")
    pieces = [session.paper_pieces(at, options.space, options.fisher, options.samples) for at in ("fed", "local")]
    (f_fed, g_fed), (f_loc, g_loc) = pieces
    modules = set(lora_modules(session.fed))
    group = (lambda _: POOLED) if options.traces == "pooled" else (lambda k: k if k in modules else group_of(k))
    weights = grouped_weights(f_fed, f_loc, g_fed, g_loc, options.damping, group,
                              cross=options.cross, fed_is_a=options.assign == "fed_is_a")
    note = "; ".join(sorted({f"{name}: {w.note}" for name, w in weights.items() if w.note}))
    v_fed, v_local = sum(w.v_fed for w in weights.values()), sum(w.v_local for w in weights.values())
    lam = weights[POOLED].lam if options.traces == "pooled" else {name: w.lam for name, w in weights.items()}
    return Estimate(lam, v_fed, v_local, note)


def _from_fit(fit: QuadraticFit) -> Estimate:
    note = "" if fit.curved else "no positive curvature: took the better endpoint"
    return Estimate(fit.lam, fit.v_fed, fit.v_local, note)


def _from_variances(v_fed: float, v_local: float) -> Estimate:
    return Estimate(closed_form_lambda(v_fed, v_local), v_fed, v_local)


def module_shape(session: ClientSession) -> tuple[dict[str, float], dict[str, float]]:
    """Per module: the local estimator's spread ``‖τ_L⁽¹⁾ − τ_L⁽²⁾‖²_D / 4`` (the shape of ``v_L``) and the
    Fisher distance ``‖τ_F − τ_L‖²_D``. The Laplace traces are no shape: they are ~P_m/n everywhere."""
    metric = session.fisher()
    local = session.local()
    scale = session.settings.scale
    (first, _), (second, _) = session.halves()
    spread = sum_by_group({k: v / 4.0 for k, v in sq_distances(first, second, scale, metric).items()}, local)
    dist = sum_by_group(sq_distances(session.fed, local, scale, metric), local)
    return spread, dist


@dataclass(frozen=True)
class Estimator:
    """One λ estimator: the estimate, the full local trainings it spends beyond the local adapter (two half-data
    adapters count as one), and its own settings as ``potara.*`` gives them (none for most)."""

    estimate: Callable[..., Estimate]
    extra_local_trainings: int
    options: Callable[[PotaraSettings], dict] | None = None


ESTIMATORS: dict[str, Estimator] = {
    "heldout": Estimator(heldout, 0, lambda p: {"granularity": p.granularity}),
    "crossfit": Estimator(crossfit, 1),
    "fisher": Estimator(fisher, 0, lambda p: {"damping": p.damping}),
    "folds": Estimator(folds, 1),
    "cautious": Estimator(cautious, 1),
    "paper": Estimator(paper, 0, lambda p: {"options": PaperOptions.of(p)}),
    "spread": Estimator(spread, 0, lambda p: {"scale": p.spread_scale}),
}
"""Every estimator by the name ``potara.estimator`` and the ``potara_<name>`` methods use: the one registry."""


def configured(name: str, potara: PotaraSettings) -> Callable[[ClientSession], Estimate]:
    """The estimator ``name`` with its own settings taken from ``potara`` (a method variant's, in a sweep)."""
    estimator = ESTIMATORS[name]
    return partial(estimator.estimate, **estimator.options(potara)) if estimator.options else estimator.estimate
