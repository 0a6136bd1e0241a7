"""Does LoRA adapt the offline ViT? Digits 5–9, trained centrally, held-out accuracy of four variants.

    .venv/bin/python benchmarks/vision_transfer.py [--epochs 10] [--n-train N] [--threads 1]

``offline:vit-digits`` (pretrained on digits 0–4) with a new head only (backbone frozen), with LoRA on
query/value + head, and the same shape of ViT from random weights with LoRA + head (what pretraining is
worth); plus the frozen random ViT with a head as the floor.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoImageProcessor, ViTModel

from potara.config import LoraSettings, ModelConfig
from potara.data import federated
from potara.data.encoding import encode_images
from potara.models.loading import load_peft_classifier
from potara.models.vision import ViTDigitsRecipe, vit_config, vit_digits
from potara.training.loop import Budget, evaluate, train


def random_twin(pretrained: Path, out: Path) -> Path:
    """A ViT of the recipe's shape with random weights, and the same image processor."""
    torch.manual_seed(0)
    ViTModel(vit_config(ViTDigitsRecipe(), 5), add_pooling_layer=False).save_pretrained(out)
    AutoImageProcessor.from_pretrained(pretrained).save_pretrained(out)
    return out


def accuracy(model_dir: Path, lora: bool, epochs: int, splits) -> float:
    model = load_peft_classifier(ModelConfig(name=str(model_dir)), LoraSettings(r=8, alpha=16, target_modules=["q_proj", "v_proj"]), 5, seed=0)
    if not lora:
        for name, param in model.named_parameters():
            param.requires_grad_(param.requires_grad and "lora_" not in name)
    train(model, splits[0], Budget(epochs=epochs, lr=5e-3, batch_size=16), torch.Generator().manual_seed(0))
    return evaluate(model, splits[1], 256).acc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--n-train", type=int, default=None, help="train on this many examples (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pretrained = vit_digits()
    processor = AutoImageProcessor.from_pretrained(pretrained)
    digits = federated.load_digits_images(size=8, classes=federated.FEDERATED_DIGITS)
    order = np.random.default_rng(0).permutation(digits.num_rows)
    cut = digits.num_rows // 5
    train_rows = order[cut:] if args.n_train is None else order[cut : cut + args.n_train]
    splits = (encode_images(processor, digits.select(train_rows)), encode_images(processor, digits.select(order[:cut])))
    with tempfile.TemporaryDirectory() as tmp:
        scratch = random_twin(pretrained, Path(tmp))
        rows = {
            "pretrained, head only": accuracy(pretrained, False, args.epochs, splits),
            "pretrained, LoRA + head": accuracy(pretrained, True, args.epochs, splits),
            "random init, head only": accuracy(scratch, False, args.epochs, splits),
            "random init, LoRA + head": accuracy(scratch, True, args.epochs, splits),
        }
    print(f"digits 5-9: {len(splits[0])} train / {len(splits[1])} test, {args.epochs} epochs")
    for name, acc in rows.items():
        print(f"| {name} | {acc:.3f} |")


if __name__ == "__main__":
    main()
