"""What data and compute each method of a run uses: the splits it reads, whether it has a federation of its own,
and its measured client compute (means per client), as a Markdown table from a run's ``summary.json``.

    .venv/bin/python benchmarks/method_budgets.py runs/<run> [> table.md]

``train`` is the client's training split (read in the federation and/or locally), ``val`` its validation split
(what Potara's ``heldout`` fits λ on), ``test`` its test split, read only by a bound. Compute is the method's
``compute`` in ``summary.json``: its share of its federation's training passes plus its own personalization's,
the personalization's forward passes, and seconds; "λ passes" is the part spent choosing λ (``lambda_cost``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from potara.config import from_dict
from potara.methods import VARIANT, build

ESTIMATOR_SPLITS = {"heldout": "train, val", "crossfit": "train, val", "cautious": "train, val", "paper": "train",
                    "fisher": "train", "folds": "train", "spread": "train (+ the server's spread)"}
SPLITS = {"fedit_ft_es": "train, val", "fedit_ft_matched": "train, val", "oracle_val": "train, val",
          "oracle_test": "train, test", "oracle_split": "train, test"}


def splits_of(name: str, estimator: str) -> str:
    """The splits method ``name`` reads (a Potara method: its estimator's)."""
    base = name.split(VARIANT)[0]
    if base in ("potara", "potara_module"):
        return ESTIMATOR_SPLITS[estimator]
    if base.startswith("potara_"):
        return ESTIMATOR_SPLITS[base.removeprefix("potara_")]
    return SPLITS.get(base, "train")


def row(name: str, method: dict, cfg) -> str:
    spec = build(name, cfg)
    own = "none" if not spec.federated else ("own" if spec.federation.name != "fedit" else "FedIT's")
    estimator = from_dict({**cfg.to_dict(), **_variant(name, cfg)}).potara.estimator
    c = method["compute"]
    rows = method["per_client"]
    lam = [r["lambda_cost"] for r in rows if "lambda_cost" in r]
    lam_text = (f"{sum(x['train_passes'] for x in lam) / len(lam):,.0f} / {sum(x['forward_passes'] for x in lam) / len(lam):,.0f}"
                if lam else "–")
    bound = " (bound)" if method.get("bound") else ""
    return (f"| {name}{bound} | {splits_of(name, estimator)} | {own} | {c['train_passes']:,.0f} | "
            f"{c['forward_passes']:,.0f} | {lam_text} | {c['seconds']:.2f} |")


def _variant(name: str, cfg) -> dict:
    """The ``potara.estimator`` a variant sets, as a config section (else nothing)."""
    for item in name.split(VARIANT)[1:]:
        key, value = item.split("=", 1)
        if key == "potara.estimator":
            return {"potara": {**cfg.to_dict()["potara"], "estimator": value}}
    return {}


def table(run: Path) -> str:
    summary = json.loads((run / "summary.json").read_text())
    cfg = from_dict(summary["config"])
    head = ["| method | splits read | federation | train passes | forward passes | λ passes (train / fwd) | seconds |",
            "|---|---|---|---|---|---|---|"]
    return "\n".join(head + [row(name, m, cfg) for name, m in summary["methods"].items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run's output folder (holds summary.json)")
    print(table(parser.parse_args().run))


if __name__ == "__main__":
    main()
