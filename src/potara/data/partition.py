"""Split a labelled dataset's rows across federated clients (a thin layer over flwr-datasets)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import datasets
import numpy as np
from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    NaturalIdPartitioner,
    Partitioner,
    PathologicalPartitioner,
)

SCHEMES = ("classes", "dirichlet", "task", "iid", "mixed")
TOO_RARE = re.compile(r"Label: (\d+) is needed to be assigned to more partitions \((\d+)\).*\((\d+)\)")


class RareLabelError(ValueError):
    """A label has fewer examples than the clients that draw it under the ``classes`` partition."""

    def __init__(self, label: int, clients: int, examples: int) -> None:
        super().__init__(f"label {label} has {examples} example(s) but {clients} clients draw it")
        self.label, self.clients, self.examples = label, clients, examples
MAX_DIRICHLET_MIN_SIZE = 10


def partition_indices(
    labels: Sequence[int],
    num_clients: int,
    scheme: str,
    *,
    seed: int,
    alpha: float = 0.5,
    classes_per_client: int = 4,
    groups: Sequence[int | str] | None = None,
) -> list[list[int]]:
    """Return, for each client, the row indices it holds under `scheme` (deterministic in `seed`)."""
    labels = [int(y) for y in labels]
    groups = None if groups is None else list(groups)
    _check_request(labels, num_clients, scheme, alpha, classes_per_client, groups)
    driver = _driver_dataset(labels, groups, seed)
    if scheme == "mixed":
        return _mixed(driver, num_clients, seed, alpha)
    partitioner = _partitioner(scheme, num_clients, seed, alpha, classes_per_client, len(labels))
    partitioner.dataset = driver
    try:
        return [sorted(partitioner.load_partition(i)["row"]) for i in range(num_clients)]
    except ValueError as err:
        rare = TOO_RARE.search(str(err))
        if rare is None:
            raise
        raise RareLabelError(*(int(g) for g in rare.groups())) from err


def _check_request(
    labels: Sequence[int],
    num_clients: int,
    scheme: str,
    alpha: float,
    classes_per_client: int,
    groups: Sequence[int | str] | None,
) -> None:
    """Raise ValueError, saying what is wrong and what is allowed, for a request that cannot work."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if not 1 <= num_clients <= len(labels):
        raise ValueError(f"num_clients must be between 1 and the number of rows ({len(labels)}), got {num_clients}")
    num_classes = len(set(labels))
    if scheme == "classes" and not 1 <= classes_per_client <= num_classes:
        raise ValueError(
            f"classes_per_client must be between 1 and the number of classes ({num_classes}), "
            f"got {classes_per_client}"
        )
    if scheme == "mixed" and num_clients < 2:
        raise ValueError(f"scheme 'mixed' needs at least 2 clients (half near the pooled data, half far), got {num_clients}")
    if scheme in ("dirichlet", "mixed") and not alpha > 0:
        raise ValueError(f"dirichlet alpha must be > 0 (small = skewed, large = near iid), got {alpha}")
    if scheme == "task":
        _check_groups(groups, len(labels), num_clients)


def _check_groups(groups: Sequence[int | str] | None, num_rows: int, num_clients: int) -> None:
    """Check that `groups` gives one group per row and exactly one group per client."""
    if groups is None:
        raise ValueError("scheme 'task' needs `groups` (one task/source id per row, e.g. a column)")
    if len(groups) != num_rows:
        raise ValueError(f"`groups` has {len(groups)} entries but there are {num_rows} labels")
    distinct = sorted(set(groups), key=str)
    if len(distinct) != num_clients:
        raise ValueError(
            f"scheme 'task' gives one client per group: found {len(distinct)} groups "
            f"({', '.join(map(str, distinct[:10]))}{', ...' if len(distinct) > 10 else ''}) "
            f"but num_clients={num_clients}; set num_clients={len(distinct)}"
        )


def _mixed(driver: datasets.Dataset, num_clients: int, seed: int, alpha: float) -> list[list[int]]:
    """A mixed federation: the first ``num_clients // 2`` clients split their share of the (shuffled) rows IID, so
    each is near the pooled label distribution; the others split the rest by Dirichlet(``alpha``), far from it."""
    near = num_clients // 2
    cut = len(driver) * near // num_clients
    parts = []
    for rows, partitioner in (
        (driver.select(range(cut)), IidPartitioner(num_partitions=near)),
        (driver.select(range(cut, len(driver))), _partitioner("dirichlet", num_clients - near, seed, alpha, 0,
                                                              len(driver) - cut)),
    ):
        partitioner.dataset = rows
        parts += [sorted(partitioner.load_partition(i)["row"]) for i in range(partitioner.num_partitions)]
    return parts


def _driver_dataset(labels: Sequence[int], groups: Sequence[int | str] | None, seed: int) -> datasets.Dataset:
    """Build the tiny (row, label[, group]) dataset the flwr partitioners run on, shuffled by `seed`."""
    order = np.random.default_rng(seed).permutation(len(labels)).tolist()
    columns = {"row": order, "label": [labels[i] for i in order]}
    if groups is not None:
        columns["group"] = [groups[i] for i in order]
    return datasets.Dataset.from_dict(columns)


def _partitioner(
    scheme: str, num_clients: int, seed: int, alpha: float, classes_per_client: int, num_rows: int
) -> Partitioner:
    """Return the flwr-datasets partitioner for `scheme`."""
    if scheme == "classes":
        return PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="random",
            seed=seed,
        )
    if scheme == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min(MAX_DIRICHLET_MIN_SIZE, num_rows // (2 * num_clients)),
            seed=seed,
        )
    if scheme == "task":
        return NaturalIdPartitioner(partition_by="group")
    return IidPartitioner(num_partitions=num_clients)
