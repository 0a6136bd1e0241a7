"""Accuracy against communication, from the per-round records of a run (``rounds.jsonl``).

Which round and how many bytes (up + down, cumulative) each method needs to reach FedIT's *final*
personalized accuracy, and a method's accuracy at rounds ⌈R/4⌉ and ⌈R/2⌉. Pure functions over records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

FEDIT = "fedit"


@dataclass(frozen=True)
class Point:
    round: int
    cum_bytes: int  # up + down, cumulative up to and including this round
    acc: float


@dataclass(frozen=True)
class Reach:
    """The first round (and cumulative bytes) at which a curve reaches a target; None: never."""

    round: int | None
    cum_bytes: int | None


@dataclass(frozen=True)
class Communication:
    rounds: int
    target: float  # FedIT's accuracy after the last round
    fedit: Reach
    method: Reach
    at_quarter: tuple[int, float | None]  # (⌈R/4⌉, the method's accuracy there; None if not measured)
    at_half: tuple[int, float | None]


def curve(records: list[dict], method: str, final_acc: float | None = None) -> list[Point]:
    """``method``'s mean personalized accuracy after every round where it was measured (``fedit`` every
    round, as ``fedit_mean_acc``; others under ``methods``), with ``final_acc`` as the last round's."""
    points = []
    for i, r in enumerate(records):
        acc = r["fedit_mean_acc"] if method == FEDIT else r.get("methods", {}).get(method)
        if i == len(records) - 1 and final_acc is not None:
            acc = final_acc
        if acc is not None:
            points.append(Point(r["round"], r["cum_bytes_up"] + r["cum_bytes_down"], acc))
    return points


def first_reaching(points: list[Point], target: float, tol: float = 1e-9) -> Reach:
    for p in points:
        if p.acc >= target - tol:
            return Reach(p.round, p.cum_bytes)
    return Reach(None, None)


def accuracy_at(points: list[Point], round_: int) -> float | None:
    return next((p.acc for p in points if p.round == round_), None)


def analyse(records: list[dict], method: str = "potara", final_acc: float | None = None) -> Communication:
    """FedIT's final accuracy as the target; when FedIT and ``method`` reach it; ``method`` at ⌈R/4⌉, ⌈R/2⌉."""
    if not records:
        raise ValueError("no round records to analyse (the run has no rounds.jsonl lines)")
    total = records[-1]["round"]
    fedit, other = curve(records, FEDIT), curve(records, method, final_acc)
    target = fedit[-1].acc
    quarter, half = math.ceil(total / 4), math.ceil(total / 2)
    return Communication(
        total, target, first_reaching(fedit, target), first_reaching(other, target),
        (quarter, accuracy_at(other, quarter)), (half, accuracy_at(other, half)),
    )
