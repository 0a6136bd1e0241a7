"""The round records of a bench's cells, ``<suite>-rounds.csv``: one row per (setting, seed, round, federation
or method) with what the communication table and the accuracy-vs-bytes plot read of them.

``kind`` ``federation``: FedIT's federation (``name`` fedit, ``mean_acc`` its global model's accuracy) or a peer's
own (under its name), with the round's bytes up and down, the cumulative ones and the broadcast of the round's
global adapter; ``kind`` ``method``: a method personalized at that round (``fed.eval_every``), its mean
accuracy alone (its bytes are FedIT's). A blank is a value the record did not have.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from ..reporting.communication import FEDIT
from .csv_rows import number, read_rows, write_rows

FEDERATION, METHOD = "federation", "method"
BYTES = ("bytes_up", "bytes_down", "cum_bytes_up", "cum_bytes_down", "broadcast_bytes")
COLUMNS = ("setting", "seed", "round", "kind", "name", *BYTES, "mean_acc")


def round_rows(cells: dict) -> list[dict]:
    """Every round record of ``cells`` (setting → list of ``Cell``) as rows, in order."""
    return [row for setting, group in cells.items() for cell in group for record in cell.rounds
            for row in _rows_of({"setting": setting, "seed": cell.seed, "round": record["round"]}, record)]


def _rows_of(key: dict, record: dict) -> list[dict]:
    rows = [{**key, "kind": FEDERATION, "name": FEDIT, **_bytes(record), "mean_acc": _blank(record.get("fedit_mean_acc"))}]
    rows += [{**key, "kind": FEDERATION, "name": name, **_bytes(part), "mean_acc": _blank(part.get("mean_acc"))}
             for name, part in record.items() if isinstance(part, dict) and "cum_bytes_up" in part]
    rows += [{**key, "kind": METHOD, "name": name, "mean_acc": _blank(acc)}
             for name, acc in record.get("methods", {}).items()]
    return rows


def _bytes(part: dict) -> dict:
    return {k: part.get(k, "") for k in BYTES}


def _blank(value: float | None) -> float | str:
    return "" if value is None else value


def write_rounds(path: str | Path, cells: dict) -> None:
    write_rows(path, COLUMNS, round_rows(cells))


def read_rounds(path: str | Path) -> dict[tuple[str, int], list[dict]]:
    """(setting, seed) → its round records, as the engine wrote them less what the report does not read."""
    records: dict[tuple[str, int], dict[int, dict]] = defaultdict(dict)
    for row in read_rows(path, COLUMNS):
        at = int(row["round"])
        record = records[(row["setting"], int(row["seed"]))].setdefault(at, {"round": at})
        known = {k: number(row[k]) for k in BYTES if row[k]}
        if row["kind"] == METHOD:
            record.setdefault("methods", {})[row["name"]] = number(row["mean_acc"])
        elif row["name"] == FEDIT:
            record.update(known, fedit_mean_acc=number(row["mean_acc"]))
        else:
            record[row["name"]] = {**known, "mean_acc": number(row["mean_acc"])}
    return {cell: list(by_round.values()) for cell, by_round in records.items()}
