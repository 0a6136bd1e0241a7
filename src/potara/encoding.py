"""Client splits turned into model-ready tensors once, then served in batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import datasets
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase


@dataclass
class Encoded:
    """Padded input tensors plus ``labels`` for one split; ``lengths`` lets batches trim padding."""

    tensors: dict[str, Tensor]
    lengths: Tensor | None = None

    def __len__(self) -> int:
        return int(self.tensors["labels"].shape[0])

    def to(self, device: torch.device | str) -> Encoded:
        """The same split with its tensors on ``device`` (batches then come out there)."""
        lengths = None if self.lengths is None else self.lengths.to(device)
        return dataclasses.replace(self, tensors={k: v.to(device) for k, v in self.tensors.items()}, lengths=lengths)

    def subset(self, index: Tensor) -> Encoded:
        lengths = None if self.lengths is None else self.lengths[index]
        return dataclasses.replace(self, tensors={k: v[index] for k, v in self.tensors.items()}, lengths=lengths)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[dict[str, Tensor]]:
        """Shuffled when a generator is given, in order otherwise; padding trimmed per batch."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            batch = {k: v[idx] for k, v in self.tensors.items()}
            if self.lengths is not None:
                width = int(self.lengths[idx].max())
                batch = {k: (v[:, :width] if v.dim() == 2 else v) for k, v in batch.items()}  # per-token labels too
            yield batch


def encode_text(tokenizer: PreTrainedTokenizerBase, split: datasets.Dataset, max_length: int) -> Encoded:
    enc = tokenizer(
        list(split["text"]), truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
    )
    tensors = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    tensors["labels"] = torch.tensor(list(split["label"]), dtype=torch.long)
    return Encoded(tensors, tensors["attention_mask"].sum(1).clamp(min=1))
