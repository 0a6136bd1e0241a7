"""Every number of a bench report, recomputable: one CSV row per (setting, seed, client, method), and the cells
read back from it (``report_from_units`` in ``report`` regenerates the accuracy tables, paired comparisons and
the λ plot from it alone).

Columns: ``n_test`` and ``correct`` (test accuracy = correct / n_test), ``val_acc``, ``lambda`` (the scalar mean λ
when per module, blank when none), ``train_passes`` (the client's training example passes, its share of its
method's federated rounds included, so their mean is the method's compute) and ``personalize_s`` (the method's
personalization seconds on that client). Bytes and per-round accuracies are not per unit: a report regenerated
from this file shows no bytes ("–"), no cell times (NaN) and no communication analysis; its plots size every
client alike (``n_train`` is not a column).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..reporting.outputs import _scalar, atomic_write


@dataclass(frozen=True)
class Cell:
    """One finished (setting, seed) of a bench: its ``summary.json`` and its round records."""

    seed: int
    summary: dict
    rounds: list[dict]

    @property
    def methods(self) -> dict[str, dict]:
        return self.summary["methods"]


CELL_TIMES = ("wall_s", "federation_s", "local_epoch_s")  # per cell, not per unit: NaN when read back
COLUMNS = ("setting", "seed", "client", "method", "n_test", "correct", "val_acc", "lambda", "train_passes",
           "personalize_s")


def unit_rows(cells: dict) -> list[dict]:
    """One row per (setting, seed, client, method) of ``cells`` (setting → list of ``Cell``)."""
    rows = []
    for setting, group in cells.items():
        for cell in group:
            for name, m in cell.methods.items():
                shared = _federated_share(m)
                rows += [_row(setting, cell.seed, name, r, shared) for r in m["per_client"]]
    return rows


def _federated_share(method: dict) -> float:
    """The method's federated training passes per client: its compute less its clients' own mean."""
    own = [r["cost"]["train_passes"] for r in method["per_client"] if "cost" in r]
    total = method.get("compute", {}).get("train_passes")
    return total - sum(own) / len(own) if own and total is not None else 0.0


def _row(setting: str, seed: int, name: str, r: dict, shared: float) -> dict:
    cost = r.get("cost")
    return {
        "setting": setting, "seed": seed, "client": r["client"], "method": name, "n_test": r.get("n_test", ""),
        "correct": r.get("correct", ""), "val_acc": r.get("val_acc", ""),
        "lambda": "" if r.get("lambda") is None else _scalar(r["lambda"]),
        "train_passes": "" if cost is None else cost["train_passes"] + shared,
        "personalize_s": "" if cost is None else cost["seconds"],
    }


def write_units(path: str | Path, cells: dict) -> None:
    """``unit_rows(cells)`` as a CSV at ``path``, written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(unit_rows(cells))
    atomic_write(path, buf.getvalue())


def cells_from_units(path: str | Path) -> dict:
    """The cells (setting → list of ``Cell``) a units CSV describes, with what the report reads of them."""
    rows: dict[tuple[str, int], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(COLUMNS)}: not a units CSV")
        for r in reader:
            rows[(r["setting"], int(r["seed"]))][r["method"]].append(r)
    cells: dict = defaultdict(list)
    for (setting, seed), methods in rows.items():
        summary = {"methods": {name: _method(rs) for name, rs in methods.items()},
                   "timing": {"method_s": {name: _mean(rs, "personalize_s") for name, rs in methods.items()},
                              **dict.fromkeys(CELL_TIMES, math.nan)}}
        cells[setting].append(Cell(seed, summary, []))
    return dict(cells)


def _method(rows: list[dict]) -> dict:
    per_client = [{"client": r["client"], "acc": _acc(r), "val_acc": _float(r["val_acc"]),
                   "lambda": _float(r["lambda"]) if r["lambda"] else None, "n_train": 1} for r in rows]
    accs = [r["acc"] for r in per_client]
    return {"per_client": per_client, "mean_acc": sum(accs) / len(accs), "worst_acc": min(accs),
            "bytes_up": math.nan, "bytes_down": math.nan, "compute": {"train_passes": _mean(rows, "train_passes")}}


def _acc(r: dict) -> float:
    return int(r["correct"]) / int(r["n_test"]) if r["n_test"] and int(r["n_test"]) else math.nan


def _float(text: str) -> float:
    return float(text) if text else math.nan


def _mean(rows: list[dict], key: str) -> float:
    values = [float(r[key]) for r in rows if r[key]]
    return sum(values) / len(values) if values else 0.0
