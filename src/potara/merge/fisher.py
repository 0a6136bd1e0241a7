"""Diagonal *model* Fisher in task-vector space, exact or Kronecker-factored.

For a linear module ``y = W x`` the per-example gradient with respect to ``ΔW`` is
``G = Σ_t g_t x_tᵀ`` (``g = ∂ log p(ŷ|x) / ∂y``, ``ŷ`` drawn from the model). The exact diagonal is
``E[G²]`` (a weight-sized buffer); the factored one is ``E[Σ_t g_t²] ⊗ E_t[x_t²]`` (``d_out + d_in``
numbers), exact for one token and one example. Labels come from the model's own predictive
distribution, not the data: the empirical Fisher underestimates curvature at a model that fits
its data (Kunstner et al. 2019, "Limitations of the empirical Fisher approximation"). For a causal LM
(per-token ``labels``) every target position draws its next token from the model and an example's log-likelihood sums over them. PyTorch hooks
are used because no library computes this diagonal for PEFT's factored layers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .taskvec import Metric

EXACT_MAX_ELEMENTS = 4_000_000
IGNORE_INDEX = -100  # label of positions that are not predicted (prompt and padding of causal-LM data)


class _LinearProbe:
    """Accumulates the diagonal Fisher of one linear map from its inputs and output gradients."""

    def __init__(self, module: nn.Module, exact: bool) -> None:
        self.exact = exact
        self.inputs: Tensor | None = None
        self.weight: Tensor | None = None
        self.g_sq: Tensor | None = None
        self.x_sq: Tensor | None = None
        self.bias: Tensor | None = None
        self.handle = module.register_forward_hook(self._forward)

    def _forward(self, _module: nn.Module, args: tuple, output: Tensor) -> None:
        self.inputs = args[0].detach()
        if output.requires_grad:
            output.register_hook(self._backward)

    def _backward(self, grad: Tensor) -> None:
        x, g = self.inputs, grad.detach()
        if x.dim() == 2:
            x, g = x[:, None, :], g[:, None, :]
        self.bias = _add(self.bias, g.sum(1).pow(2).sum(0))
        if self.exact:
            self.weight = _add(self.weight, torch.einsum("bto,bti->boi", g, x).pow(2).sum(0))
        else:
            self.g_sq = _add(self.g_sq, g.pow(2).sum(1).sum(0))
            self.x_sq = _add(self.x_sq, x.pow(2).mean(1).sum(0))


def _add(acc: Tensor | None, value: Tensor) -> Tensor:
    return value if acc is None else acc + value


def _is_exact(weight: Tensor, mode: str) -> bool:
    return mode == "exact" or (mode == "auto" and weight.numel() <= EXACT_MAX_ELEMENTS)


def _linear_of(module: nn.Module, adapter: str) -> nn.Module:
    """The module whose input/output are those of the adapted weight (PEFT LoRA layer or saved copy)."""
    if hasattr(module, "modules_to_save"):
        return module.modules_to_save[adapter]
    return module


def model_fisher(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    lora_groups: Iterable[str],
    extra_groups: Mapping[str, list[str]],
    *,
    mode: str = "auto",
    samples: int = 1,
    generator: torch.Generator | None = None,
    adapter: str = "default",
    labels: str = "model",
) -> Metric:
    """Diagonal model Fisher per LoRA module (dense or ``(g, x)``) and per saved parameter (dense).

    ``extra_groups`` maps a saved module's name to its parameter keys (``…weight``, ``…bias``).
    ``labels="empirical"`` gives the empirical Fisher (true labels) instead, for the ``paper`` estimator's option.
    """
    named = dict(model.named_modules())
    probes = {}
    for group in [*lora_groups, *extra_groups]:
        target = _linear_of(named[group], adapter)
        weight = getattr(target, "weight", None) if group in extra_groups else target.base_layer.weight
        exact = group in extra_groups or _is_exact(weight, mode)
        probes[group] = _LinearProbe(target, exact)
    draws = samples if labels == "model" else 1
    count = _probed_passes(model, batches, probes, draws, generator, labels)
    if count == 0:
        raise ValueError("cannot estimate a Fisher from zero examples")
    return _finish(probes, extra_groups, count * draws)


def _probed_passes(
    model: nn.Module, batches: Iterable[Mapping[str, Tensor]], probes: Mapping[str, _LinearProbe], draws: int,
    generator: torch.Generator | None, labels: str,
) -> int:
    """Every batch through :func:`_accumulate` in eval mode with ``probes`` listening; the examples seen. The
    probes' hooks are removed and the model's mode restored after."""
    count = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            count += _accumulate(model, batch, draws, generator, labels)
    finally:
        model.train(was_training)
        for probe in probes.values():
            probe.handle.remove()
    return count


def _accumulate(model: nn.Module, batch: Mapping[str, Tensor], draws: int, generator, labels: str = "model") -> int:
    """Backpropagate ``draws`` sampled-label log-likelihoods (``labels="model"``) or the true labels' (``"empirical"``);
    per-token labels (causal LM) sample every target position."""
    logits, true, examples = _predicted(model, batch)
    for s in range(draws):
        target = _draw(logits, generator) if labels == "model" else true
        loss = nn.functional.cross_entropy(logits, target, reduction="sum")
        loss.backward(retain_graph=s < draws - 1)
    model.zero_grad(set_to_none=True)
    return examples


def _predicted(model: nn.Module, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor | None, int]:
    """Logits of the predicted positions, their true labels and the number of examples; a causal LM's logits at
    t predict token t+1 and only target tokens count."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits.float()
    examples = int(logits.shape[0])
    labels = batch.get("labels")
    labels = None if labels is None else labels.to(device)
    if labels is not None and labels.dim() == 2:
        mask = labels[:, 1:] != IGNORE_INDEX
        return logits[:, :-1][mask], labels[:, 1:][mask], examples
    return logits, labels, examples


def _draw(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """Labels drawn from the model's predictive distribution (on the CPU generator, on any device)."""
    probs = logits.softmax(-1).detach().cpu()
    if not torch.isfinite(probs).all():
        raise ValueError("non-finite logits: the model Fisher cannot draw labels (check the adapter for NaN/inf)")
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(logits.device)


class _GradientProbe(_LinearProbe):
    """Accumulates the loss gradient itself (not its square) with respect to the linear map's weight and bias."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module, exact=True)

    def _backward(self, grad: Tensor) -> None:
        x, g = self.inputs, grad.detach()
        if x.dim() == 2:
            x, g = x[:, None, :], g[:, None, :]
        self.bias = _add(self.bias, g.sum((0, 1)))
        self.weight = _add(self.weight, torch.einsum("bto,bti->oi", g, x))


def delta_gradient(
    model: nn.Module,
    batches: Iterable[Mapping[str, Tensor]],
    lora_groups: Iterable[str],
    extra_groups: Mapping[str, list[str]],
    *,
    adapter: str = "default",
) -> dict[str, Tensor]:
    """Mean loss gradient at the true labels in task-vector space: ``∂L/∂ΔW`` per LoRA module (= ``∂L/∂W``)
    and per saved parameter, keyed as :func:`model_fisher`."""
    named = dict(model.named_modules())
    probes = {group: _GradientProbe(_linear_of(named[group], adapter)) for group in [*lora_groups, *extra_groups]}
    count = _probed_passes(model, batches, probes, 1, None, "empirical")
    if count == 0:
        raise ValueError("cannot take a gradient over zero examples")
    return _finish(probes, extra_groups, count, "loss gradient")


def parameter_fisher(
    model: nn.Module,
    examples: Iterable[Mapping[str, Tensor]],
    params: Mapping[str, Tensor],
    *,
    labels: str = "model",
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Diagonal Fisher with respect to ``params`` themselves (LoRA factor space: the A and B factors and saved
    modules), from per-example squared gradients, and the mean loss gradient at the true labels.

    ``examples`` come one per batch. ``labels="model"``: one label drawn from the model per example (per target
    token of a causal LM); ``"empirical"``: the true labels, whose gradients then serve both."""
    keys, tensors = list(params), list(params.values())
    fisher = [torch.zeros_like(t) for t in tensors]
    grad = [torch.zeros_like(t) for t in tensors]
    count = 0
    was_training = model.training
    model.eval()
    try:
        for example in examples:
            logits, true, n = _predicted(model, example)
            if n != 1:
                raise ValueError(f"parameter_fisher takes one example per batch, got {n}")
            g_true = _grads(nn.functional.cross_entropy(logits, true, reduction="sum"), tensors, labels == "model")
            g_fisher = g_true
            if labels == "model":
                g_fisher = _grads(nn.functional.cross_entropy(logits, _draw(logits, generator), reduction="sum"), tensors)
            for acc, g in zip(grad, g_true):
                acc += g
            for acc, g in zip(fisher, g_fisher):
                acc += g.pow(2)
            count += 1
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("cannot estimate a Fisher from zero examples")
    return ({k: (f / count).cpu() for k, f in zip(keys, fisher)}, {k: (g / count).cpu() for k, g in zip(keys, grad)})


def _grads(loss: Tensor, tensors: list[Tensor], retain: bool = False) -> list[Tensor]:
    """``∂loss/∂t`` for every tensor, zeros where the loss does not depend on it."""
    grads = torch.autograd.grad(loss, tensors, retain_graph=retain, allow_unused=True)
    return [torch.zeros_like(t) if g is None else g.detach() for g, t in zip(grads, tensors)]


def _finish(
    probes: Mapping[str, _LinearProbe], extra_groups: Mapping[str, list[str]], total: int, what: str = "Fisher"
) -> Metric:
    fisher: dict = {}
    for group, probe in probes.items():
        if group in extra_groups:
            for key in extra_groups[group]:
                fisher[key] = ((probe.bias if key.endswith("bias") else probe.weight) / total).cpu()
        elif probe.exact:
            fisher[group] = (probe.weight / total).cpu()
        else:
            fisher[group] = ((probe.g_sq / total).cpu(), (probe.x_sq / total).cpu())
    for key, value in fisher.items():
        parts = value if isinstance(value, tuple) else (value,)
        if not all(torch.isfinite(p).all() for p in parts):
            raise ValueError(f"{what} of module '{key}' has non-finite values")
    return fisher


def dense(entry: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """The diagonal as a full tensor (``g ⊗ x`` for a factored entry)."""
    return torch.outer(*entry) if isinstance(entry, tuple) else entry


def laplace_traces(fisher: Metric, n: int, damping: float) -> dict[str, float]:
    """Per group ``tr(D Σ_L) = Σ_j F_j / (n F_j + δ)`` with ``D = F`` and ``Σ_L = (n F + δ)⁻¹``."""
    out = {}
    for key, entry in fisher.items():
        f = dense(entry)
        out[key] = float((f / (n * f + damping)).sum())
    return out
