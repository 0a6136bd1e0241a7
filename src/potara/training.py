"""Local training and evaluation of the trainable adapter on one client's tensors (nanoGPT-sized)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .encoding import Encoded
from .models import TRAIN_ADAPTER
from .taskvec import AdapterState


@dataclass(frozen=True)
class Budget:
    epochs: int = 1
    steps: int | None = None  # stop after this many optimizer steps when set
    lr: float = 1e-3
    batch_size: int = 16


@dataclass(frozen=True)
class Proximal:
    """Ditto/FedProx-style pull ``μ/2 ‖θ − θ_anchor‖²`` toward an anchor adapter state."""

    anchor: dict[str, Tensor]
    mu: float


def trainable(model: nn.Module, adapter: str = TRAIN_ADAPTER) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad and f".{adapter}." in n}


def train(
    model: nn.Module, data: Encoded, budget: Budget, generator: torch.Generator, proximal: Proximal | None = None
) -> float:
    """Train the active adapter in place with AdamW; return the mean training loss.

    Dropout draws from torch's global generator, so it is reseeded from ``generator`` first: the same
    call gives the same adapter in any process (embedded engine or a Flower node).
    """
    torch.manual_seed(generator.initial_seed())
    params = trainable(model)
    if len(data) == 0:
        return 0.0
    optim = torch.optim.AdamW(params.values(), lr=budget.lr, weight_decay=0.0)
    model.train()
    steps, total = 0, 0.0
    for _ in range(budget.epochs if budget.steps is None else 10**9):
        for batch in data.batches(budget.batch_size, generator):
            loss = model(**on_device(batch, model)).loss
            if proximal is not None:
                loss = loss + _proximal_term(params, proximal)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            steps, total = steps + 1, total + loss.item()
            if budget.steps is not None and steps >= budget.steps:
                return total / steps
    return total / max(steps, 1)


def _proximal_term(params: dict[str, nn.Parameter], prox: Proximal) -> Tensor:
    return 0.5 * prox.mu * sum((p - prox.anchor[n]).pow(2).sum() for n, p in params.items() if n in prox.anchor)


def on_device(batch: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """The batch on the model's device (a no-op on CPU)."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in batch.items()}


@dataclass(frozen=True)
class Evaluation:
    loss: float
    acc: float
    n: int


@torch.inference_mode()
def predict(model: nn.Module, data: Encoded, batch_size: int) -> Tensor:
    """Logits for every example, in order; batches are formed by length so little padding is computed."""
    model.eval()
    order = torch.argsort(data.lengths, stable=True) if data.lengths is not None else torch.arange(len(data))
    sorted_data = data.subset(order)
    batches = sorted_data.batches(batch_size)
    out = [model(**on_device({k: v for k, v in b.items() if k != "labels"}, model)).logits.float().cpu() for b in batches]
    if not out:
        return torch.empty(0)
    logits = torch.cat(out)
    return torch.empty_like(logits).index_copy_(0, order, logits)


def score(logits: Tensor, labels: Tensor) -> Evaluation:
    if labels.numel() == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    loss = nn.functional.cross_entropy(logits, labels)
    acc = (logits.argmax(-1) == labels).float().mean()
    return Evaluation(float(loss), float(acc), int(labels.numel()))


def evaluate(model: nn.Module, data: Encoded, batch_size: int) -> Evaluation:
    return score(predict(model, data, batch_size), data.tensors["labels"])


def state_as_params(state: AdapterState, model: nn.Module) -> dict[str, Tensor]:
    """Map a PEFT state dict onto the trainable parameter names (for proximal anchors)."""
    names = trainable(model)
    out = {}
    for name in names:
        key = name.replace(f".{TRAIN_ADAPTER}.", ".").replace(".modules_to_save.", ".")
        out[name] = state[key]
    return out
