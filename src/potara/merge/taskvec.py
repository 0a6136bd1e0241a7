"""Task vectors of LoRA adapters, the exact merge, and Fisher-weighted distances. Pure tensor code.

An adapter state is PEFT's adapter state dict: ``<module>.lora_A.weight`` (r x d_in),
``<module>.lora_B.weight`` (d_out x r) and full tensors of saved modules (e.g. a classifier head).
Its task vector is ``ΔW_m = scale · B_m A_m`` for every LoRA module and ``ΔP = P − P0`` for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

AdapterState = dict[str, Tensor]
Metric = Mapping[str, "Tensor | tuple[Tensor, Tensor]"]  # per group: a dense diagonal, or (g, x) factors
Weights = "float | Mapping[str, float]"  # one weight for the adapter, or one per group

LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"


def group_of(key: str) -> str:
    """The module a tensor belongs to: the LoRA module, or the saved module owning a parameter."""
    for suffix in (LORA_A, LORA_B):
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key.rsplit(".", 1)[0]


def lora_modules(state: AdapterState) -> list[str]:
    return sorted(k[: -len(LORA_A)] for k in state if k.endswith(LORA_A))


def extra_keys(state: AdapterState) -> list[str]:
    return sorted(k for k in state if not k.endswith((LORA_A, LORA_B)))


def groups(state: AdapterState) -> list[str]:
    return sorted({group_of(k) for k in state})


def delta_weight(state: AdapterState, module: str, scale: float) -> Tensor:
    return scale * state[module + LORA_B] @ state[module + LORA_A]


def task_vector(state: AdapterState, scale: float, reference: AdapterState) -> dict[str, Tensor]:
    """Dense task vector: ΔW per LoRA module, ΔP per extra key (``reference`` holds P0)."""
    vec = {m: delta_weight(state, m, scale) for m in lora_modules(state)}
    vec.update({k: state[k] - reference[k] for k in extra_keys(state)})
    return vec


def _weight(weights: Weights, group: str) -> float | Tensor:
    """A group's weight; a tensor weight stays a tensor, so a merge is differentiable in its weights."""
    weight = weights if isinstance(weights, (int, float, Tensor)) else weights[group]
    return weight if isinstance(weight, Tensor) else float(weight)


def merge(states: Sequence[AdapterState], weights: Sequence[Weights], scales: Sequence[float]) -> AdapterState:
    """Exact merge ``Σ_i w_i τ_i`` as one LoRA adapter of rank ``Σ r_i`` and scale 1.

    Rank concatenation: ``A = [A_1; …; A_M]``, ``B = [w_1 s_1 B_1, …, w_M s_M B_M]`` so that
    ``B A = Σ_i w_i s_i B_i A_i``. Saved modules are combined linearly, ``P = Σ_i w_i P_i``, which is
    ``P0 + Σ_i w_i ΔP_i`` because the weights of every group sum to one.
    """
    first = states[0]
    merged: AdapterState = {}
    for module in lora_modules(first):
        ws = [_weight(w, module) for w in weights]
        merged[module + LORA_A] = torch.cat([s[module + LORA_A] for s in states], dim=0)
        merged[module + LORA_B] = torch.cat(
            [w * sc * s[module + LORA_B] for s, w, sc in zip(states, ws, scales)], dim=1
        )
    return {**merged, **_merge_saved(states, weights)}


def merge_factors(
    states: Sequence[AdapterState], weights: Sequence[Weights], scales: Sequence[float]
) -> AdapterState:
    """The paper's practice: ``A = Σ_i w_i A_i`` and ``B = Σ_i w_i s_i B_i`` per LoRA module (rank r, scale 1),
    saved modules ``Σ_i w_i P_i``. Not ``Σ_i w_i τ_i``: ``B A`` gains the cross terms ``w_i w_j s_j B_j A_i``.
    An average of factors, so every group's weights must sum to one."""
    first = states[0]
    for group in groups(first):
        ws = [_weight(w, group) for w in weights]
        total = sum(float(w.detach()) if isinstance(w, Tensor) else w for w in ws)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"a factor-space merge averages: the weights of '{group}' sum to {total}, not 1")
    merged: AdapterState = {}
    for module in lora_modules(first):
        ws = [_weight(w, module) for w in weights]
        merged[module + LORA_A] = sum(w * s[module + LORA_A] for s, w in zip(states, ws))
        merged[module + LORA_B] = sum(w * sc * s[module + LORA_B] for s, w, sc in zip(states, ws, scales))
    return {**merged, **_merge_saved(states, weights)}


def _merge_saved(states: Sequence[AdapterState], weights: Sequence[Weights]) -> AdapterState:
    """Saved modules combined linearly, ``P = Σ_i w_i P_i``."""
    out = {}
    for key in extra_keys(states[0]):
        ws = [_weight(w, group_of(key)) for w in weights]
        out[key] = sum(w * s[key] for s, w in zip(states, ws))
    return out


MERGES = {"delta": merge, "factors": merge_factors}
"""``potara.merge_space``: the exact ΔW-space merge, or the paper's factor-space average."""


def pad_rank(state: AdapterState, rank: int) -> AdapterState:
    """Zero-pad LoRA factors to ``rank`` (the function is unchanged: padded rows/columns contribute 0)."""
    out = dict(state)
    for module in lora_modules(state):
        a, b = state[module + LORA_A], state[module + LORA_B]
        extra = rank - a.shape[0]
        out[module + LORA_A] = torch.cat([a, a.new_zeros(extra, a.shape[1])])
        out[module + LORA_B] = torch.cat([b, b.new_zeros(b.shape[0], extra)], dim=1)
    return out


def sq_distances(
    a: AdapterState, b: AdapterState, scale: float, metric: Metric | None = None
) -> dict[str, float]:
    """``‖τ_a − τ_b‖²_D`` per group, from the low-rank factors (ΔW is never formed for factored metrics)."""
    out = {}
    for module in lora_modules(a):
        big_b = torch.cat([scale * a[module + LORA_B], -scale * b[module + LORA_B]], dim=1)
        big_a = torch.cat([a[module + LORA_A], b[module + LORA_A]], dim=0)
        out[module] = _lowrank_sq_norm(big_b, big_a, None if metric is None else metric[module])
    for key in extra_keys(a):
        diff2 = (a[key] - b[key]) ** 2
        d = metric[key] if metric is not None else None
        out[key] = float(diff2.sum() if d is None else (d * diff2).sum())
    return out


def _lowrank_sq_norm(big_b: Tensor, big_a: Tensor, d: Tensor | tuple[Tensor, Tensor] | None) -> float:
    """``Σ_{o,i} D[o,i] (B A)[o,i]²`` with D dense, Kronecker-factored ``g ⊗ x``, or identity."""
    if isinstance(d, Tensor):
        return float((d * (big_b @ big_a) ** 2).sum())
    g = big_b.new_ones(big_b.shape[0]) if d is None else d[0]
    x = big_a.new_ones(big_a.shape[1]) if d is None else d[1]
    left = big_b.T @ (g[:, None] * big_b)
    right = (big_a * x[None, :]) @ big_a.T
    return float((left * right).sum())


def check_finite(state: Mapping[str, Tensor], what: str) -> None:
    for key, value in state.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"{what}: tensor '{key}' (module {group_of(key)}) has non-finite values")


def sum_by_group(values: Mapping[str, float], state: AdapterState) -> dict[str, float]:
    """Fold per-parameter values of saved modules into one value per module (LoRA modules stay)."""
    modules = set(lora_modules(state))
    out: dict[str, float] = {}
    for key, value in values.items():
        group = key if key in modules else group_of(key)
        out[group] = out.get(group, 0.0) + value
    return out
