"""Local training and evaluation of the trainable adapter on one client's tensors (nanoGPT-sized)."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.encoding import Encoded
from ..merge.taskvec import AdapterState
from ..models.loading import MERGE_ADAPTER, TRAIN_ADAPTER

_NAMED: weakref.WeakKeyDictionary[nn.Module, dict[str, dict[str, nn.Parameter]]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Budget:
    epochs: int = 1
    steps: int | None = None  # stop after this many optimizer steps when set
    lr: float = 1e-3
    batch_size: int = 16
    head_lr_scale: float = 1.0  # lr multiple for the trainable non-LoRA tensors (PEFT's modules_to_save)


@dataclass(frozen=True)
class Proximal:
    """Ditto/FedProx-style pull ``μ/2 ‖θ − θ_anchor‖²`` toward an anchor adapter state."""

    anchor: dict[str, Tensor]
    mu: float


def trainable(model: nn.Module, adapter: str = TRAIN_ADAPTER) -> dict[str, nn.Parameter]:
    """``adapter``'s parameters that require a gradient now, by name (the walk of the model is cached)."""
    return {n: p for n, p in adapter_named_parameters(model, adapter).items() if p.requires_grad}


def adapter_named_parameters(model: nn.Module, adapter: str) -> dict[str, nn.Parameter]:
    """Every parameter of ``adapter`` by name, found by one walk of the model per model and adapter."""
    per_model = _NAMED.setdefault(model, {})
    if adapter not in per_model:
        per_model[adapter] = {n: p for n, p in model.named_parameters() if f".{adapter}." in n}
    return per_model[adapter]


def state_key(name: str, adapter: str = TRAIN_ADAPTER) -> str:
    """The PEFT state-dict key (as in :func:`potara.models.adapters.get_state`) of parameter ``name`` of ``adapter``."""
    return name.replace(f".{adapter}.", ".").replace(".modules_to_save.", ".")


def train(
    model: nn.Module, data: Encoded, budget: Budget, generator: torch.Generator, proximal: Proximal | None = None,
    trains: Callable[[str], bool] | None = None, after_epoch: Callable[[int], None] | None = None,
) -> float:
    """Train the active adapter in place with AdamW; return the mean training loss.

    ``trains(key)`` false keeps tensor ``key`` (state-dict key) frozen for this call. ``after_epoch(k)`` is called
    after epoch ``k`` (from 1) and after the last step when ``budget.steps`` ends mid-epoch; the model is put back
    in training mode after it (it may evaluate). Dropout draws from
    torch's global generator, so it is reseeded from ``generator`` first: the same call gives the same
    adapter in any process (embedded engine or a Flower node).
    """
    torch.manual_seed(generator.initial_seed())
    params = trainable(model)
    if len(data) == 0:
        return 0.0
    frozen = [p for n, p in params.items() if trains is not None and not trains(state_key(n))]
    params = {n: p for n, p in params.items() if trains is None or trains(state_key(n))}
    optim = torch.optim.AdamW(lr_groups(params, budget, is_head=lambda n: ".modules_to_save." in n), weight_decay=0.0)

    def loss_of(batch: dict[str, Tensor]) -> Tensor:
        loss = model(**batch).loss
        return loss if proximal is None else loss + _proximal_term(params, proximal)

    with _no_grad_for(frozen):
        return _descend(model, data, budget, generator, optim, loss_of, after_epoch)


def lr_groups(tensors: dict[str, Tensor], budget: Budget, is_head: Callable[[str], bool]) -> list[dict]:
    """AdamW groups: the LoRA factors at ``budget.lr``, the task head (names where ``is_head``) at
    ``head_lr_scale`` times it; empty groups left out."""
    head = [t for n, t in tensors.items() if is_head(n)]
    lora = [t for n, t in tensors.items() if not is_head(n)]
    groups = [{"params": lora, "lr": budget.lr}, {"params": head, "lr": budget.lr * budget.head_lr_scale}]
    return [g for g in groups if g["params"]]


def train_through_merge(
    model: nn.Module, data: Encoded, budget: Budget, generator: torch.Generator, groups: list[dict],
    merged: Callable[[], AdapterState],
) -> float:
    """Train the tensors of ``groups`` (AdamW parameter groups; lr defaults to ``budget.lr``) by the loss of the
    model whose merge adapter holds ``merged()``, a differentiable function of them (``torch.func``)."""
    return _train_merged(model, data, budget, generator, groups, lambda loss, batch: loss(merged(), batch))


def train_through_levels(
    model: nn.Module, data: Encoded, budget: Budget, generator: torch.Generator, groups: list[dict],
    merged_at: Callable[[float], AdapterState], level: Tensor,
) -> float:
    """:func:`train_through_merge` with a model per example: example ``i`` of ``data`` goes through the merge
    ``merged_at(level[i])``. A batch's loss is the mean of its examples' losses, computed one level at a time
    (one forward pass per level present in the batch, weighted by its share of the batch)."""
    key = "_level"
    tagged = dataclasses.replace(data, tensors={**data.tensors, key: level.to(data.tensors["labels"].device)})

    def per_level(loss: Callable[[AdapterState, dict[str, Tensor]], Tensor], batch: dict[str, Tensor]) -> Tensor:
        levels, inputs = batch[key], {k: v for k, v in batch.items() if k != key}
        parts = []
        for value in levels.unique():
            index = (levels == value).nonzero().squeeze(1)
            part = {k: v.index_select(0, index) for k, v in inputs.items()}
            parts.append(loss(merged_at(float(value)), part) * (len(index) / len(levels)))
        return sum(parts)

    return _train_merged(model, tagged, budget, generator, groups, per_level)


def _train_merged(
    model: nn.Module, data: Encoded, budget: Budget, generator: torch.Generator, groups: list[dict],
    batch_loss: Callable[[Callable[[AdapterState, dict[str, Tensor]], Tensor], dict[str, Tensor]], Tensor],
) -> float:
    """The loop of the two above: ``batch_loss(loss, batch)``, where ``loss(state, inputs)`` is the loss of the
    model whose merge adapter holds ``state`` on ``inputs``."""
    torch.manual_seed(generator.initial_seed())
    if len(data) == 0:
        return 0.0
    names = {state_key(n, MERGE_ADAPTER): n for n, _ in model.named_parameters() if f".{MERGE_ADAPTER}." in n}
    optim = torch.optim.AdamW(groups, lr=budget.lr, weight_decay=0.0)

    def loss(state: AdapterState, inputs: dict[str, Tensor]) -> Tensor:
        params = {names[k]: v for k, v in state.items()}
        return torch.func.functional_call(model, params, args=(), kwargs=inputs, strict=False).loss

    model.set_adapter(MERGE_ADAPTER)
    try:
        return _descend(model, data, budget, generator, optim, lambda batch: batch_loss(loss, batch))
    finally:
        model.set_adapter(TRAIN_ADAPTER)


def _descend(
    model: nn.Module, data: Encoded, budget: Budget, generator: torch.Generator, optim: torch.optim.Optimizer,
    loss_of: Callable[[dict[str, Tensor]], Tensor], after_epoch: Callable[[int], None] | None = None,
) -> float:
    """The optimisation loop over ``budget`` (epochs, or a number of steps); the mean loss. The optimizer's
    moments are freed on return: torch's optimizers sit in a reference cycle, so dropping one leaves its
    state (two adapters' worth for AdamW) to the next full garbage collection, one per client in a round."""
    try:
        return _steps(model, data, budget, generator, optim, loss_of, after_epoch or (lambda _: None))
    finally:
        optim.state.clear()


def _steps(
    model: nn.Module, data: Encoded, budget: Budget, generator: torch.Generator, optim: torch.optim.Optimizer,
    loss_of: Callable[[dict[str, Tensor]], Tensor], after_epoch: Callable[[int], None],
) -> float:
    """:func:`_descend`'s loop."""
    model.train()
    steps, total = 0, 0.0
    for epoch in range(1, (budget.epochs if budget.steps is None else 10**9) + 1):
        for batch in data.batches(budget.batch_size, generator):
            loss = loss_of(on_device(batch, model))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            steps, total = steps + 1, total + loss.item()
            if budget.steps is not None and steps >= budget.steps:
                after_epoch(epoch)
                return total / steps
        after_epoch(epoch)
        model.train()
    return total / max(steps, 1)


@contextmanager
def _no_grad_for(params: list[nn.Parameter]) -> Iterator[None]:
    """Switch ``requires_grad`` off for ``params`` during the block (no gradient, no update)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


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
    """Mean cross-entropy and accuracy of ``logits`` (``predict``'s, on the CPU) against ``labels`` (wherever the
    split lives: on an accelerator, the model's device)."""
    if labels.numel() == 0:
        return Evaluation(float("nan"), float("nan"), 0)
    labels = labels.to(logits.device)
    loss = nn.functional.cross_entropy(logits, labels)
    acc = (logits.argmax(-1) == labels).float().mean()
    return Evaluation(float(loss), float(acc), int(labels.numel()))


def evaluate(model: nn.Module, data: Encoded, batch_size: int) -> Evaluation:
    return score(predict(model, data, batch_size), data.tensors["labels"])


def state_as_params(state: AdapterState, model: nn.Module) -> dict[str, Tensor]:
    """Map a PEFT state dict onto the trainable parameter names, on their device (for proximal anchors)."""
    return {name: state[state_key(name)].to(p.device) for name, p in trainable(model).items()}


@torch.inference_mode()
def base_representations(model: nn.Module, data: Encoded, batch_size: int) -> Tensor:
    """Mean-pooled last hidden states of the frozen base model (a PEFT model with its adapters off), in order:
    over the unmasked tokens of text, over every position (patches) of images."""
    model.eval()
    rows = []
    with model.disable_adapter():
        for batch in data.batches(batch_size):
            inputs = on_device({k: v for k, v in batch.items() if k != "labels"}, model)
            hidden = model(**inputs, output_hidden_states=True).hidden_states[-1].float()
            mask = inputs.get("attention_mask")
            mask = torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask
            mask = mask.unsqueeze(-1).to(hidden.dtype)
            rows.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu())
    return torch.cat(rows) if rows else torch.empty(0)
