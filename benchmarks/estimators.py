"""Estimators side by side: mean personalized accuracy and mean |λ − λ(oracle_test)| per setting.

    .venv/bin/python benchmarks/estimators.py [--quick] [--out runs/estimators]

Each setting is one full embedded run (federation once, every method on the same clients); the
table is printed as markdown and written to ``<out>/estimators.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from potara import config, engine
from potara.reporting import outputs

SETTINGS = {
    "default (4 classes, n 15-200, seed 0)": [],
    "default, seed 1": ["seed=1"],
    "8 classes per client, seed 1": ["data.classes_per_client=8", "seed=1"],
    "dirichlet alpha=0.3, seed 2": ["data.partition=dirichlet", "data.alpha=0.3", "seed=2"],
}
QUICK = ["data.num_clients=6", "fed.rounds=4", "local.epochs=3"]


def lambda_gap(rows: list[dict], oracle: list[dict]) -> float | None:
    """Mean over clients of |λ − λ_oracle_test| (per-module λ averaged over modules)."""
    gaps = []
    for row, best in zip(rows, oracle):
        lam = row.get("lambda")
        if lam is None:
            continue
        lam = sum(lam.values()) / len(lam) if isinstance(lam, dict) else lam
        gaps.append(abs(lam - best["lambda"]))
    return sum(gaps) / len(gaps) if gaps else None


def run_setting(overrides: list[str], out: Path) -> dict:
    cfg = config.load(None, overrides)
    result = engine.run(cfg)
    summary = outputs.summary(cfg.to_dict(), result)
    outputs.atomic_write(out, json.dumps(summary, indent=2, default=float))
    return summary


def table(name: str, summary: dict) -> str:
    methods = summary["methods"]
    oracle = methods["oracle_test"]["per_client"]
    lines = [f"### {name}", "", "| method | mean acc | worst acc | mean abs(λ − λ oracle_test) |", "|---|---|---|---|"]
    for method, m in methods.items():
        gap = lambda_gap(m["per_client"], oracle) if method.startswith(("potara", "oracle", "fixed")) else None
        lines.append(f"| {method} | {m['mean_acc']:.4f} | {m['worst_acc']:.4f} | {'–' if gap is None else f'{gap:.3f}'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer clients/rounds (a smoke run)")
    parser.add_argument("--out", default="runs/estimators")
    parser.add_argument("--set", action="append", default=[], help="extra key=value for every setting")
    parser.add_argument("--only", type=int, nargs="*", help="indices of the settings to run (default: all)")
    args = parser.parse_args()
    out = Path(args.out)
    parts = []
    for i, (name, overrides) in enumerate(SETTINGS.items()):
        if args.only is not None and i not in args.only:
            continue
        extra = overrides + (QUICK if args.quick else []) + args.set
        summary = run_setting(extra, out / f"setting{i}.json")
        parts.append(table(name, summary))
        print(parts[-1] + "\n", flush=True)
    outputs.atomic_write(out / "estimators.md", "\n\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
