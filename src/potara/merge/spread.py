"""The spread of a round's client updates: what the federation knows about its own noise (issue 21).

The server computes it from the updates it aggregated; it travels to each client with the final global adapter,
where the ``spread`` estimator reads ``v_F`` from it (``potara.personalize.estimators.spread``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import torch

from .taskvec import LORA_A, LORA_B, AdapterState, sq_distances

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
    From the pairwise distances (``Σ_k ‖t_k − t̄‖² = (1/m) Σ_{i<j} ‖t_i − t_j‖²``) that ``taskvec.sq_distances`` takes
    from the factors (ΔW is never formed); a factor that travels without its partner counts as a plain tensor."""
    m = len(states)
    if m < 2:
        return 0.0
    unpaired = {k for k in current if k.endswith((LORA_A, LORA_B)) and _partner(k) not in current}
    vectors = [{k: v.double() for k, v in state.items() if k in current and k not in unpaired} for state in states]
    total = sum(sum(sq_distances(a, b, scale).values()) for a, b in combinations(vectors, 2)) / m
    for key in unpaired:
        deltas = torch.stack([state[key].double() for state in states])
        total += float((deltas - deltas.mean(0)).pow(2).sum())
    return float(f"{total / m:.12g}")  # BLAS sums vary in the last bits with memory alignment; a resumed run must
    # record (and send) the spread the uninterrupted run did, so it is kept to 12 significant digits


def _partner(key: str) -> str:
    """The other factor of a LoRA module's factor key."""
    return key[: -len(LORA_A)] + LORA_B if key.endswith(LORA_A) else key[: -len(LORA_B)] + LORA_A
