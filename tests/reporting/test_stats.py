"""Paired differences: hand-computable cases, a brute-force check of the cluster bootstrap, determinism."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from potara.reporting.stats import cluster_bootstrap, paired_difference

# Four seeds (clusters) of unequal size: small enough to enumerate every bootstrap resample (4^4 = 256).
CLUSTERS = {"s0": [0.1, 0.3], "s1": [0.5], "s2": [-0.2, 0.0, 0.1], "s3": [0.05, 0.15]}
DIFFS = [x for xs in CLUSTERS.values() for x in xs]
GROUPS = [g for g, xs in CLUSTERS.items() for _ in xs]


def test_identical_arrays_are_zero_with_a_zero_interval_and_all_ties():
    acc = [0.5, 0.75, 0.25, 1.0]
    for groups in (None, [0, 0, 1, 1]):
        d = paired_difference(acc, acc, groups)
        assert (d.mean, d.low, d.high) == (0.0, 0.0, 0.0)
        assert (d.wins, d.ties, d.losses, d.units) == (0, 4, 0, 4)
        assert d.verdict == "tie"


def test_a_constant_shift_has_that_exact_interval():
    b = [0.25, 0.5, 0.0, 0.5, 0.25, 0.75]
    up = paired_difference([x + 0.25 for x in b], b, groups=[0, 0, 1, 1, 2, 2])
    assert (up.mean, up.low, up.high) == (0.25, 0.25, 0.25)
    assert (up.wins, up.ties, up.losses, up.clusters, up.verdict) == (6, 0, 0, 3, "win")
    down = paired_difference(b, [x + 0.25 for x in b])
    assert (down.mean, down.low, down.high, down.losses, down.verdict) == (-0.25, -0.25, -0.25, 6, "loss")


def test_two_equal_clusters_span_the_two_cluster_means():
    """Resamples: {s0, s0} 1/4, {s0, s1} 1/2, {s1, s1} 1/4, so the 2.5% and 97.5% points are the cluster means."""
    d = paired_difference([0.1, 0.3, 0.5, 0.7], [0.0] * 4, groups=["s0", "s0", "s1", "s1"])
    assert d.mean == pytest.approx(0.4)
    assert (d.low, d.high) == (pytest.approx(0.2), pytest.approx(0.6))
    assert d.verdict == "win"


def test_cluster_bootstrap_matches_the_enumerated_resamples():
    exact = np.array([
        np.mean([x for g in pick for x in CLUSTERS[g]]) for pick in itertools.product(CLUSTERS, repeat=len(CLUSTERS))
    ])
    atoms, counts = np.unique(exact.round(12), return_counts=True)
    drawn = cluster_bootstrap(np.array(DIFFS), GROUPS, 40_000, seed=1).round(12)
    assert set(np.unique(drawn)) <= set(atoms)
    assert [np.mean(drawn == v) for v in atoms] == pytest.approx(counts / len(exact), abs=0.006)

    cdf = np.cumsum(counts) / len(exact)
    low, high = atoms[np.searchsorted(cdf, 0.025)], atoms[np.searchsorted(cdf, 0.975)]
    d = paired_difference(DIFFS, [0.0] * len(DIFFS), GROUPS, n_boot=20_000)
    assert (d.low, d.high) == (pytest.approx(low), pytest.approx(high))  # ≈ 0.0091 and 0.34
    assert d.mean == pytest.approx(np.mean(DIFFS))
    assert (d.wins, d.ties, d.losses, d.clusters) == (6, 1, 1, 4)


def test_clusters_widen_the_interval_when_clients_of_a_seed_move_together():
    seed_effect = [-0.1, 0.0, 0.1, 0.2]
    diffs = [e + 0.01 * k for e in seed_effect for k in range(6)]
    groups = [s for s in range(4) for _ in range(6)]
    clustered = paired_difference(diffs, [0.0] * 24, groups)
    naive = paired_difference(diffs, [0.0] * 24)
    assert clustered.high - clustered.low > 1.5 * (naive.high - naive.low)
    assert (clustered.verdict, naive.verdict) == ("tie", "win")


def test_the_same_seed_gives_the_same_interval():
    zeros = [0.0] * len(DIFFS)
    first, again = (paired_difference(DIFFS, zeros, GROUPS, n_boot=50, seed=3) for _ in range(2))
    assert first == again
    draws = {seed: cluster_bootstrap(np.array(DIFFS), GROUPS, 50, seed) for seed in (3, 4)}
    assert np.array_equal(draws[3], cluster_bootstrap(np.array(DIFFS), GROUPS, 50, 3))
    assert not np.array_equal(draws[3], draws[4])


def test_tolerance_makes_near_equal_units_ties():
    d = paired_difference([0.5, 0.52, 0.4], [0.5, 0.5, 0.5], tie=0.025)
    assert (d.wins, d.ties, d.losses) == (0, 2, 1)
    assert (paired_difference([0.5, 0.52, 0.4], [0.5, 0.5, 0.5]).wins) == 1


def test_one_cluster_has_no_interval():
    d = paired_difference([0.6, 0.7], [0.5, 0.5], groups=[0, 0])
    assert math.isnan(d.low) and math.isnan(d.high) and d.verdict == "tie"
    assert d.to_dict()["ci95"] == [d.low, d.high] and d.to_dict()["units"] == 2


def test_mismatched_or_empty_input_is_an_error():
    with pytest.raises(ValueError, match="lengths differ"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="lengths differ"):
        paired_difference([0.1], [0.1], groups=[0, 1])
    with pytest.raises(ValueError, match="no units"):
        paired_difference([], [])
