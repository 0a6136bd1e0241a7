"""What client work costs, measured: seconds and example passes through the model.

A pass is one example through the base model's forward: with gradients on it is a training pass
(forward + backward), with gradients off a forward-only pass (evaluation; a causal LM's generation counts
one per decoded token). Counted by a forward pre-hook on the base model, so every caller is seen
(training, Fisher, merges through ``torch.func``, generation) without threading counters through them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

INPUT_KEYS = ("input_ids", "pixel_values", "inputs_embeds")


@dataclass(frozen=True)
class Cost:
    seconds: float = 0.0
    train_passes: int = 0  # forward + backward example passes
    forward_passes: int = 0  # forward-only example passes

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.seconds + other.seconds, self.train_passes + other.train_passes,
                    self.forward_passes + other.forward_passes)

    def __sub__(self, other: Cost) -> Cost:
        return Cost(self.seconds - other.seconds, self.train_passes - other.train_passes,
                    self.forward_passes - other.forward_passes)

    def as_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds, "train_passes": self.train_passes, "forward_passes": self.forward_passes}


class PassMeter:
    """Counts examples through ``model``'s base model while attached; ``paused()`` stops counting for a block."""

    def __init__(self) -> None:
        self.train = 0
        self.forward = 0
        self._paused = 0
        self._paused_s = 0.0

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[PassMeter]:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        handle = base.register_forward_pre_hook(self._count, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Neither passes nor seconds spent in the block count."""
        self._paused += 1
        began = time.perf_counter()
        try:
            yield
        finally:
            self._paused -= 1
            if not self._paused:
                self._paused_s += time.perf_counter() - began

    def now(self) -> Cost:
        """The running total, with the wall clock less paused time, to subtract from a later reading."""
        return Cost(time.perf_counter() - self._paused_s, self.train, self.forward)

    def _count(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._paused:
            return
        n = _batch_size(args, kwargs)
        if torch.is_grad_enabled():
            self.train += n
        else:
            self.forward += n


def _batch_size(args: tuple, kwargs: dict) -> int:
    inputs = next((kwargs[k] for k in INPUT_KEYS if kwargs.get(k) is not None), args[0] if args else None)
    return int(inputs.shape[0]) if isinstance(inputs, torch.Tensor) and inputs.dim() else 0
