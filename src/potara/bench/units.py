"""Every number of a bench report, recomputable: one CSV row per (setting, seed, client, method), and the cells
read back from it (``report_from_units`` in ``report`` regenerates the report from it, with the rounds and
totals CSVs beside it: ``records``).

Columns: ``n_test`` and ``correct`` (test accuracy = correct / n_test), ``val_acc``, ``lambda`` (the scalar mean λ
when per module, blank when none), ``train_passes`` (the client's training example passes, its share of its
method's federated rounds included, so their mean is the method's compute) and ``personalize_s`` (the method's
personalization seconds on that client); then ``acc`` (the test accuracy as the engine measured it, in float32
for a classifier: correct / n_test up to rounding, read back so that the report is the same to the last digit)
``n_train`` (the client's training examples, for the plots) and ``label_skew`` (its label distribution's distance
to the federation's, ``potara.data.profile``; blank for a cell run before it was recorded).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from ..reporting.outputs import mean_lambda
from .cell import Cell
from .csv_rows import read_rows, write_rows
from .totals import CELL_TIMES, federated_share

COLUMNS = ("setting", "seed", "client", "method", "n_test", "correct", "val_acc", "lambda", "train_passes",
           "personalize_s")
EXTRA_COLUMNS = ("acc", "n_train", "label_skew")  # after the required ones; an older file may lack them

__all__ = ["COLUMNS", "EXTRA_COLUMNS", "Cell", "cells_from_units", "unit_rows", "write_units"]


def unit_rows(cells: dict) -> list[dict]:
    """One row per (setting, seed, client, method) of ``cells`` (setting → list of ``Cell``)."""
    rows = []
    for setting, group in cells.items():
        for cell in group:
            skews = {c: p["label_skew"] for c, p in cell.summary.get("federation", {}).get("clients", {}).items()}
            for name, m in cell.methods.items():
                shared = federated_share(m, "train_passes")
                rows += [_row(setting, cell.seed, name, r, shared, skews.get(r["client"], "")) for r in m["per_client"]]
    return rows


def _row(setting: str, seed: int, name: str, r: dict, shared: float, skew: float | str) -> dict:
    cost = r.get("cost")
    return {
        "setting": setting, "seed": seed, "client": r["client"], "method": name, "n_test": r.get("n_test", ""),
        "correct": r.get("correct", ""), "val_acc": r.get("val_acc", ""),
        "lambda": "" if r.get("lambda") is None else mean_lambda(r["lambda"]),
        "train_passes": "" if cost is None else cost["train_passes"] + shared,
        "personalize_s": "" if cost is None else cost["seconds"],
        "acc": r["acc"], "n_train": r.get("n_train", ""), "label_skew": skew,
    }


def write_units(path: str | Path, cells: dict) -> None:
    """``unit_rows(cells)`` as a CSV at ``path``, written atomically."""
    write_rows(path, COLUMNS + EXTRA_COLUMNS, unit_rows(cells))


def cells_from_units(path: str | Path) -> dict:
    """The cells (setting → list of ``Cell``) a units CSV describes, with what the report reads of them: no
    bytes (NaN), no cell times (NaN), no round records."""
    rows: dict[tuple[str, int], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    try:
        read = read_rows(path, COLUMNS, EXTRA_COLUMNS)
    except ValueError as err:
        raise ValueError(f"{err}: not a units CSV") from err
    for r in read:
        rows[(r["setting"], int(r["seed"]))][r["method"]].append(r)
    cells: dict = defaultdict(list)
    for (setting, seed), methods in rows.items():
        summary = {"methods": {name: _method(rs) for name, rs in methods.items()},
                   "timing": {"method_s": {name: _mean(rs, "personalize_s") for name, rs in methods.items()},
                              **dict.fromkeys(CELL_TIMES, math.nan)}}
        skews = {r["client"]: {"n_train": int(r["n_train"]), "label_skew": float(r["label_skew"])}
                 for rs in methods.values() for r in rs if r["label_skew"] and r["n_train"]}
        summary.update({"federation": {"clients": skews}} if skews else {})
        cells[setting].append(Cell(seed, summary, []))
    return dict(cells)


def _method(rows: list[dict]) -> dict:
    per_client = [{"client": r["client"], "acc": _acc(r), "val_acc": _float(r["val_acc"]),
                   "lambda": _float(r["lambda"]) if r["lambda"] else None,
                   "n_train": int(r["n_train"]) if r["n_train"] else None} for r in rows]  # blank: not recorded
    accs = [r["acc"] for r in per_client]
    return {"per_client": per_client, "mean_acc": sum(accs) / len(accs), "worst_acc": min(accs),
            "bytes_up": math.nan, "bytes_down": math.nan, "compute": {"train_passes": _mean(rows, "train_passes")}}


def _acc(r: dict) -> float:
    if r["acc"]:
        return float(r["acc"])
    return int(r["correct"]) / int(r["n_test"]) if r["n_test"] and int(r["n_test"]) else math.nan


def _float(text: str) -> float:
    return float(text) if text else math.nan


def _mean(rows: list[dict], key: str) -> float:
    values = [float(r[key]) for r in rows if r[key]]
    return sum(values) / len(values) if values else 0.0
