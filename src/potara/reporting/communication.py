"""Accuracy against communication, from a run's per-round records (``rounds.jsonl``) and its methods' final
results (``summary.json``'s ``methods``). Pure functions over records.

The target is a method's *final* personalized accuracy (by default FedIT + local fine-tuning, ``fedit_ft``);
for every method with per-round accuracies, the first round at which it reaches the target and the bytes
(up + down) it needed by then, the broadcast of that round's global adapter to every client included; a
method that sends nothing (``local``) reaches it with 0 bytes or never.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

FEDIT = "fedit"
TARGET = "fedit_ft"
TOL = 1e-9


@dataclass(frozen=True)
class Point:
    round: int
    cum_bytes: int  # up + down of the rounds so far, plus this round's broadcast to every client
    acc: float


@dataclass(frozen=True)
class Reach:
    """The first round (and cumulative bytes) at which a method reaches a target; None: never. Round 0 with
    0 bytes: a method that sends nothing and reaches it."""

    round: int | None
    cum_bytes: int | None


@dataclass(frozen=True)
class Communication:
    rounds: int
    target_method: str
    target: float  # the target method's final accuracy
    reach: dict[str, Reach]  # per method with per-round accuracies, and per method that sends nothing


def _measured(record: dict, method: str) -> tuple[dict, float | None]:
    """The part of a round record that holds ``method``'s bytes, and its accuracy there (None: not measured):
    FedIT's global model as ``fedit_mean_acc``; a peer with its own federation under its name (its own
    bytes, ``mean_acc``); a method personalized at that round under ``methods``."""
    if method == FEDIT:
        return record, record["fedit_mean_acc"]
    if isinstance(record.get(method), dict):
        return record[method], record[method].get("mean_acc")
    return record, record.get("methods", {}).get(method)


def curve(records: list[dict], method: str, final_acc: float | None = None) -> list[Point]:
    """``method``'s mean personalized accuracy after every round where it was measured, with ``final_acc``
    as the last round's; bytes are cumulative up + down plus the broadcast of that round's global adapter
    (none in records written before it was counted, which :func:`analyse` refuses; plots still draw them)."""
    points = []
    for i, r in enumerate(records):
        part, acc = _measured(r, method)
        if i == len(records) - 1 and final_acc is not None:
            acc = final_acc
        if acc is not None:
            points.append(Point(r["round"], part["cum_bytes_up"] + part["cum_bytes_down"] + part.get("broadcast_bytes", 0), acc))
    return points


def per_round_methods(records: list[dict]) -> set[str]:
    """The methods with an accuracy at some round before the last: FedIT, those personalized at
    intermediate rounds, peers with their own federation."""
    names = {FEDIT}
    for r in records[:-1]:
        names |= set(r.get("methods", {})) | {k for k, v in r.items() if isinstance(v, dict) and "mean_acc" in v}
    return names


def first_reaching(points: list[Point], target: float) -> Reach:
    for p in points:
        if p.acc >= target - TOL:
            return Reach(p.round, p.cum_bytes)
    return Reach(None, None)


def analyse(records: list[dict], methods: Mapping[str, dict], target: str = TARGET) -> Communication:
    """``target``'s final ``mean_acc`` as the target; when each method of ``methods`` (name → the summary's
    ``mean_acc``, ``bytes_up``, ``bytes_down``) reaches it: those with per-round accuracies by their curve,
    those that send nothing at 0 bytes or never; the others (final accuracy only) are left out."""
    if not records:
        raise ValueError("no round records to analyse (the run has no rounds.jsonl lines)")
    if target not in methods:
        raise ValueError(f"the target method '{target}' is not among the run's methods")
    if "broadcast_bytes" not in records[-1]:
        raise ValueError("round records without broadcast_bytes (written before the broadcast was counted)")
    goal, measured = methods[target]["mean_acc"], per_round_methods(records)
    reach = {}
    for name, m in methods.items():
        if m["bytes_up"] + m["bytes_down"] == 0:
            reach[name] = Reach(0, 0) if m["mean_acc"] >= goal - TOL else Reach(None, None)
        elif name in measured:
            reach[name] = first_reaching(curve(records, name, m["mean_acc"]), goal)
    return Communication(records[-1]["round"], target, goal, reach)


def median_round(reaches: list[Reach]) -> float | None:
    """The median round over the reaches that reached (None when none did)."""
    rounds = [r.round for r in reaches if r.round is not None]
    return statistics.median(rounds) if rounds else None
