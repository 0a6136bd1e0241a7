"""``potara predict``: a saved PEFT adapter's label names for texts, loaded as plain transformers + PEFT load it."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ..data.precheck import read_rows
from ..models.adapters import input_length, read_labels
from .merge import read_adapter


def load_classifier(adapter: Path) -> tuple[PeftModel, AutoTokenizer, list[str]]:
    """The base model named in the adapter's config with the adapter on it, its tokenizer, and its label names."""
    config, tensors = read_adapter(adapter)
    names = read_labels(adapter) or _id_names(tensors)
    base_name = config["base_model_name_or_path"]
    base = AutoModelForSequenceClassification.from_pretrained(
        base_name, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    return PeftModel.from_pretrained(base, str(adapter)).eval(), AutoTokenizer.from_pretrained(base_name), names


def _id_names(tensors: dict) -> list[str]:
    """Label ids as names, for an adapter saved without ``labels.json`` (its head's size)."""
    heads = [v for k, v in tensors.items() if k.endswith(("classifier.weight", "score.weight"))]
    if not heads:
        raise ValueError("the adapter has neither labels.json nor a classifier head; it is not a classifier adapter")
    return [str(i) for i in range(heads[0].shape[0])]


@torch.no_grad()
def predict(adapter: Path, texts: list[str], max_length: int | None = None, batch_size: int = 32) -> list[str]:
    """The adapter's label name for each text, truncated at ``max_length`` tokens (default: the length the adapter
    was trained at, from its labels.json, else a run's default)."""
    max_length = input_length(adapter, max_length)
    model, tokenizer, names = load_classifier(adapter)
    out = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length,
                          padding=True, return_tensors="pt")
        out += [names[i] for i in model(**batch).logits.argmax(-1).tolist()]
    return out


def texts_of(path: Path, column: str) -> tuple[list[str], list[str] | None]:
    """A data file's texts, and its labels as strings when it has a ``label`` column."""
    rows = read_rows(path)
    if column not in rows[0]:
        raise ValueError(f"data file {path} has no column {column!r}; pass --text-column, one of: {', '.join(rows[0])}")
    labels = [str(r["label"]) for r in rows] if all("label" in r for r in rows) else None
    return [str(r[column]) for r in rows], labels
