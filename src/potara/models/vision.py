"""The offline vision setting: a small ViT pretrained centrally on digits 0–4, cached, for LoRA on digits 5–9.

``offline:vit-digits`` (``potara.models.loading.resolve_model_path``) is the directory :func:`vit_digits` returns: the
pretrained ViT *backbone* (``ViTModel``, no head: a new task gets a new head, as with a hub checkpoint
such as ``google/vit-base-patch16-224-in21k``) and its image processor. It is trained once per recipe
(deterministic in the recipe's seed) and cached under ``$POTARA_CACHE`` (default ``~/.cache/potara``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from ..data.encoding import Encoded, encode_images
from ..data.federated import PRETRAIN_DIGITS, load_digits_images

RECIPE_VERSION = 1  # bump when the training code changes what a recipe produces
REPORT = "pretrain.json"


@dataclass(frozen=True)
class ViTDigitsRecipe:
    """Everything that determines the pretrained model; its hash names the cache directory."""

    seed: int = 0
    image_size: int = 16
    patch_size: int = 4
    hidden_size: int = 64
    layers: int = 3
    heads: int = 4
    epochs: int = 30
    lr: float = 2e-3
    batch_size: int = 32
    holdout_fraction: float = 0.2  # of digits 0–4, held out to report the pretrained accuracy

    def key(self) -> str:
        text = json.dumps({"version": RECIPE_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


DEFAULT_RECIPE = ViTDigitsRecipe()  # the recipe behind offline:vit-digits


def cache_root() -> Path:
    return Path(os.environ.get("POTARA_CACHE", "~/.cache/potara")).expanduser()


def vit_digits(recipe: ViTDigitsRecipe | None = None, root: Path | None = None) -> Path:
    """The cached model directory of ``recipe`` (default: ``DEFAULT_RECIPE``); pretrained first when absent,
    written to a temporary directory and renamed into place."""
    recipe = recipe or DEFAULT_RECIPE
    final = (root or cache_root()) / f"vit-digits-{recipe.key()}"
    if (final / REPORT).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        pretrain(recipe, tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not (final / REPORT).is_file():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def pretrain(recipe: ViTDigitsRecipe, out: Path) -> dict:
    """Train a ViT on digits 0–4 (all but a held-out part), save backbone + processor + a report to ``out``."""
    torch.manual_seed(recipe.seed)
    size = {"height": recipe.image_size, "width": recipe.image_size}
    processor = ViTImageProcessorPil(size=size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    digits = load_digits_images(size=8, classes=PRETRAIN_DIGITS)
    order = np.random.default_rng(recipe.seed).permutation(digits.num_rows)
    n_held = round(recipe.holdout_fraction * digits.num_rows)
    held_out = encode_images(processor, digits.select(order[:n_held]))
    train = encode_images(processor, digits.select(order[n_held:]))
    model = ViTForImageClassification(vit_config(recipe, len(PRETRAIN_DIGITS)))
    began = time.perf_counter()
    _fit(model, train, recipe)
    seconds = time.perf_counter() - began
    report = {
        "recipe": dataclasses.asdict(recipe), "classes": list(PRETRAIN_DIGITS), "n_train": len(train),
        "n_heldout": len(held_out), "heldout_acc": _accuracy(model, held_out), "train_seconds": seconds,
        "threads": torch.get_num_threads(),
    }
    model.vit.save_pretrained(out)
    processor.save_pretrained(out)
    (out / REPORT).write_text(json.dumps(report, indent=2))
    return report


def vit_config(recipe: ViTDigitsRecipe, num_labels: int) -> ViTConfig:
    return ViTConfig(
        image_size=recipe.image_size, patch_size=recipe.patch_size, num_channels=3,
        hidden_size=recipe.hidden_size, num_hidden_layers=recipe.layers, num_attention_heads=recipe.heads,
        intermediate_size=2 * recipe.hidden_size, num_labels=num_labels,
    )


def _fit(model: ViTForImageClassification, train, recipe: ViTDigitsRecipe) -> None:
    """AdamW with a cosine learning rate over all steps; shuffling from the recipe's seed."""
    generator = torch.Generator().manual_seed(recipe.seed)
    optim = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05)
    steps = recipe.epochs * -(-len(train) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=steps)
    model.train()
    for _ in range(recipe.epochs):
        for batch in train.batches(recipe.batch_size, generator):
            loss = model(**batch).loss
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            schedule.step()


@torch.inference_mode()
def _accuracy(model: ViTForImageClassification, data: Encoded, batch_size: int = 256) -> float:
    """The pretrained classifier's accuracy on ``data``, in a loop of its own like its training: making the model
    sits below :mod:`potara.training`, which loads models through this package."""
    model.eval()
    inputs = ({k: v for k, v in batch.items() if k != "labels"} for batch in data.batches(batch_size))
    logits = torch.cat([model(**batch).logits.float() for batch in inputs])
    return float((logits.argmax(-1) == data.tensors["labels"]).float().mean())
