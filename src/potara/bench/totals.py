"""Per (setting, seed, method) totals of a bench, ``<suite>-cells.csv``: what the report reads of a cell that is
not per client. A method's bytes up and down (its federation's, final broadcast included), its mean client
compute as ``summary.json`` has it (``train_passes``, ``forward_passes``, ``seconds``: federated rounds and own
personalization) with the part of it spent in its federation's rounds (``federated_passes``, ``federated_s``),
and ``federation``: the one it personalizes from (blank: none; ``fedit``: the shared FedIT federation; its own
name: a federation of its own, Ditto's or FFA-LoRA's). The cell's times (``wall_s``, ``federation_s``,
``local_epoch_s``), its client-level DP ``epsilon`` (blank: no DP) and ``cpu_s`` (the bench process's CPU seconds
on the cell, every thread; blank for a cell run before it was recorded) and ``commit``, the code that ran it
(``potara.reporting.provenance``; blank for a cell run before it was recorded), repeat on each of its methods' rows.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..reporting.communication import FEDIT
from .cell import Cell
from .csv_rows import number, read_rows, write_rows

CELL_TIMES = ("wall_s", "federation_s", "local_epoch_s")
CPU_TIME = "cpu_s"  # the bench process's CPU seconds for the cell (summary.json timing), where recorded
COMPUTE = ("train_passes", "forward_passes", "seconds")
COLUMNS = ("setting", "seed", "method", "federation", "bytes_up", "bytes_down", *COMPUTE, "federated_passes",
           "federated_s", *CELL_TIMES)
COMMIT = "commit"  # the code that ran the cell (summary.json ``code``), where recorded
OPTIONAL = ("epsilon", CPU_TIME, COMMIT)  # after the required columns; an older file lacks them
TEXT = ("setting", "method", "federation", COMMIT)


def federated_share(method: dict, key: str) -> float:
    """The method's mean client ``key`` (``train_passes`` or ``seconds``) spent in its federation's rounds: its
    compute less its clients' own mean personalization."""
    own = [r["cost"][key] for r in method["per_client"] if "cost" in r]
    total = method.get("compute", {}).get(key)
    return total - sum(own) / len(own) if own and total is not None else 0.0


def federation_of(cell: Cell, name: str) -> str:
    """The federation ``name`` personalizes from in ``cell``: as its summary records it, else (a cell run before it
    was recorded) '' for none, its own name when its round records are under its name, else FedIT's."""
    recorded = cell.methods[name].get("federation")
    if recorded is not None:
        return recorded
    if not cell.methods[name].get("rounds"):
        return ""
    return name if any(isinstance(r.get(name), dict) for r in cell.rounds) else FEDIT


def total_rows(cells: dict) -> list[dict]:
    """One row per (setting, seed, method) of ``cells`` (setting → list of ``Cell``)."""
    rows = []
    for setting, group in cells.items():
        for cell in group:
            times = {k: cell.summary.get("timing", {}).get(k, "") for k in CELL_TIMES}
            epsilon = cell.summary.get("privacy", {}).get("epsilon", "")
            cpu = cell.summary.get("timing", {}).get(CPU_TIME, "")
            commit = cell.summary.get("code", {}).get(COMMIT, "")
            for name, m in cell.methods.items():
                compute = {k: m.get("compute", {}).get(k, "") for k in COMPUTE}
                rows.append({"setting": setting, "seed": cell.seed, "method": name,
                             "federation": federation_of(cell, name), "bytes_up": m["bytes_up"],
                             "bytes_down": m["bytes_down"], **compute,
                             "federated_passes": federated_share(m, "train_passes"),
                             "federated_s": federated_share(m, "seconds"), **times, "epsilon": epsilon, CPU_TIME: cpu,
                             COMMIT: commit})
    return rows


def write_totals(path: str | Path, cells: dict) -> None:
    write_rows(path, COLUMNS + OPTIONAL, total_rows(cells))


def read_totals(path: str | Path) -> list[dict]:
    """``total_rows`` as written at ``path``: numbers parsed (None when blank), ``seed`` an int."""
    return [{k: v if k in TEXT else number(v) for k, v in row.items()}
            for row in read_rows(path, COLUMNS, OPTIONAL)]


def by_cell(rows: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    """``rows`` as (setting, seed) → method → row."""
    out: dict[tuple[str, int], dict[str, dict]] = defaultdict(dict)
    for row in rows:
        out[(row["setting"], row["seed"])][row["method"]] = row
    return dict(out)
