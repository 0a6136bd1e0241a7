"""The spread of a round's client updates: what the federation knows about its own noise (issue 21).

The server computes it from the updates it aggregated; it travels to each client with the final global adapter,
where the ``spread`` estimator reads ``v_F`` from it (``potara.personalize.estimators.spread``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .taskvec import LORA_A, LORA_B, AdapterState

SPREAD_BYTES = 16  # what one UpdateSpread costs on the wire: one float64 (s²) and one int64 (m)


@dataclass(frozen=True)
class UpdateSpread:
    """``spread`` = ``s² = (1/m) Σ_k ‖Δ_k − Δ̄‖²`` over a round's ``count`` = ``m`` aggregated updates."""

    spread: float
    count: int

    def __post_init__(self) -> None:
        if not (isinstance(self.spread, float) and math.isfinite(self.spread) and self.spread >= 0):
            raise ValueError(f"update spread must be a finite float >= 0, got {self.spread!r}")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 0:
            raise ValueError(f"update count must be an integer >= 0, got {self.count!r}")


def update_spread(states: Sequence[AdapterState], current: AdapterState, scale: float) -> float:
    """``(1/m) Σ_k ‖t_k − t̄‖²`` over the clients' task vectors ``t_k`` (``ΔW = scale · B A`` per LoRA module whose
    two factors travel, the tensor itself for every other key), equal weights, in float64; 0 for fewer than two
    states. In task-vector space, as the client's ``‖τ_F − τ_L‖²`` is: the raw factors' spread is on another scale.
    A module's term comes from the m × m Gram matrix of its ``B_k A_k`` (``⟨B_i A_i, B_j A_j⟩ =
    Σ (B_iᵀ B_j) ∘ (A_i A_jᵀ)``, r × r products; ΔW is never formed): ``tr G − 1ᵀ G 1 / m``."""
    m = len(states)
    if m < 2:
        return 0.0
    modules = [k[: -len(LORA_A)] for k in current if k.endswith(LORA_A) and k[: -len(LORA_A)] + LORA_B in current]
    factored = {key for module in modules for key in (module + LORA_A, module + LORA_B)}
    total = sum(_module_spread(states, module, scale) for module in modules)
    for key in (k for k in current if k not in factored):
        deltas = torch.stack([state[key].double() for state in states])
        total += float((deltas - deltas.mean(0)).pow(2).sum())
    return float(f"{total / m:.12g}")  # BLAS sums vary in the last bits with memory alignment; a resumed run must
    # record (and send) the spread the uninterrupted run did, so it is kept to 12 significant digits


def _module_spread(states: Sequence[AdapterState], module: str, scale: float) -> float:
    """``Σ_k ‖ΔW_k − mean ΔW‖²`` of one LoRA module, from its factors' Gram matrix."""
    bs = [scale * state[module + LORA_B].double() for state in states]
    as_ = [state[module + LORA_A].double() for state in states]
    m = len(states)
    gram = torch.empty(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(i, m):
            gram[i, j] = gram[j, i] = float(((bs[i].T @ bs[j]) * (as_[i] @ as_[j].T)).sum())
    return float(gram.trace() - gram.sum() / m)
