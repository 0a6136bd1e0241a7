"""Server-side aggregation of adapter updates. One strategy per class; variants override one hook.

``FedAvg`` is FedIT (Zhang et al., "Towards Building the Federated GPT", 2024): FedAvg (McMahan et
al., 2017) applied to the LoRA factors, weighted by client sizes ``n_k``. Averaging ``A`` and ``B``
separately is not averaging ``B·A``; ``ProductFedAvg`` averages the products exactly and keeps the
best rank-r approximation (truncated SVD) so the global adapter keeps its shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..merge.taskvec import LORA_A, LORA_B, AdapterState, lora_modules


class FedAvg:
    """Weighted average of every uploaded tensor."""

    name = "fedavg"

    def aggregate(self, updates: Sequence[tuple[AdapterState, int]], current: AdapterState) -> AdapterState:
        total = sum(n for _, n in updates)
        if total <= 0:
            return current
        return {k: sum(s[k] * (n / total) for s, n in updates) for k in current}


class ProductFedAvg(FedAvg):
    """Exact FedAvg of ``B·A`` per module, re-factorised by truncated SVD at the adapter's rank."""

    name = "product"

    def aggregate(self, updates: Sequence[tuple[AdapterState, int]], current: AdapterState) -> AdapterState:
        merged = super().aggregate(updates, current)
        total = sum(n for _, n in updates)
        if total <= 0:
            return merged
        for module in lora_modules(current):
            delta = sum((n / total) * s[module + LORA_B] @ s[module + LORA_A] for s, n in updates)
            rank = current[module + LORA_A].shape[0]
            u, sing, vh = torch.linalg.svd(delta, full_matrices=False)
            root = sing[:rank].sqrt()
            merged[module + LORA_B] = u[:, :rank] * root
            merged[module + LORA_A] = root[:, None] * vh[:rank]
        return merged
