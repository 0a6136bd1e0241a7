"""Client splits turned into model-ready tensors once, then served in batches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import datasets
import numpy as np
import PIL.Image
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

Batch = dict[str, Tensor]
IMAGE_CHUNK = 1024  # images decoded at a time while encoding


@dataclass
class Encoded:
    """Padded input tensors plus ``labels`` for one split; ``lengths`` lets batches trim padding;
    ``prepare`` turns each batch into model inputs (images: uint8 pixels through the image processor)."""

    tensors: dict[str, Tensor]
    lengths: Tensor | None = None
    prepare: Callable[[Batch], Batch] | None = None

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
            yield batch if self.prepare is None else self.prepare(batch)


def encode_text(tokenizer: PreTrainedTokenizerBase, split: datasets.Dataset, max_length: int) -> Encoded:
    enc = tokenizer(
        list(split["text"]), truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
    )
    tensors = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    tensors["labels"] = torch.tensor(list(split["label"]), dtype=torch.long)
    return Encoded(tensors, tensors["attention_mask"].sum(1).clamp(min=1))


def encode_images(processor, split: datasets.Dataset) -> Encoded:
    """Images kept as uint8 RGB ``(N, H, W, 3)`` at their own size; ``processor`` (resize, normalize) runs per
    batch into ``pixel_values``, so a split costs H·W·3 bytes per image, not the model's float input size."""
    arrays = [_as_uint8_rgb(image) for chunk in split.with_format("numpy").iter(IMAGE_CHUNK) for image in chunk["image"]]
    if len({a.shape for a in arrays}) > 1:
        arrays = [_resized(a, _output_size(processor, arrays[0])) for a in arrays]
    pixels = torch.from_numpy(np.stack(arrays)) if arrays else torch.empty(0, 1, 1, 3, dtype=torch.uint8)
    labels = torch.tensor(list(split["label"]), dtype=torch.long)
    return Encoded({"pixel_values": pixels, "labels": labels}, prepare=_image_preparer(processor))


def _image_preparer(processor) -> Callable[[Batch], Batch]:
    def prepare(batch: Batch) -> Batch:
        images = list(batch["pixel_values"].numpy())
        pixel_values = processor(images=images, input_data_format="channels_last", return_tensors="pt")["pixel_values"]
        return {**batch, "pixel_values": pixel_values}

    return prepare


def _as_uint8_rgb(image) -> np.ndarray:
    """A PIL image or an array (HW, HWC or CHW; uint8, or float in [0, 1]) as uint8 ``(H, W, 3)``."""
    if isinstance(image, PIL.Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(np.rint(array.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(1, 2, 0)
    return np.ascontiguousarray(np.broadcast_to(array, (*array.shape[:2], 3)))


def _output_size(processor, example: np.ndarray) -> tuple[int, int]:
    """(height, width) of the processor's output, for storing images of mixed sizes at one size."""
    shape = processor(images=[example], input_data_format="channels_last", return_tensors="pt")["pixel_values"].shape
    return int(shape[-2]), int(shape[-1])


def _resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(PIL.Image.fromarray(array).resize((size[1], size[0]), PIL.Image.BILINEAR))
