"""Tests for potara.data.partition on synthetic labels."""

import warnings

import numpy as np
import pytest

from potara.data.partition import SCHEMES, partition_indices

LABELS = np.repeat(np.arange(10), 40).tolist()


def _label_sets(parts: list[list[int]], labels: list[int] = LABELS) -> list[set[int]]:
    """Labels held by each client."""
    return [{labels[i] for i in part} for part in parts]


def _mean_label_entropy(parts: list[list[int]]) -> float:
    """Mean over clients of the entropy of the client's label distribution."""
    entropies = []
    for part in parts:
        p = np.bincount([LABELS[i] for i in part], minlength=10) / len(part)
        entropies.append(-np.sum(p[p > 0] * np.log(p[p > 0])))
    return float(np.mean(entropies))


@pytest.mark.parametrize("scheme", ["classes", "dirichlet", "iid"])
def test_each_row_goes_to_at_most_one_client(scheme: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = partition_indices(LABELS, 5, scheme, seed=0, classes_per_client=3)
    flat = [i for part in parts for i in part]
    assert len(parts) == 5 and all(parts)
    assert len(flat) == len(set(flat)) and set(flat) <= set(range(len(LABELS)))


def test_classes_gives_exactly_k_classes_per_client() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        parts = partition_indices(LABELS, 8, "classes", seed=0, classes_per_client=3)
    sets = _label_sets(parts)
    assert all(len(s) == 3 for s in sets)
    assert len({frozenset(s) for s in sets}) > 1


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    skewed = partition_indices(LABELS, 5, "dirichlet", seed=0, alpha=0.1)
    even = partition_indices(LABELS, 5, "dirichlet", seed=0, alpha=100.0)
    assert _mean_label_entropy(skewed) < _mean_label_entropy(even) - 0.5


def test_iid_covers_all_rows_evenly() -> None:
    parts = partition_indices(LABELS, 4, "iid", seed=0)
    assert sorted(i for part in parts for i in part) == list(range(len(LABELS)))
    assert {len(part) for part in parts} == {100}


def test_task_gives_one_group_per_client() -> None:
    groups = [f"task_{i % 3}" for i in range(len(LABELS))]
    parts = partition_indices(LABELS, 3, "task", seed=0, groups=groups)
    assert [{groups[i] for i in part} for part in parts] == [{"task_0"}, {"task_1"}, {"task_2"}]
    assert sum(map(len, parts)) == len(LABELS)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_deterministic_for_a_seed(scheme: str) -> None:
    groups = [i % 4 for i in range(len(LABELS))]
    kwargs = dict(classes_per_client=3, groups=groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        first = partition_indices(LABELS, 4, scheme, seed=3, **kwargs)
        again = partition_indices(LABELS, 4, scheme, seed=3, **kwargs)
        other = partition_indices(LABELS, 4, scheme, seed=4, **kwargs)
    assert first == again
    if scheme != "task":
        assert first != other


@pytest.mark.parametrize(
    ("scheme", "kwargs", "message"),
    [
        ("shards", {}, "choose one of classes, dirichlet, task, iid"),
        ("classes", {"classes_per_client": 11}, "number of classes \\(10\\)"),
        ("classes", {"classes_per_client": 0}, "classes_per_client"),
        ("dirichlet", {"alpha": 0.0}, "alpha must be > 0"),
        ("task", {}, "needs `groups`"),
        ("task", {"groups": [i % 3 for i in range(400)]}, "found 3 groups .* set num_clients=3"),
        ("task", {"groups": [0, 1]}, "2 entries"),
    ],
)
def test_bad_requests_raise_useful_errors(scheme: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        partition_indices(LABELS, 4, scheme, seed=0, **kwargs)


@pytest.mark.parametrize("num_clients", [0, 401])
def test_bad_client_count_raises(num_clients: int) -> None:
    with pytest.raises(ValueError, match="num_clients must be between 1 and the number of rows"):
        partition_indices(LABELS, num_clients, "iid", seed=0)


def test_mixed_puts_half_the_clients_near_the_pooled_labels_and_half_far() -> None:
    parts = partition_indices(LABELS, 6, "mixed", seed=0, alpha=0.1)
    rows = [i for part in parts for i in part]
    assert len(rows) == len(set(rows)) and len(parts) == 6

    def distance_to_pooled(part: list[int]) -> float:
        """Total-variation distance of the client's label distribution to the pooled (uniform) one."""
        p = np.bincount([LABELS[i] for i in part], minlength=10) / len(part)
        return float(np.abs(p - 0.1).sum() / 2)

    near, far = [distance_to_pooled(p) for p in parts[:3]], [distance_to_pooled(p) for p in parts[3:]]
    assert max(near) < 0.2 < min(far), (near, far)
    assert partition_indices(LABELS, 6, "mixed", seed=0, alpha=0.1) == parts


def test_mixed_needs_two_clients_and_a_positive_alpha() -> None:
    with pytest.raises(ValueError, match="at least 2 clients"):
        partition_indices(LABELS, 1, "mixed", seed=0)
    with pytest.raises(ValueError, match="alpha must be > 0"):
        partition_indices(LABELS, 4, "mixed", seed=0, alpha=0.0)
