"""Diagonal *model* Fisher in task-vector space, exact or Kronecker-factored.

For a linear module ``y = W x`` the per-example gradient with respect to ``ΔW`` is
``G = Σ_t g_t x_tᵀ`` (``g = ∂ log p(ŷ|x) / ∂y``, ``ŷ`` drawn from the model). The exact diagonal is
``E[G²]`` (a weight-sized buffer); the factored one is ``E[Σ_t g_t²] ⊗ E_t[x_t²]`` (``d_out + d_in``
numbers), exact for one token and one example. Labels come from the model's own predictive
distribution, not the data: the empirical Fisher underestimates curvature at a model that fits
its data (see SPEC, "Which Fisher"). For a causal LM (per-token ``labels``) every target position
draws its next token from the model and an example's log-likelihood sums over them. PyTorch hooks
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
) -> Metric:
    """Diagonal model Fisher per LoRA module (dense or ``(g, x)``) and per saved parameter (dense).

    ``extra_groups`` maps a saved module's name to its parameter keys (``…weight``, ``…bias``).
    """
    named = dict(model.named_modules())
    probes = {}
    for group in [*lora_groups, *extra_groups]:
        target = _linear_of(named[group], adapter)
        weight = getattr(target, "weight", None) if group in extra_groups else target.base_layer.weight
        exact = group in extra_groups or _is_exact(weight, mode)
        probes[group] = _LinearProbe(target, exact)
    count = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            count += _accumulate(model, batch, samples, generator)
    finally:
        model.train(was_training)
        for probe in probes.values():
            probe.handle.remove()
    if count == 0:
        raise ValueError("cannot estimate a Fisher from zero examples")
    return _finish(probes, extra_groups, count * samples)


def _accumulate(model: nn.Module, batch: Mapping[str, Tensor], samples: int, generator) -> int:
    """Backpropagate sampled-label log-likelihoods; per-token labels (causal LM) sample every target position."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits.float()
    examples = int(logits.shape[0])
    labels = batch.get("labels")
    if labels is not None and labels.dim() == 2:  # the logits at t predict token t+1; only target tokens count
        logits = logits[:, :-1][labels[:, 1:].to(device) != IGNORE_INDEX]
    probs = logits.softmax(-1).detach().cpu()  # drawn on the CPU generator, on any device
    for s in range(samples):
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(device)
        loss = nn.functional.cross_entropy(logits, drawn, reduction="sum")
        loss.backward(retain_graph=s < samples - 1)
    model.zero_grad(set_to_none=True)
    return examples


def _finish(probes: Mapping[str, _LinearProbe], extra_groups: Mapping[str, list[str]], total: int) -> Metric:
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
            raise ValueError(f"Fisher of module '{key}' has non-finite values")
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
