"""A federation's profile, measurable before any training from the clients' own label counts: how many training
examples each client has and how far its label distribution is from the federation's (the quantities the map of
where Potara wins is read in: docs/mechanisms.md).

Label skew of client k: the total-variation distance ½ Σ_y |p_k(y) − p(y)| between its training label
distribution p_k and the pooled one p of every client's training data, in [0, 1): 0 when the client looks like the
federation, near 1 when it holds classes nobody else has. A small client is skewed by chance alone (16 IID
examples of 16 classes sit near 0.4), so the profile reads skew beside size, not alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from statistics import mean, median
from typing import Any

from .federated import FederatedData

# The rule read from the map and checked on map-check (docs/mechanisms.md, "The rule"): below this label skew a
# client is better served by Potara with a head and a LoRA λ, above it by fine-tuning FedIT's adapter early-stopped.
RULE_SKEW = 0.6
RULE_PICKS = ("potara@potara.granularity=head_lora", "fedit_ft_es")


def rule_pick(skew: float) -> str:
    """The method the map's rule picks for a client of this label skew."""
    return RULE_PICKS[0] if skew < RULE_SKEW else RULE_PICKS[1]


def label_skew(counts: Mapping[int, int], pooled: Mapping[int, int]) -> float:
    """Total-variation distance between two label count tables' distributions (0 when either is empty)."""
    n, total = sum(counts.values()), sum(pooled.values())
    if not n or not total:
        return 0.0
    return 0.5 * sum(abs(counts.get(y, 0) / n - pooled.get(y, 0) / total) for y in set(counts) | set(pooled))


def profile_counts(train_labels: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """The profile of clients given by their training labels (client name → labels): per client its
    ``n_train``, ``classes`` (distinct labels) and ``label_skew``; then the federation's medians and means."""
    counts = {name: Counter(labels) for name, labels in train_labels.items()}
    pooled = sum(counts.values(), Counter())
    clients = {name: {"n_train": sum(c.values()), "classes": len(c), "label_skew": label_skew(c, pooled)}
               for name, c in counts.items()}
    sizes = [c["n_train"] for c in clients.values()] or [0]
    skews = [c["label_skew"] for c in clients.values()] or [0.0]
    return {"clients": clients, "median_n_train": median(sizes), "min_n_train": min(sizes),
            "mean_label_skew": mean(skews), "max_label_skew": max(skews), "pooled_classes": len(pooled)}


def profile(data: FederatedData) -> dict[str, Any]:
    """``profile_counts`` of a loaded federation's training splits; empty for data without class labels (a causal
    LM's prompt/target rows)."""
    if any("label" not in c.train.column_names for c in data.clients):
        return {}
    return profile_counts({c.name: list(c.train["label"]) for c in data.clients})


def profile_table(prof: dict[str, Any]) -> str:
    """The profile as a markdown table and a summary line."""
    lines = ["| client | train examples | classes | label skew (TV to the federation) | the rule picks |",
             "|---|---|---|---|---|"]
    picks = {name: rule_pick(c["label_skew"]) for name, c in prof["clients"].items()}
    lines += [f"| {name} | {c['n_train']} | {c['classes']} | {c['label_skew']:.3f} | `{picks[name]}` |"
              for name, c in prof["clients"].items()]
    potara = sum(pick == RULE_PICKS[0] for pick in picks.values())
    lines += ["", f"{len(prof['clients'])} clients, {prof['pooled_classes']} classes; train examples per client: "
              f"median {prof['median_n_train']:g}, min {prof['min_n_train']}; label skew: mean "
              f"{prof['mean_label_skew']:.3f}, max {prof['max_label_skew']:.3f}",
              f"the rule (label skew < {RULE_SKEW:g}: Potara with a head and a LoRA λ, else FedIT + FT early-stopped; "
              f"read from the map, checked on new cells: docs/mechanisms.md) picks Potara for {potara} of "
              f"{len(prof['clients'])} clients"]
    return "\n".join(lines)
