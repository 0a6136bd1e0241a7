"""summary.json (the embedded engine's fields), rounds.jsonl and the message audit, from real messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..methods import resolve
from ..models.adapters import serialize
from ..reporting.outputs import atomic_write, is_bound, json_safe, one_federation, paired
from ..reporting.privacy import privacy_summary
from .grid import MeteredGrid
from .settings import FlowerSettings
from .strategy import Personal, PotaraFedAvg

METHOD_PHASES = (
    "train",
    "personalize",
)  # the messages a federated method needs (not monitoring)
PHASES = ("register", "train", "evaluate", "personalize")


def build_summary(
    settings: FlowerSettings,
    strategy: PotaraFedAvg,
    grid: MeteredGrid,
    personal: dict[str, Personal],
    timing: dict[str, float],
) -> dict[str, Any]:
    """``methods.<name>.{mean_acc, worst_acc, bytes_up, bytes_down, rounds, per_client, bound}`` plus ``missing``,
    and ``paired`` (and, with DP, ``privacy``: its ε from the same accountant) as the embedded engine's summary has it."""
    cfg = settings.run
    reported = [c.name for c in strategy.clients if c.name in personal]
    missing = _missing(settings, strategy, personal)
    methods = {}
    for method in resolve(cfg):
        rows = [personal[name].rows[method.name] for name in reported]
        accs = [r["acc"] for r in rows]
        methods[method.name] = {
            "mean_acc": sum(accs) / max(1, len(accs)),
            "worst_acc": min(accs, default=0.0),
            "bytes_up": grid.bytes("up", METHOD_PHASES) if method.federated else 0,
            "bytes_down": grid.bytes("down", METHOD_PHASES) if method.federated else 0,
            "rounds": len(strategy.rounds) if method.federated else 0,
            "per_client": rows,
            "missing": missing,
            "bound": is_bound(method.name),
            "federation": method.federation.name if method.federated else "",
        }
    private = privacy_summary(cfg.to_dict())
    summary = {
        "config": cfg.to_dict(),
        "methods": methods,
        "paired": paired({name: {r["client"]: r["acc"] for r in m["per_client"]} for name, m in methods.items()},
                         one_federation),
        "timing": {**_node_timings(personal), **timing},
        "flower": {
            "clients": {
                c.name: {
                    "node_id": c.node_id,
                    "partition": c.partition,
                    "n_train": c.n_train,
                }
                for c in strategy.clients
            },
            "missing": missing,
            "faults": strategy.faults,
            "bytes": {
                p: {"up": grid.bytes("up", [p]), "down": grid.bytes("down", [p])}
                for p in PHASES
            },
            "messages": len(grid.log),
            "secagg": settings.secagg is not None,
            "dp_clipping": ("client" if settings.client_clipping else "server") if private else None,
        },
    }
    return {**summary, "privacy": private} if private else summary


def round_records(strategy: PotaraFedAvg, grid: MeteredGrid) -> list[dict[str, Any]]:
    """One record per round with the train messages' bytes in both directions (and cumulated)."""
    records, up, down = [], 0, 0
    for record in strategy.rounds:
        r = record["round"]
        b_up, b_down = grid.bytes("up", ["train"], r), grid.bytes("down", ["train"], r)
        up, down = up + b_up, down + b_down
        records.append(
            {
                **record,
                "bytes_up": b_up,
                "bytes_down": b_down,
                "cum_bytes_up": up,
                "cum_bytes_down": down,
                "eval_bytes_down": grid.bytes("down", ["evaluate"], r),
            }
        )
    return records


def write_outputs(
    out: Path, summary: dict[str, Any], strategy: PotaraFedAvg, grid: MeteredGrid
) -> None:
    """summary.json, rounds.jsonl, messages.jsonl (every message's keys and bytes), federated.safetensors."""
    atomic_write(out / "summary.json", json.dumps(json_safe(summary), indent=2))
    atomic_write(
        out / "rounds.jsonl",
        "".join(json.dumps(json_safe(r)) + "\n" for r in round_records(strategy, grid)),
    )
    atomic_write(
        out / "messages.jsonl", "".join(json.dumps(e) + "\n" for e in grid.log)
    )
    atomic_write(out / "federated.safetensors", serialize(strategy.state))


def _missing(
    settings: FlowerSettings, strategy: PotaraFedAvg, personal: dict[str, Personal]
) -> list[str]:
    """Clients without personalized results: lost or failed nodes, and partitions no node registered."""
    registered = {c.partition: c.name for c in strategy.clients}
    return sorted(
        registered.get(p, f"partition-{p}")
        for p in range(settings.run.data.num_clients)
        if registered.get(p) not in personal
    )


def _node_timings(personal: dict[str, Personal]) -> dict[str, float]:
    """Per-client means of the nodes' local epoch and Fisher seconds."""
    keys = {
        "local_epoch_s": "local_epoch-s",
        "fisher_s": "fisher-s",
    }
    n = max(1, len(personal))
    return {
        k: sum(p.timings.get(v, 0.0) for p in personal.values()) / n
        for k, v in keys.items()
    }
