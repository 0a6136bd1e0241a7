"""The spread of a round's client updates: what the federation knows about its own noise (issue 21).

The server computes it from the updates it aggregated; it travels to each client with the final global adapter,
where the ``spread`` estimator reads ``v_F`` from it (``potara.personalize.estimators.spread``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .taskvec import AdapterState

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


def update_spread(states: Sequence[AdapterState], current: AdapterState) -> float:
    """``(1/m) Σ_k ‖Δ_k − Δ̄‖²`` with ``Δ_k = states[k] − current`` over all of ``current``'s tensors together
    (Euclidean, equal weights, in float64); 0 for fewer than two states."""
    if len(states) < 2:
        return 0.0
    total = 0.0
    for key, base in current.items():
        deltas = torch.stack([state[key].double() - base.double() for state in states])
        total += float((deltas - deltas.mean(0)).pow(2).sum())
    return total / len(states)
