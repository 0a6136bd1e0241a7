"""The bench's CSV records on disk: rows written atomically under a fixed header, read back with that header
checked, numbers parsed."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..reporting.outputs import atomic_write


def write_rows(path: str | Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """``rows`` under ``columns`` as a CSV at ``path`` (a missing value blank), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buf.getvalue())


def read_rows(path: str | Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a CSV whose header is ``columns``, then any of ``optional`` in their order (an older file
    may lack them: they read as blank)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        header = tuple(reader.fieldnames or ())
        if header[: len(columns)] != columns or header[len(columns):] != optional[: len(header) - len(columns)]:
            raise ValueError(f"{path}: columns {list(header)}, expected {list(columns + optional)}")
        return [{**dict.fromkeys(optional, ""), **row} for row in reader]


def number(text: str) -> int | float | None:
    """A CSV cell as an int, else a float; None when blank."""
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)
