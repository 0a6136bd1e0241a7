"""Server-side aggregation of adapter updates. One strategy per class; variants override one hook.

``FedAvg`` is FedIT (Zhang et al., "Towards Building the Federated GPT", 2024): FedAvg (McMahan et
al., 2017) applied to the LoRA factors, weighted by client sizes ``n_k``. Averaging ``A`` and ``B``
separately is not averaging ``B·A``; ``ProductFedAvg`` averages the products exactly and keeps the
best rank-r approximation (truncated SVD) so the global adapter keeps its shape.

Both aggregate as a running sum (:meth:`FedAvg.start`): each update is folded in and dropped once the
round's norm bound (validation) has passed it. The weights are ``n_k / total`` with ``total`` given up front;
when the updates folded in sum to another total (some were rejected) the result is rescaled by
``total / folded``, equal to the direct average up to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..merge.taskvec import LORA_A, LORA_B, AdapterState, lora_modules


class RunningSum:
    """``Σ_k (n_k / total) · state_k`` over the states added so far, per tensor of ``current``."""

    def __init__(self, current: AdapterState, total: int) -> None:
        self.current, self.total, self.folded = current, total, 0
        self.sums = {k: torch.zeros_like(v) for k, v in current.items()}  # 0 + the first term, as sum() starts

    def add(self, state: AdapterState, n: int) -> None:
        """Fold one update's tensors in with weight ``n / total``; nothing of ``state`` is kept."""
        weight = n / self.total
        for k, acc in self.sums.items():
            acc.add_(state[k] * weight)
        self.folded += n

    def scaled(self, sums: dict[str, Tensor]) -> dict[str, Tensor]:
        """``sums`` as weighted by the folded total: themselves when it is ``total``, else rescaled."""
        if self.folded == self.total:
            return sums
        return {k: v * (self.total / self.folded) for k, v in sums.items()}

    def result(self) -> AdapterState:
        """The weighted average; ``current`` when nothing was folded in."""
        if self.folded <= 0:
            return self.current
        return self.scaled(self.sums)


class RunningProduct(RunningSum):
    """:class:`RunningSum`, plus ``Σ_k (n_k / total) · B_k A_k`` per LoRA module, re-factorised at the end."""

    def __init__(self, current: AdapterState, total: int) -> None:
        super().__init__(current, total)
        self.deltas = {m: current[m + LORA_B].new_zeros(current[m + LORA_B].shape[0], current[m + LORA_A].shape[1])
                       for m in lora_modules(current)}

    def add(self, state: AdapterState, n: int) -> None:
        weight = n / self.total
        for module, delta in self.deltas.items():
            delta.add_(weight * state[module + LORA_B] @ state[module + LORA_A])
        super().add(state, n)

    def result(self) -> AdapterState:
        merged = super().result()
        if self.folded <= 0:
            return merged
        merged = dict(merged)
        for module, delta in self.scaled(self.deltas).items():
            rank = self.current[module + LORA_A].shape[0]
            u, sing, vh = torch.linalg.svd(delta, full_matrices=False)
            root = sing[:rank].sqrt()
            merged[module + LORA_B] = u[:, :rank] * root
            merged[module + LORA_A] = root[:, None] * vh[:rank]
        return merged


class FedAvg:
    """Weighted average of every uploaded tensor."""

    name = "fedavg"
    running = RunningSum
    releases_spread = True  # the server may compute the spread of the updates it aggregates (rounds.round_spread)
    relative_bound = True  # uploads may be screened against the round's others (validation.max_norm_ratio)

    def start(self, current: AdapterState, total: int) -> RunningSum:
        """An empty running aggregate whose updates' example counts will sum to ``total``."""
        return self.running(current, total)

    def state(self) -> dict[str, float]:
        """What the aggregation carries from round to round (a checkpoint keeps it); FedAvg carries nothing."""
        return {}

    def restore(self, state: dict[str, float]) -> None:
        """Continue from a :meth:`state` saved after an earlier round."""

    def aggregate(self, updates: Sequence[tuple[AdapterState, int]], current: AdapterState) -> AdapterState:
        """The aggregate of ``updates`` (state, n_k), all at hand; ``current`` when their counts sum to 0."""
        total = sum(n for _, n in updates)
        if total <= 0:
            return current
        running = self.start(current, total)
        for state, n in updates:
            running.add(state, n)
        return running.result()


class ProductFedAvg(FedAvg):
    """Exact FedAvg of ``B·A`` per module, re-factorised by truncated SVD at the adapter's rank."""

    name = "product"
    running = RunningProduct
