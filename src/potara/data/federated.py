"""Datasets (fortunes, Hugging Face, local files, digits) and their split into federated client tasks."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np

from .partition import RareLabelError, partition_indices

FORTUNES_ROOT = "/usr/share/games/fortunes"
FORTUNE_SEPARATOR = re.compile(r"^%[ \t\r]*$", flags=re.MULTILINE)
OVERSTRIKE = re.compile(r".\x08")
MIN_QUOTE_CHARS = 20
MAX_CLASSES = 100_000  # integer labels are class ids below this
LOCAL_FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
IMAGE_FEATURES = (datasets.Image, datasets.Array2D, datasets.Array3D)
PRETRAIN_DIGITS = (0, 1, 2, 3, 4)  # the offline ViT is pretrained on these (potara.models.vision) ...
FEDERATED_DIGITS = (5, 6, 7, 8, 9)  # ... and data source "digits" federates these


@dataclass
class ClientTask:
    """One client's data: train (for training), val (held out from every training; only for choosing λ), test."""

    name: str
    train: datasets.Dataset
    val: datasets.Dataset
    test: datasets.Dataset

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return self.train.num_rows


@dataclass
class FederatedData:
    """All clients' tasks, with the shared label names and the name of the input column."""

    clients: list[ClientTask]
    label_names: list[str]
    input_column: str


def load_fortunes(root: str | Path = FORTUNES_ROOT, min_quotes: int = 400) -> datasets.Dataset:
    """Load Debian `fortunes` as (text, label=category), keeping categories with >= `min_quotes` quotes."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"fortunes directory {root} not found; install it with `apt-get install fortunes` (Debian/Ubuntu)"
        )
    quotes = {p.name: _read_quotes(p) for p in sorted(root.iterdir()) if _is_fortune_file(p)}
    seen_in = Counter(q for qs in quotes.values() for q in qs)
    kept = {name: [q for q in qs if seen_in[q] == 1] for name, qs in quotes.items()}
    names = [name for name, qs in kept.items() if len(qs) >= min_quotes]
    if not names:
        raise ValueError(f"no fortunes category in {root} has >= {min_quotes} quotes; lower min_quotes")
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    rows = [(q, label) for label, name in enumerate(names) for q in kept[name]]
    return datasets.Dataset.from_dict(
        {"text": [q for q, _ in rows], "label": [y for _, y in rows]}, features=features
    )


def _is_fortune_file(path: Path) -> bool:
    """True for a fortune category file (not an index `.dat`, a `.u8` link or a subdirectory like `off/`)."""
    return path.is_file() and path.suffix not in (".dat", ".u8")


def _read_quotes(path: Path) -> list[str]:
    """Return a file's distinct quotes, overstrikes removed and whitespace normalised, dropping short ones."""
    text = OVERSTRIKE.sub("", path.read_text(encoding="utf-8", errors="replace"))
    quotes = (" ".join(q.split()) for q in FORTUNE_SEPARATOR.split(text))
    return list(dict.fromkeys(q for q in quotes if len(q) >= MIN_QUOTE_CHARS))


def load_hf_dataset(
    name: str,
    split: str = "train",
    *,
    text_column: str | None = None,
    label_column: str = "label",
    config_name: str | None = None,
) -> datasets.Dataset:
    """Load a Hugging Face dataset split, normalised to ("text" or "image", "label" int) columns."""
    ds = datasets.load_dataset(name, config_name, split=split)
    return normalize_columns(ds, text_column=text_column, label_column=label_column, source=name)


def load_local_files(
    path: str | Path, *, text_column: str = "text", label_column: str = "label", label_names: list[str] | None = None
) -> datasets.Dataset:
    """Load a csv / json / jsonl / parquet file, normalised to ("text" or "image", "label" int) columns; with
    ``label_names``, string labels get those names' ids (a model's labels), not ids of their own."""
    path = Path(path)
    if path.suffix not in LOCAL_FORMATS:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found (or not a file)")
    if path.stat().st_size == 0:
        raise ValueError(f"data file {path} is empty")
    kind = LOCAL_FORMATS[path.suffix]
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # the readers raise many types for a bad file (DatasetGenerationError, ArrowInvalid, ...)
        raise ValueError(f"data file {path} is not readable as {kind}: {_root_cause(err)}") from err
    return normalize_columns(ds, text_column=text_column, label_column=label_column, source=str(path),
                             label_names=label_names)


def _root_cause(err: BaseException) -> str:
    """The innermost error behind ``err`` (what the reader found wrong), on one line."""
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__
    return " ".join(f"{type(err).__name__}: {err}".split())


def normalize_columns(
    ds: datasets.Dataset, *, text_column: str | None = None, label_column: str = "label", source: str = "dataset",
    label_names: list[str] | None = None,
) -> datasets.Dataset:
    """Keep the input and label columns, renamed to "text"/"image" and "label", string labels encoded as ints."""
    input_column = text_column or _guess_input_column(ds, label_column, source)
    for column in (input_column, label_column):
        if column not in ds.column_names:
            raise ValueError(f"{source}: no column {column!r}; available columns: {', '.join(ds.column_names)}")
    target = "image" if isinstance(ds.features[input_column], IMAGE_FEATURES) else "text"
    ds = ds.select_columns([input_column, label_column])
    _check_rows(ds, input_column if target == "text" else None, label_column, source)
    renames = {old: new for old, new in ((input_column, target), (label_column, "label")) if old != new}
    ds = ds.rename_columns(renames) if renames else ds
    if _is_string_column(ds, "label"):
        ds = ds.class_encode_column("label") if label_names is None else _encode_by_name(ds, label_names, source)
    _check_label_ids(ds, source)
    if label_names is not None and max(ds["label"]) >= len(label_names):
        raise ValueError(f"{source}: label id {max(ds['label'])} is not one of the model's {len(label_names)} labels")
    return ds


def _encode_by_name(ds: datasets.Dataset, names: list[str], source: str) -> datasets.Dataset:
    """String labels as the ids ``names`` gives them; a name not among them is an error."""
    unknown = sorted(set(ds["label"]) - set(names))
    if unknown:
        raise ValueError(
            f"{source}: label(s) {', '.join(map(repr, unknown[:5]))} are not among the model's labels "
            f"({', '.join(names)}); drop those rows or use the adapter trained on them"
        )
    ids = {name: i for i, name in enumerate(names)}
    features = ds.features.copy()
    features["label"] = datasets.ClassLabel(names=names)
    return ds.map(lambda rows: {"label": [ids[y] for y in rows["label"]]}, batched=True, features=features)


def _check_rows(ds: datasets.Dataset, text_column: str | None, label_column: str, source: str) -> None:
    """Rows, each with a label and an input, a string where the input is text (``text_column``)."""
    if ds.num_rows == 0:
        raise ValueError(f"{source}: no rows")
    if text_column is not None and not _is_string_column(ds, text_column):
        raise ValueError(f"{source}: input column {text_column!r} holds {ds.features[text_column]}, not text")
    for column in ds.column_names:
        missing = ds.data.column(column).null_count
        if missing:
            raise ValueError(f"{source}: {missing} row(s) have no value in column {column!r}; fill or drop them")
    blank = sum(1 for text in ds[text_column] if not text.strip()) if text_column is not None else 0
    if blank:
        raise ValueError(f"{source}: {blank} row(s) have an empty or whitespace-only {text_column!r}; fill or drop them")


def _check_label_ids(ds: datasets.Dataset, source: str) -> None:
    """Labels are class ids 0..n-1: n the named classes, or for plain integers at most ``MAX_CLASSES`` (a
    classifier head has a row per id up to the largest; a larger id is a mislabelled row)."""
    feature = ds.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        classes = feature.num_classes
    elif isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        classes = MAX_CLASSES
    else:
        raise ValueError(f"{source}: labels must be class names or integer class ids, got {feature}")
    low, high = min(ds["label"]), max(ds["label"])
    if low < 0 or high >= classes:
        raise ValueError(
            f"{source}: label {low if low < 0 else high} is not a class id in 0..{classes - 1}; "
            "use ids 0..n-1 or class names"
        )


def _guess_input_column(ds: datasets.Dataset, label_column: str, source: str) -> str:
    """Pick the input column: "text", else the first image column, else the first string column."""
    if "text" in ds.column_names:
        return "text"
    candidates = [c for c in ds.column_names if c != label_column]
    images = [c for c in candidates if isinstance(ds.features[c], IMAGE_FEATURES)]
    strings = [c for c in candidates if _is_string_column(ds, c)]
    if not images + strings:
        raise ValueError(
            f"{source}: cannot tell which column is the input; pass text_column= one of {', '.join(ds.column_names)}"
        )
    return (images + strings)[0]


def _is_string_column(ds: datasets.Dataset, column: str) -> bool:
    """True if `column` holds plain strings."""
    feature = ds.features[column]
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def load_digits_images(size: int = 32, classes: Sequence[int] = tuple(range(10))) -> datasets.Dataset:
    """Load scikit-learn's 8x8 digits as (image: float32 (3, size, size) in [0, 1], label) rows.

    Only the digits in ``classes`` are kept, relabelled ``0..k-1`` in that order (the label names stay the digits).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("load_digits_images needs scikit-learn: pip install scikit-learn") from err
    digits = load_digits()
    keep = np.isin(digits.target, classes)
    pixels = (np.arange(size) * 8) // size  # nearest-neighbour upscaling
    gray = (digits.images[keep][:, pixels][:, :, pixels] / 16.0).astype(np.float32)
    images = np.repeat(gray[:, None], 3, axis=1)
    relabel = {digit: i for i, digit in enumerate(classes)}
    features = datasets.Features(
        {
            "image": datasets.Array3D(shape=(3, size, size), dtype="float32"),
            "label": datasets.ClassLabel(names=[str(d) for d in classes]),
        }
    )
    labels = [relabel[int(y)] for y in digits.target[keep]]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def make_clients(
    ds: datasets.Dataset,
    *,
    num_clients: int,
    scheme: str,
    seed: int,
    alpha: float = 0.5,
    classes_per_client: int = 4,
    group_column: str | None = None,
    train_sizes: tuple[int, int] | None = (15, 200),
    test_size: int = 100,
    val_fraction: float = 0.2,
    min_val: int = 3,
) -> FederatedData:
    """Partition `ds` into clients, each with a test split, a size-heterogeneous train split and a validation split."""
    columns = _kept_columns(ds)
    if scheme == "task" and group_column is None:
        raise ValueError("scheme 'task' needs group_column= (the column naming each row's task/source)")
    groups = list(ds[group_column]) if group_column is not None else None
    labels = ds["label"] if "label" in columns else [0] * ds.num_rows
    try:
        parts = partition_indices(
            labels, num_clients, scheme, seed=seed, alpha=alpha, classes_per_client=classes_per_client, groups=groups
        )
    except RareLabelError as err:
        raise ValueError(
            f"label {_label_names(ds)[err.label]!r} has {err.examples} example(s), too few to split between the clients that draw it; "
            f"add examples of it or drop it, or lower data.num_clients ({num_clients}) or data.classes_per_client "
            f"({classes_per_client})"
        ) from err
    targets = _target_sizes(num_clients, train_sizes, seed)
    rows = ds.select_columns(columns)
    clients = [
        _make_client(
            rows, _client_name(i, part, groups if scheme == "task" else None), part, target,
            np.random.default_rng([seed, i]), test_size, val_fraction, min_val,
        )
        for i, (part, target) in enumerate(zip(parts, targets))
    ]
    label_names = _label_names(ds) if "label" in columns else []
    return FederatedData(clients=clients, label_names=label_names, input_column=columns[0])


def _client_name(index: int, part: list[int], groups: list | None) -> str:
    """``client_<i>``, and under the task scheme ``client_<i>_<task>`` so results name each client's task."""
    if groups is None or not part:
        return f"client_{index:02d}"
    return f"client_{index:02d}_" + re.sub(r"[^\w.-]", "_", str(groups[part[0]]))


def _kept_columns(ds: datasets.Dataset) -> list[str]:
    """["prompt", "target"] for causal-LM data, else ["image" or "text", "label"], checking they exist."""
    if {"prompt", "target"} <= set(ds.column_names):
        return ["prompt", "target"]
    inputs = [c for c in ("image", "text") if c in ds.column_names]
    if not inputs or "label" not in ds.column_names:
        raise ValueError(
            f"dataset needs a 'text' or 'image' column and a 'label' column (see normalize_columns), "
            f"or 'prompt' and 'target' columns (causal LM); it has: {', '.join(ds.column_names)}"
        )
    return [inputs[0], "label"]


def _target_sizes(num_clients: int, train_sizes: tuple[int, int] | None, seed: int) -> list[int | None]:
    """Per-client non-test sizes: geometric spacing from lo to hi, shuffled across clients by `seed`."""
    if train_sizes is None:
        return [None] * num_clients
    lo, hi = train_sizes
    if not 1 <= lo <= hi:
        raise ValueError(f"train_sizes must be (lo, hi) with 1 <= lo <= hi, got {train_sizes}")
    sizes = np.round(np.geomspace(lo, hi, num_clients)).astype(int)
    return np.random.default_rng(seed).permutation(sizes).tolist()


def _make_client(
    rows: datasets.Dataset,
    name: str,
    indices: list[int],
    target: int | None,
    rng: np.random.Generator,
    test_size: int,
    val_fraction: float,
    min_val: int,
) -> ClientTask:
    """Shuffle a client's rows and cut them into test, then (subsampled) val and train."""
    order = rng.permutation(indices)
    n_test = min(test_size, len(order) // 3)
    pool = order[n_test:] if target is None else order[n_test : n_test + target]
    n_val = max(min_val, round(val_fraction * len(pool)))
    test, val, train = order[:n_test], pool[:n_val], pool[n_val:]
    if len(train) == 0:
        raise ValueError(
            f"{name} has no training examples ({len(order)} rows: {n_test} test, {len(val)} validation); "
            f"use fewer clients or a larger dataset"
        )
    return ClientTask(name=name, train=rows.select(train), val=rows.select(val), test=rows.select(test))


def _label_names(ds: datasets.Dataset) -> list[str]:
    """Class names from a ClassLabel "label" column, else the label ids as strings."""
    feature = ds.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return [str(y) for y in range(max(ds["label"]) + 1)]
