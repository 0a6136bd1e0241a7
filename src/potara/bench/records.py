"""A bench's committed records, three CSVs a report regenerates from without its cells:
``<suite>-units.csv`` (per client, ``units``), ``<suite>-rounds.csv`` (the round records, ``rounds``) and
``<suite>-cells.csv`` (per method and cell: bytes, compute, the cell's times; ``totals``)."""

from __future__ import annotations

from pathlib import Path

from .cell import Cell
from .rounds import read_rounds, write_rounds
from .totals import CELL_TIMES, COMMIT, COMPUTE, CPU_TIME, by_cell, read_totals, write_totals
from .units import cells_from_units, write_units

UNITS, ROUNDS, TOTALS = "units", "rounds", "cells"


def record_path(folder: Path, suite: str, kind: str) -> Path:
    """``folder/<suite>-<kind>.csv``."""
    return folder / f"{suite}-{kind}.csv"


def beside(units_csv: Path, kind: str) -> Path:
    """The ``kind`` CSV written beside a units CSV (``x-units.csv`` → ``x-<kind>.csv``)."""
    return units_csv.with_name(units_csv.name.removesuffix(f"-{UNITS}.csv") + f"-{kind}.csv")


def write_records(folder: Path, suite: str, cells: dict) -> None:
    """The three CSVs of ``cells`` (setting → list of ``Cell``) into ``folder``."""
    write_units(record_path(folder, suite, UNITS), cells)
    write_rounds(record_path(folder, suite, ROUNDS), cells)
    write_totals(record_path(folder, suite, TOTALS), cells)


def cells_from_records(units_csv: Path) -> dict:
    """The cells a units CSV and the rounds and totals CSVs beside it describe, with everything the report reads
    of them; without those two, no bytes, cell times or round records (see ``cells_from_units``)."""
    cells = cells_from_units(units_csv)
    rounds = read_rounds(beside(units_csv, ROUNDS)) if beside(units_csv, ROUNDS).is_file() else {}
    totals = by_cell(read_totals(beside(units_csv, TOTALS))) if beside(units_csv, TOTALS).is_file() else {}
    return {setting: [_completed(setting, cell, rounds, totals) for cell in group] for setting, group in cells.items()}


def _completed(setting: str, cell: Cell, rounds: dict, totals: dict) -> Cell:
    """``cell`` with its round records, its methods' bytes and compute, and its times."""
    key = (setting, cell.seed)
    for name, row in totals.get(key, {}).items():
        if name in cell.methods:
            cell.methods[name].update(bytes_up=row["bytes_up"], bytes_down=row["bytes_down"],
                                      compute={k: row[k] for k in COMPUTE if row[k] is not None})
    if key in totals:
        row = next(iter(totals[key].values()))
        timing = {k: row[k] for k in (*CELL_TIMES, CPU_TIME) if row.get(k) is not None}
        cell.summary["timing"] = {**{k: v for k, v in cell.summary["timing"].items() if k not in CELL_TIMES}, **timing}
        if row.get(COMMIT):
            cell.summary["code"] = {COMMIT: row[COMMIT]}
        if row.get("epsilon") is not None:
            cell.summary["privacy"] = {"epsilon": row["epsilon"]}
    return Cell(cell.seed, cell.summary, rounds.get(key, []))
