"""Paired differences: the t quantile against tables, hand-computable cases, the sign-flip and Holm by hand,
stratification, and a null simulation that refutes the old percentile cluster bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from potara.reporting.stats import (
    MIN_CLUSTERS,
    TOO_FEW,
    holm,
    paired_difference,
    reg_incomplete_beta,
    sign_flip_p,
    t_cdf,
    t_quantile,
)

TEN = [g for g in range(10) for _ in range(3)]  # ten clusters of three units: enough for a verdict


@pytest.mark.parametrize(("q", "df", "table"), [
    (0.975, 4, 2.776), (0.975, 9, 2.262), (0.975, 29, 2.045), (0.95, 1, 6.314), (0.995, 2, 9.925),
    (0.99, 120, 2.358), (0.9, 15, 1.341),
])
def test_t_quantile_matches_the_table(q, df, table):
    assert t_quantile(q, df) == pytest.approx(table, abs=6e-4)
    assert t_quantile(1 - q, df) == pytest.approx(-table, abs=6e-4)
    assert t_cdf(t_quantile(q, df), df) == pytest.approx(q, abs=1e-9)


def test_incomplete_beta_known_values():
    assert reg_incomplete_beta(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert reg_incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248)  # 1 − Σ_{j<2} C(4,j)·0.4^j·0.6^(4−j)
    assert reg_incomplete_beta(0.5, 0.5, 0.5) == pytest.approx(0.5)


def test_identical_arrays_are_zero_with_a_zero_interval_and_all_ties():
    acc = [0.5, 0.75, 0.25, 1.0] * 5
    d = paired_difference(acc, acc, [i // 2 for i in range(20)])
    assert (d.mean, d.low, d.high, d.p_t, d.p_signflip) == (0.0, 0.0, 0.0, 1.0, 1.0)
    assert (d.wins, d.ties, d.losses, d.units, d.clusters) == (0, 20, 0, 20, 10)
    assert d.verdict == "tie"


def test_a_constant_shift_has_that_exact_interval_and_a_verdict_from_ten_clusters():
    b = [0.25, 0.5, 0.0] * 10
    up = paired_difference([x + 0.25 for x in b], b, groups=TEN)
    assert (up.mean, up.low, up.high) == (pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.25))
    assert (up.wins, up.ties, up.losses, up.clusters, up.verdict) == (30, 0, 0, 10, "win")
    down = paired_difference(b, [x + 0.25 for x in b], groups=TEN)
    assert (down.losses, down.verdict) == (30, "loss")
    few = paired_difference([x + 0.25 for x in b[:27]], b[:27], groups=TEN[:27])
    assert few.clusters == MIN_CLUSTERS - 1 and few.verdict == TOO_FEW


def test_interval_is_the_t_interval_on_cluster_means():
    """Clusters of unequal size each count once: the estimate is the mean of cluster means, df = clusters − 1."""
    diffs = [0.1, 0.3, 0.5, -0.2, 0.0, 0.1, 0.05, 0.15]
    groups = ["s0", "s0", "s1", "s2", "s2", "s2", "s3", "s3"]
    means = np.array([0.2, 0.5, -0.1 / 3, 0.1])
    d = paired_difference(diffs, [0.0] * 8, groups)
    se = means.std(ddof=1) / 2
    assert (d.mean, d.df, d.clusters) == (pytest.approx(means.mean()), 3, 4)
    assert (d.low, d.high) == (pytest.approx(means.mean() - 3.182446 * se), pytest.approx(means.mean() + 3.182446 * se))
    u = means.mean() / se / math.sqrt(3)  # Student's t on 3 df in closed form: 1 − (2/π)(atan u + u / (1 + u²))
    assert d.p_t == pytest.approx(1 - 2 / math.pi * (math.atan(u) + u / (1 + u * u)))  # t = 1.691, p = 0.189
    assert d.p_signflip == pytest.approx(4 / 16)  # |Σ±m| ≥ 0.7667: all +, flip -0.033 alone, and their negatives
    assert (d.wins, d.ties, d.losses, d.verdict) == (6, 1, 1, TOO_FEW)


def test_sign_flip_p_by_hand():
    assert sign_flip_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(2 / 8)  # only all + and all −
    assert sign_flip_p(np.array([3.0, -1.0, 1.0])) == pytest.approx(6 / 8)  # |±3±1±1| ≥ 3 but for 3−1−1 (×2)
    assert math.isnan(sign_flip_p(np.array([1.0])))
    big = np.linspace(0.01, 0.2, 20)  # Monte Carlo above 16 clusters: all positive, p = 1 / 20,001 at best
    assert sign_flip_p(big, seed=0) == sign_flip_p(big, seed=0) < 0.001


def test_holm_by_hand():
    family = {name: paired_difference(*_with_p(p)) for name, p in (("a", 0.01), ("b", 0.04), ("c", 0.03))}
    assert [family[k].p_t for k in "abc"] == pytest.approx([0.01, 0.04, 0.03], rel=1e-6)
    adjusted = holm(family)
    assert [adjusted[k].p_holm for k in "abc"] == pytest.approx([0.03, 0.06, 0.06], rel=1e-5)
    # c (rank 2) is where Holm stops: b (rank 3) keeps c's level, at which its interval holds 0 as its verdict says
    assert [adjusted[k].level for k in "abc"] == pytest.approx([1 - 0.05 / 3, 1 - 0.05 / 2, 1 - 0.05 / 2])
    assert [adjusted[k].verdict for k in "abc"] == ["win", "tie", "tie"]
    assert [adjusted[k].low > 0 for k in "abc"] == [True, False, False]
    assert family["b"].low > 0  # at 95%, b's interval would exclude 0 under a tie verdict
    assert [family[k].verdict for k in "abc"] == ["win", "win", "win"]  # uncorrected
    assert adjusted["a"].high - adjusted["a"].low > family["a"].high - family["a"].low
    assert adjusted["a"].to_dict()["p_holm"] == adjusted["a"].p_holm and "p_holm" not in family["a"].to_dict()


def _with_p(p: float) -> tuple[list[float], list[float], list[int]]:
    """Ten one-unit clusters whose t-test p is ``p``: a fixed zero-mean shape shifted to t = t_(1−p/2, 9)."""
    shape = np.array([-4.5, -3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 4.5])
    se = shape.std(ddof=1) / math.sqrt(10)
    return list(shape + t_quantile(1 - p / 2, 9) * se), [0.0] * 10, list(range(10))


def test_strata_remove_the_difference_between_settings_from_the_noise():
    """Two settings with means +0.1 and +0.3: pooled unstratified, their gap is spread; stratified, it is not."""
    noise = [-0.02, -0.01, 0.0, 0.01, 0.02] * 2
    diffs = [0.1 + e for e in noise[:5]] + [0.3 + e for e in noise[5:]]
    strata = ["A"] * 5 + ["B"] * 5
    plain = paired_difference(diffs, [0.0] * 10, groups=range(10))
    layered = paired_difference(diffs, [0.0] * 10, groups=range(10), strata=strata)
    assert layered.mean == plain.mean == pytest.approx(0.2)
    var = 2 * (0.5**2 * np.var(noise[:5], ddof=1) / 5)
    assert layered.se == pytest.approx(math.sqrt(var))
    assert layered.df == pytest.approx(8)  # Welch–Satterthwaite with equal strata: 4 + 4
    assert layered.high - layered.low < 0.2 * (plain.high - plain.low)


def test_welch_satterthwaite_df_with_one_stratum_is_clusters_minus_one():
    d = paired_difference([0.1, 0.4, 0.2, 0.3, 0.5, 0.0], [0.0] * 6, groups=range(6), strata=["x"] * 6)
    assert d.df == 5


def test_a_stratum_of_one_cluster_or_a_cluster_across_strata():
    d = paired_difference([0.1, 0.2, 0.3], [0.0] * 3, groups=[0, 1, 2], strata=["a", "a", "b"])
    assert math.isnan(d.se) and math.isnan(d.p_t) and d.verdict == TOO_FEW
    with pytest.raises(ValueError, match="spans strata"):
        paired_difference([0.1, 0.2], [0.0, 0.0], groups=[0, 0], strata=["a", "b"])


def test_tolerance_makes_near_equal_units_ties():
    d = paired_difference([0.5, 0.52, 0.4], [0.5, 0.5, 0.5], tie=0.025)
    assert (d.wins, d.ties, d.losses) == (0, 2, 1)
    assert (paired_difference([0.5, 0.52, 0.4], [0.5, 0.5, 0.5]).wins) == 1


def test_one_cluster_has_no_interval_and_no_verdict():
    d = paired_difference([0.6, 0.7], [0.5, 0.5], groups=[0, 0])
    assert math.isnan(d.low) and math.isnan(d.high) and d.verdict == TOO_FEW
    assert all(map(math.isnan, d.to_dict()["ci"])) and d.to_dict()["units"] == 2


def test_mismatched_or_empty_input_is_an_error():
    with pytest.raises(ValueError, match="lengths differ"):
        paired_difference([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="lengths differ"):
        paired_difference([0.1], [0.1], groups=[0, 1])
    with pytest.raises(ValueError, match="no units"):
        paired_difference([], [])


# --- The null simulation: a true difference of 0, clients of a federation correlated ----------------------------

REPLICATIONS = 2000
SIZES = {5: [6, 6, 5, 7, 6], 10: [6, 6, 5, 7, 6, 6, 6, 5, 7, 6]}  # clients per cluster


def _null_draws(clusters: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """REPLICATIONS × units differences: a cluster random effect (sd 0.03) plus client noise (sd 0.02)."""
    groups = np.repeat(np.arange(clusters), SIZES[clusters])
    rng = np.random.default_rng(seed)
    effect = rng.normal(0, 0.03, size=(REPLICATIONS, clusters))
    return effect[:, groups] + rng.normal(0, 0.02, size=(REPLICATIONS, len(groups))), groups


def _old_bootstrap_false_verdicts(diffs: np.ndarray, groups: np.ndarray, n_boot: int = 1000) -> float:
    """The refuted reference: the previous percentile cluster bootstrap (unit-weighted mean of resampled clusters,
    95% percentile interval, a verdict whenever it excludes 0), kept here only to show its false-verdict rate."""
    clusters = groups.max() + 1
    sums = np.stack([np.bincount(groups, weights=row, minlength=clusters) for row in diffs])
    counts = np.bincount(groups, minlength=clusters).astype(float)
    draws = np.random.default_rng(1).integers(0, clusters, size=(n_boot, clusters))
    boot = sums[:, draws].sum(axis=2) / counts[draws].sum(axis=1)
    low, high = np.quantile(boot, [0.025, 0.975], axis=1)
    return float(np.mean((low > 0) | (high < 0)))


@pytest.mark.parametrize("clusters", [5, 10])
def test_under_the_null_the_old_bootstrap_overclaims_and_the_t_interval_does_not(clusters):
    diffs, groups = _null_draws(clusters, seed=clusters)
    results = [paired_difference(row, np.zeros_like(row), groups) for row in diffs]
    false_verdicts = np.mean([d.verdict in ("win", "loss") for d in results])
    t_rejects = np.mean([d.p_t < 0.05 for d in results])  # the interval's own coverage, verdict or not
    flip_rejects = np.mean([d.p_signflip < 0.05 for d in results])
    old = _old_bootstrap_false_verdicts(diffs, groups)
    assert false_verdicts <= 0.06 and t_rejects <= 0.06 and flip_rejects <= 0.06
    assert old > 0.06 if clusters == 5 else old > t_rejects  # measured: 0.157 at 5, 0.10 at 10
