"""What choosing λ costs each estimator, against the client's training, from finished bench cells.

    .venv/bin/python benchmarks/lambda_cost.py runs/dev [more bench outputs]

Per method that estimates λ (rows with ``lambda_cost``), means over (cell, client): seconds and example
passes spent choosing λ (extra local trainings, Fisher, held-out evaluations; not the local adapter the merge
itself needs), against the client's training: its federated rounds (its share of the federation's training
passes) plus its local adapter. The goal (SPEC check 5) is a ratio of at most 0.10; the paper reports about
0.08 (ViT) and 0.17 (FLAN). Seconds depend on the machine's load; passes do not.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def cells(outs: list[str]) -> list[dict]:
    return [json.loads(p.read_text()) for out in outs for p in sorted(Path(out).glob("cells/*/seed-*/summary.json"))]


def training(summary: dict) -> tuple[float, float]:
    """Mean per client: (seconds, training passes) of its federated rounds plus its local adapter, which is
    exactly the compute of FedIT + FT, or of the one-λ merge where a setting runs no FedIT + FT (its share of the
    federation, then the local training)."""
    reference = next((summary["methods"][m] for m in ("fedit_ft", "fixed") if m in summary["methods"]), None)
    if reference is None:
        raise SystemExit(f"{summary['config']['seed']}: no fedit_ft nor fixed to measure the training against")
    return summary["timing"]["train_s"], reference["compute"]["train_passes"]


def table(outs: list[str]) -> str:
    rows: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for summary in cells(outs):
        train_s, train_passes = training(summary)
        for name, method in summary["methods"].items():
            for row in method["per_client"]:
                cost = row.get("lambda_cost")
                if cost is None:
                    continue
                rows[name]["seconds"].append(cost["seconds"] / train_s)
                rows[name]["train"].append(cost["train_passes"] / train_passes)
                rows[name]["forward"].append(cost["forward_passes"] / train_passes)
    lines = ["| method | λ seconds ÷ training seconds | λ training passes ÷ training passes "
             "| λ forward passes ÷ training passes |", "|---|---|---|---|"]
    for name, r in sorted(rows.items()):
        lines.append(f"| {name} | {_mean(r['seconds']):.3f} | {_mean(r['train']):.3f} | {_mean(r['forward']):.3f} |")
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outs", nargs="+", help="bench output folders (their cells/*/seed-*/summary.json)")
    print(table(parser.parse_args().outs))


if __name__ == "__main__":
    main()
