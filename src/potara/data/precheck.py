"""A local data file checked in a blink, with the standard library alone: before torch, transformers or the model load.

Reads a csv / json / jsonl source the way a run will, and answers the mistakes a hand-made file has (wrong
encoding, a header and no rows, no label column, blank texts, a label too rare to split) in potara's words.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from ..config import DataConfig

TEXT_FORMATS = {".csv", ".json", ".jsonl"}
LABEL_LIKE_NAMES = ("label", "labels", "class", "category", "topic", "target", "y", "intent", "sentiment")


class DataFileError(ValueError):
    """A data file a run cannot use; the message says what is wrong and which key or edit fixes it."""


def check_source(data: DataConfig) -> None:
    """Check ``data.source`` when it is a local csv/json/jsonl file; other sources are checked as they load."""
    path = Path(data.source)
    if path.suffix not in TEXT_FORMATS or data.source.startswith(("hf:", "suite:")):
        return
    if not path.is_file():
        raise DataFileError(f"data file {path} not found (or not a file); check data.source")
    rows = read_rows(path)
    check_rows(rows, path, data)


def read_rows(path: Path) -> list[dict]:
    """The file's rows as dicts (csv: every value a string), with errors that name the fix."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataFileError(f"data file {path} is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataFileError(
            f"data file {path} is not UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in.csv > out.csv`)"
        ) from err
    rows = _csv_rows(text) if path.suffix == ".csv" else _json_rows(text, path)
    if not rows:
        raise DataFileError(f"data file {path} has a header but no rows; add examples below it")
    return rows


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(text.splitlines()))


def _json_rows(text: str, path: Path) -> list[dict]:
    """A JSON list of objects, or JSON lines (one object a line)."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise DataFileError(f"data file {path} is not valid JSON: {err}") from err
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataFileError(f"data file {path}, line {number}: not a JSON object ({err})") from err
    if not all(isinstance(row, dict) for row in rows):
        raise DataFileError(f"data file {path}: every row must be a JSON object with a text and a label")
    return rows


def check_rows(rows: list[dict], path: Path, data: DataConfig) -> None:
    """Columns, blank texts and rare labels of a file's rows."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    label = data.label_column
    if label not in columns:
        raise DataFileError(f"data file {path} has no label column {label!r}; {_label_hint(rows, columns)}")
    others = [c for c in columns if c != label]
    text = data.text_column or ("text" if "text" in columns else next(iter(others), "text"))  # as the loader guesses
    if text not in columns:
        raise DataFileError(
            f"data file {path} has no text column {text!r}; set data.text_column to one of: {', '.join(others)}"
        )
    _check_texts(rows, path, text)
    _check_labels(rows, path, label, data)


def _label_hint(rows: list[dict], columns: list[str]) -> str:
    """Which ``data.label_column`` to set: a column named like labels, else one with few distinct values."""
    named = [c for c in columns if c.strip().lower() in LABEL_LIKE_NAMES]
    few = [c for c in columns if 1 < len({str(r.get(c)) for r in rows}) <= max(2, len(rows) // 3)]
    guess = (named + few)[:1]
    if guess:
        return f"column {guess[0]!r} looks like labels: --set data.label_column={guess[0]}"
    return f"set data.label_column to one of: {', '.join(columns)}"


def _check_texts(rows: list[dict], path: Path, column: str) -> None:
    blank = [i for i, row in enumerate(rows, 1) if isinstance(row.get(column), str) and not row[column].strip()]
    if blank:
        raise DataFileError(
            f"data file {path}: {len(blank)} row(s) have an empty or whitespace-only {column!r} "
            f"(first: row {blank[0]}); fill or drop them"
        )


def _check_labels(rows: list[dict], path: Path, column: str, data: DataConfig) -> None:
    """Every label has at least two examples (one cannot be split between clients, or train and test)."""
    counts = Counter(str(row.get(column)) for row in rows if row.get(column) not in (None, ""))
    rare = sorted(name for name, n in counts.items() if n < 2)
    if rare and data.partition != "task":
        raise DataFileError(
            f"data file {path}: label {rare[0]!r} has only {counts[rare[0]]} example; add examples of it or drop "
            f"it, or draw it for fewer clients (data.num_clients={data.num_clients}, "
            f"data.classes_per_client={data.classes_per_client})"
        )
