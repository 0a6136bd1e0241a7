"""Paired differences between two methods over the same units, with a bootstrap interval and W/T/L counts.

A *unit* is one (seed, client): both methods were evaluated on the same client's test split in the same
federation. Clients of one seed share that federation (the same global adapter, the same partition draw),
so their differences are correlated; resampling clients independently would understate the spread. With
``groups`` (the seed, or (setting, seed), of each unit) the bootstrap resamples whole groups (a cluster
bootstrap); without it every unit is its own group. Pure Python and NumPy; nothing else from potara.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class PairedDiff:
    """Mean of a − b over the units, its 95% percentile bootstrap interval, and per-unit W/T/L."""

    mean: float
    low: float  # NaN when there is a single group: one cluster says nothing about the spread
    high: float
    wins: int
    ties: int
    losses: int
    clusters: int

    @property
    def units(self) -> int:
        return self.wins + self.ties + self.losses

    @property
    def verdict(self) -> str:
        """"win" if the interval is above 0, "loss" if below, else "tie" (also when there is no interval)."""
        if self.low > 0:
            return "win"
        if self.high < 0:
            return "loss"
        return "tie"

    def to_dict(self) -> dict:
        return {
            "mean": self.mean, "ci95": [self.low, self.high], "wins": self.wins, "ties": self.ties,
            "losses": self.losses, "units": self.units, "clusters": self.clusters, "verdict": self.verdict,
        }


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    groups: Sequence[Hashable] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    tie: float = 0.0,
) -> PairedDiff:
    """a − b over paired units: mean, cluster-bootstrap 95% percentile interval, wins/ties/losses.

    ``a[i]`` and ``b[i]`` are the two methods' accuracies on unit ``i``; ``groups[i]`` its cluster (the seed:
    clients of one federation are not independent), resampled whole with replacement, ``n_boot`` times, by a
    generator seeded with ``seed`` (the result is deterministic). The statistic of a resample is the mean over
    all its units, so larger clusters weigh more, as in the point estimate. A unit is a tie when
    ``|a − b| <= tie``. With few clusters (3 seeds: 10 distinct resamples) the interval is coarse; with one
    it is undefined (NaN) and the verdict is "tie".
    """
    if len(a) != len(b) or (groups is not None and len(groups) != len(a)):
        raise ValueError(f"paired_difference: lengths differ (a {len(a)}, b {len(b)}, groups {_len(groups)})")
    if not len(a):
        raise ValueError("paired_difference: no units")
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    labels = list(range(len(diffs))) if groups is None else list(groups)
    boot = cluster_bootstrap(diffs, labels, n_boot, seed)
    low, high = np.quantile(boot, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) if boot.size else (math.nan, math.nan)
    ties = int(np.sum(np.abs(diffs) <= tie))
    wins = int(np.sum(diffs > tie))
    return PairedDiff(
        float(diffs.mean()), float(low), float(high), wins, ties, len(diffs) - wins - ties, len(set(labels))
    )


def cluster_bootstrap(diffs: np.ndarray, groups: Sequence[Hashable], n_boot: int, seed: int) -> np.ndarray:
    """``n_boot`` means over resampled clusters (drawn with replacement); empty with fewer than two clusters."""
    index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    if len(index) < 2:
        return np.empty(0)
    ids = np.array([index[g] for g in groups])
    sums = np.bincount(ids, weights=diffs, minlength=len(index))
    counts = np.bincount(ids, minlength=len(index)).astype(float)
    draws = np.random.default_rng(seed).integers(0, len(index), size=(n_boot, len(index)))
    return sums[draws].sum(axis=1) / counts[draws].sum(axis=1)


def _len(seq: Sequence | None) -> str:
    return "none" if seq is None else str(len(seq))
