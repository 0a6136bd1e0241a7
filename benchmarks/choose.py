"""Every tuned choice, made on the dev suite by validation accuracy, printed with its evidence.

    .venv/bin/potara bench --suite dev --out runs/dev
    .venv/bin/python benchmarks/choose.py --out runs/dev [more dev outputs] [--write benchmarks/results/dev-choices.json]

Several ``--out`` folders of the same suite (methods run in parts, on the same seeds and clients) are read as one.

A knob is a family of methods in the dev suite: ``name@key=value`` variants (``ditto@peers.ditto_mu=1.0``)
and Potara's estimators (``potara_<estimator>`` → ``potara.estimator``). A candidate's score is its mean
validation accuracy over (seed, client), averaged over the dev settings; the highest wins (ties: the first
listed). The winner's paired difference against the runner-up on validation accuracy (t-interval on the
(setting, seed) means, stratified by setting; ``potara.reporting.stats``) says whether the choice is resolved or a
coin toss. Test accuracy is never read.

Estimators that fit λ on the validation split (heldout, crossfit, cautious) see their own validation
accuracy in-sample, which flatters them; the table flags them (``fits on val``).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from potara.bench.report import Cell, load_cells
from potara.bench.suite import Suite, load_suite
from potara.personalize.estimators import ESTIMATORS
from potara.reporting.outputs import atomic_write
from potara.reporting.stats import paired_difference

FITS_ON_VAL = {"potara_heldout", "potara_crossfit", "potara_cautious"}


@dataclass(frozen=True)
class Candidate:
    method: str
    knob: str
    value: object


def candidates(methods: list[str]) -> dict[str, list[Candidate]]:
    """The suite's methods grouped by the knob they sweep (methods that sweep nothing are left out)."""
    knobs: dict[str, list[Candidate]] = defaultdict(list)
    for method in methods:
        if "@" in method:
            name, item = method.split("@", 1)
            key, raw = item.split("=", 1)
            knobs[f"{name}: {key}"].append(Candidate(method, key, json.loads(raw) if raw[:1].isdigit() else raw))
        elif method.startswith("potara_") and method.removeprefix("potara_") in ESTIMATORS:
            knobs["potara: potara.estimator"].append(Candidate(method, "potara.estimator", method.removeprefix("potara_")))
    return dict(knobs)


def joined_cells(parts: list[dict]) -> dict:
    """Cells of several outputs of one suite as one: per (setting, seed), every part's methods together."""
    joined: dict = {}
    for part in parts:
        for setting, group in part.items():
            for cell in group:
                mine = joined.setdefault(setting, {}).setdefault(cell.seed, Cell(cell.seed, {**cell.summary, "methods": {}}, []))
                mine.summary["methods"].update(cell.methods)
    return {setting: list(by_seed.values()) for setting, by_seed in joined.items()}


def val_rows(cells: dict, method: str) -> dict[tuple, float]:
    """Validation accuracy per (setting, seed, client) unit."""
    return acc_rows(cells, method, "val_acc")


def acc_rows(cells: dict, method: str, key: str) -> dict[tuple, float]:
    """The per-client ``key`` (``val_acc``, or ``acc`` on test) per (setting, seed, client) unit."""
    out = {}
    for setting, group in cells.items():
        for cell in group:
            for row in cell.methods.get(method, {}).get("per_client", []):
                if row.get(key) is not None and math.isfinite(row[key]):
                    out[(setting, cell.seed, row["client"])] = row[key]
    return out


def score(units: dict[tuple, float]) -> tuple[float, dict[str, float]]:
    """Mean over settings of the mean over that setting's units, and the per-setting means."""
    by_setting: dict[str, list[float]] = defaultdict(list)
    for (setting, _, _), acc in units.items():
        by_setting[setting].append(acc)
    per = {s: sum(v) / len(v) for s, v in by_setting.items()}
    return (sum(per.values()) / len(per) if per else float("nan")), per


def choose(cells: dict, family: list[Candidate]) -> dict:
    """The winner of one knob and the evidence: every candidate's score, the winner against the runner-up."""
    scored = []
    for cand in family:
        units = val_rows(cells, cand.method)
        overall, per = score(units)
        scored.append((overall, cand, per, units))
    ranked = sorted((item for item in scored if item[3]), key=lambda item: -item[0])  # candidates that ran
    (best, winner, _, best_units), runner = ranked[0], ranked[1] if len(ranked) > 1 else None
    margin = None
    if runner is not None:
        common = sorted(set(best_units) & set(runner[3]))
        diff = paired_difference([best_units[u] for u in common], [runner[3][u] for u in common],
                                 groups=[u[:2] for u in common], strata=[u[0] for u in common])
        margin = {"against": runner[1].method, **diff.to_dict()}
    return {
        "knob": winner.knob, "chosen": winner.value, "method": winner.method, "val_acc": best,
        "against_runner_up": margin,
        "candidates": [{"method": c.method, "value": c.value, "val_acc": s, "per_setting": per,
                        "fits_on_val": c.method in FITS_ON_VAL} for s, c, per, units in scored if units],
        "not_run": [c.method for _, c, _, units in scored if not units],
    }


def table(name: str, result: dict) -> str:
    settings = sorted({s for c in result["candidates"] for s in c["per_setting"]})
    lines = [f"### {name}", "", f"| candidate | val acc | {' | '.join(settings)} |",
             "|---|---|" + "---|" * len(settings)]
    for c in result["candidates"]:
        mark = " **(chosen)**" if c["method"] == result["method"] else ""
        flag = " (fits on val)" if c["fits_on_val"] else ""
        cols = " | ".join(f"{c['per_setting'].get(s, float('nan')):.4f}" for s in settings)
        lines.append(f"| {c['value']}{flag}{mark} | {c['val_acc']:.4f} | {cols} |")
    m = result["against_runner_up"]
    if result["not_run"]:
        lines += ["", f"not run: {', '.join(result['not_run'])}"]
    if m:
        low, high = m["ci"]
        lines += ["", f"chosen − runner-up ({m['against']}) on validation: {m['mean']:+.4f} "
                  f"[{low:+.4f}, {high:+.4f}], W/T/L {m['wins']}/{m['ties']}/{m['losses']}: {m['verdict']}"]
    return "\n".join(lines)


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def suite_cells(suite_name: str, outs: list[str]) -> tuple[Suite, dict, list[str]]:
    """The suite, its finished cells joined over ``outs``, and the (setting, seed) cells still missing."""
    suite = load_suite(suite_name)
    cells = joined_cells([load_cells(Path(out), suite) for out in outs])
    missing = [f"{s} seed {seed}" for s in suite.settings for seed in suite.seeds
               if seed not in {c.seed for c in cells.get(s, [])}]
    return suite, cells, missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", nargs="+", default=["runs/dev"], help="the dev bench's output folder(s)")
    parser.add_argument("--suite", default="dev")
    parser.add_argument("--write", help="also write the choices and their evidence as JSON here")
    args = parser.parse_args()
    suite, cells, missing = suite_cells(args.suite, args.out)
    results = {name: choose(cells, family) for name, family in candidates(suite.methods).items()}
    print(f"# Choices on the `{suite.name}` suite by validation accuracy (commit {commit()})\n")
    if missing:
        print(f"missing cells: {', '.join(missing)}\n")
    for name, result in results.items():
        print(table(name, result) + "\n")
    print("chosen: " + " ".join(f"{r['knob']}={r['chosen']}" for r in results.values()))
    if args.write:
        record = {"suite": suite.name, "commit": commit(), "command": f"benchmarks/choose.py --out {' '.join(args.out)}",
                  "missing_cells": missing, "choices": results}
        atomic_write(args.write, json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
