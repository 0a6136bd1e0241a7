"""Every tuned choice, made on the dev suite by validation accuracy, printed with its evidence.

    .venv/bin/potara bench --suite dev --out runs/dev
    .venv/bin/python benchmarks/choose.py --out runs/dev [more dev outputs] [--write benchmarks/results/dev-choices.json]
    .venv/bin/python benchmarks/choose.py --out benchmarks/results/dev-units.csv   # from the committed records

Several ``--out`` of the same suite (methods run in parts, on the same seeds and clients) are read as one. Each is
a bench output folder with its cells, or a ``<suite>-units.csv`` (or a folder holding one) with the
``<suite>-cells.csv`` beside it (its compute): the choices are recomputable from the committed records alone.

A knob is a family of methods in the dev suite: ``name@key=value`` variants (``ditto@peers.ditto_mu=1.0``)
and Potara's estimators (``potara_<estimator>`` → ``potara.estimator``). A candidate's score is its mean
validation accuracy over (seed, client), averaged over the dev settings; the highest wins (ties: the first
listed). The winner's paired difference against the runner-up on validation accuracy (t-interval on the
(setting, seed) means, stratified by setting; ``potara.reporting.stats``) says whether the choice is resolved or a
coin toss. Test accuracy is never read.

Estimators that fit λ on the validation split (heldout, crossfit, cautious) see their own validation
accuracy in-sample, which flatters them; the table flags them (``fits on val``).

Beside each family, its tuning compute: the sum over its candidates of each one's measured mean client compute
(training and forward example passes, seconds; mean over the dev cells), its federation included when the
candidate has one of its own (Ditto's μ); the shared FedIT federation, run once for every method, is not
counted. Work a candidate shares with another (Potara's local adapter) is charged to each, as in the report. A
family whose candidates have identical validation accuracy on every unit is flagged: that knob had no effect.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from potara.bench.records import TOTALS, UNITS, beside, record_path
from potara.bench.report import Cell, load_cells
from potara.bench.suite import Suite, load_suite
from potara.bench.totals import read_totals, total_rows
from potara.bench.units import cells_from_units
from potara.personalize.estimators import ESTIMATORS
from potara.reporting.communication import FEDIT
from potara.reporting.outputs import atomic_write
from potara.reporting.stats import paired_difference

FITS_ON_VAL = {"potara_heldout", "potara_crossfit", "potara_cautious"}
COSTS = ("train_passes", "forward_passes", "seconds")  # a candidate's tuning compute, per client


def fits_on_val(method: str) -> bool:
    """Whether the method fits something on the validation split: an in-sample λ estimator, or a setting that
    chooses on validation (the safety rule), in any variant."""
    base, *keys = method.split("@")
    return base in FITS_ON_VAL or "potara.safety=val_loss" in keys or (
        base in {"potara", "potara_heldout"} and "potara.granularity=head_lora" in keys)


@dataclass(frozen=True)
class Candidate:
    method: str
    knob: str
    value: object


def candidates(methods: list[str]) -> dict[str, list[Candidate]]:
    """The suite's methods grouped by the knobs they sweep (methods that sweep nothing are left out): every variant
    of one method is one family (``ditto@peers.ditto_mu=0.01`` and ``ditto@peers.ditto_mu=0.01@peers.ditto_lr_scale=2.0``
    compete), its knob the keys its variants set, a candidate's value its ``key=value`` items (a one-key family: the value)."""
    variants: dict[str, list[tuple[str, dict[str, object]]]] = defaultdict(list)
    knobs: dict[str, list[Candidate]] = {}
    for method in methods:
        if "@" in method:
            name, *items = method.split("@")
            pairs = dict(item.split("=", 1) for item in items)
            variants[name].append((method, {k: json.loads(v) if v[:1].isdigit() else v for k, v in pairs.items()}))
        elif method.startswith("potara_") and method.removeprefix("potara_") in ESTIMATORS:
            knobs.setdefault("potara: potara.estimator", []).append(
                Candidate(method, "potara.estimator", method.removeprefix("potara_")))
    for name, family in variants.items():
        keys = list(dict.fromkeys(k for _, values in family for k in values))
        knobs[f"{name}: {' + '.join(keys)}"] = [
            Candidate(method, " + ".join(keys), _value(values, len(keys))) for method, values in family]
    return knobs


def _value(values: dict[str, object], family_keys: int) -> object:
    """A candidate's value: the value of its family's one key, else its ``key=value`` items."""
    if family_keys == 1:
        return next(iter(values.values()))
    return ", ".join(f"{k}={v}" for k, v in values.items())


def swept(suite: Suite, cells: dict) -> list[str]:
    """The suite's methods, then those another ``--out`` of it added (``--methods``: a candidate past a grid's edge)."""
    found = dict.fromkeys(name for group in cells.values() for cell in group for name in cell.methods)
    return suite.methods + [m for m in found if m not in suite.methods]


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


def tuning_cost(row: dict) -> dict[str, float]:
    """One candidate's compute in one cell (a totals row): its mean client compute, less the shared FedIT
    federation's rounds when it personalizes from them."""
    shared = row["federation"] == FEDIT
    return {"train_passes": (row["train_passes"] or 0) - (row["federated_passes"] if shared else 0),
            "forward_passes": row["forward_passes"] or 0,
            "seconds": (row["seconds"] or 0) - (row["federated_s"] if shared else 0)}


def candidate_compute(totals: dict[tuple, dict], method: str) -> dict[str, float] | None:
    """``tuning_cost`` of ``method``, mean over the cells it ran in (None: no record of its compute)."""
    costs = [tuning_cost(row) for (_, _, name), row in totals.items() if name == method]
    if not costs:
        return None
    out = {k: sum(c[k] for c in costs) / len(costs) for k in costs[0]}
    out["own_federation"] = any(row["federation"] == method for (_, _, name), row in totals.items() if name == method)
    return out


def shared_federation(totals: dict[tuple, dict]) -> dict[str, float] | None:
    """The shared FedIT federation's mean client compute (passes, seconds), mean over the cells."""
    rows = {key[:2]: row for key, row in totals.items() if row["federation"] == FEDIT}  # one per cell
    if not rows:
        return None
    return {"train_passes": sum(r["federated_passes"] for r in rows.values()) / len(rows),
            "seconds": sum(r["federated_s"] for r in rows.values()) / len(rows)}


def indistinguishable(units: dict[str, dict[tuple, float]]) -> list[list[str]]:
    """Groups of two or more candidates with identical validation accuracy on every unit: no effect."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for method, accs in units.items():
        groups[tuple(sorted(accs.items()))].append(method)
    return [names for names in groups.values() if len(names) > 1]


def choose(cells: dict, family: list[Candidate], totals: dict[tuple, dict] | None = None) -> dict:
    """The winner of one knob and the evidence: every candidate's score and compute, the winner against the
    runner-up, the candidates without effect, and the family's tuning compute (``totals``: (setting, seed,
    method) → its totals row)."""
    scored = []
    for cand in family:
        units = val_rows(cells, cand.method)
        overall, per = score(units)
        scored.append((overall, cand, per, units))
    ranked = sorted((item for item in scored if item[3]), key=lambda item: -item[0])  # candidates that ran
    if not ranked:
        raise SystemExit(f"choose.py: no candidate of {family[0].knob} ({', '.join(c.method for c in family)}) has "
                         "validation records in --out; is --suite the suite that wrote it?")
    (best, winner, _, best_units), runner = ranked[0], ranked[1] if len(ranked) > 1 else None
    margin = None
    if runner is not None:
        common = sorted(set(best_units) & set(runner[3]))
        diff = paired_difference([best_units[u] for u in common], [runner[3][u] for u in common],
                                 groups=[u[:2] for u in common], strata=[u[0] for u in common])
        margin = {"against": runner[1].method, **diff.to_dict()}
    computes = {c.method: candidate_compute(totals or {}, c.method) for _, c, _, units in scored if units}
    return {
        "knob": winner.knob, "chosen": winner.value, "method": winner.method, "val_acc": best,
        "against_runner_up": margin,
        "candidates": [{"method": c.method, "value": c.value, "val_acc": s, "per_setting": per,
                        "fits_on_val": fits_on_val(c.method), "compute": computes[c.method]}
                       for s, c, per, units in scored if units],
        "not_run": [c.method for _, c, _, units in scored if not units],
        "no_effect": indistinguishable({c.method: units for _, c, _, units in scored if units}),
        "tuning_compute": family_compute(list(computes.values())),
    }


def family_compute(computes: list[dict | None]) -> dict | None:
    """The sum over a family's candidates of their compute (None when one has no record of it)."""
    if not computes or any(c is None for c in computes):
        return None
    return {"candidates": len(computes), **{k: sum(c[k] for c in computes) for k in COSTS},
            "own_federations": sum(c["own_federation"] for c in computes)}


def table(name: str, result: dict) -> str:
    settings = sorted({s for c in result["candidates"] for s in c["per_setting"]})
    lines = [f"### {name}", "", f"| candidate | val acc | {' | '.join(settings)} | train passes | forward passes | seconds |",
             "|---|---|" + "---|" * len(settings) + "---|---|---|"]
    for c in result["candidates"]:
        mark = " **(chosen)**" if c["method"] == result["method"] else ""
        flag = " (fits on val)" if c["fits_on_val"] else ""
        cols = " | ".join(f"{c['per_setting'].get(s, float('nan')):.4f}" for s in settings)
        lines.append(f"| {c['value']}{flag}{mark} | {c['val_acc']:.4f} | {cols} | {_costs(c['compute'])} |")
    m = result["against_runner_up"]
    if result["not_run"]:
        lines += ["", f"not run: {', '.join(result['not_run'])}"]
    if m:
        low, high = m["ci"]
        lines += ["", f"chosen − runner-up ({m['against']}) on validation: {m['mean']:+.4f} "
                  f"[{low:+.4f}, {high:+.4f}], W/T/L {m['wins']}/{m['ties']}/{m['losses']}: {m['verdict']}"]
    for group in result["no_effect"]:
        lines += ["", f"**no effect**: candidates {' and '.join(group)} are indistinguishable (identical validation "
                  "accuracy on every unit)"]
    total = result["tuning_compute"]
    if total:
        passes, forward, seconds = _costs(total).split(" | ")
        lines += ["", f"tuning compute (sum over {total['candidates']} candidates, per client): {passes} training "
                  f"passes, {forward} forward passes, {seconds} s"]
    return "\n".join(lines)


def _costs(compute: dict | None) -> str:
    """Train passes | forward passes | seconds ('–' each without a record of them)."""
    if compute is None:
        return " | ".join(["–"] * len(COSTS))
    return f"{compute['train_passes']:,.0f} | {compute['forward_passes']:,.0f} | {compute['seconds']:.1f}"


def compute_table(results: dict[str, dict], shared: dict | None) -> str:
    """Every family's tuning compute side by side, Potara's estimator family among them."""
    lines = [
        "### Tuning compute per method, side by side", "",
        "Per client, mean over the dev cells, summed over the family's candidates: training example passes, "
        "forward example passes, seconds; a candidate's own federation included (own federations: how many of "
        "its candidates have one). The shared FedIT federation is run once for every method and not counted"
        + (f" ({shared['train_passes']:,.0f} training passes, {shared['seconds']:.1f} s per client)." if shared else "."),
        "", "| family | candidates | train passes | forward passes | seconds | own federations |", "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        total = r["tuning_compute"]
        lines.append(f"| {name} | {len(r['candidates'])} | {_costs(total)} | {total['own_federations'] if total else '–'} |")
    return "\n".join(lines)


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def suite_cells(suite_name: str, outs: list[str]) -> tuple[Suite, dict, list[str], dict[tuple, dict]]:
    """The suite, its finished cells joined over ``outs``, the (setting, seed) cells still missing, and the
    totals rows ((setting, seed, method) → row) of every part that has them."""
    suite = load_suite(suite_name)
    parts = [read_part(Path(out), suite) for out in outs]
    cells = joined_cells([c for c, _ in parts])
    totals = {(r["setting"], r["seed"], r["method"]): r for _, rows in parts for r in rows}
    missing = [f"{s} seed {seed}" for s in suite.settings for seed in suite.seeds
               if seed not in {c.seed for c in cells.get(s, [])}]
    return suite, cells, missing, totals


def read_part(out: Path, suite: Suite) -> tuple[dict, list[dict]]:
    """One ``--out``: a bench folder's cells, or a units CSV (or a folder holding ``<suite>-units.csv``) with the
    totals CSV beside it; and its totals rows (none when a units CSV has no totals CSV beside it)."""
    if (out / "cells").is_dir():
        cells = load_cells(out, suite)
        return cells, total_rows(cells)
    units = record_path(out, suite.name, UNITS) if out.is_dir() else out
    if not units.is_file():
        raise SystemExit(f"choose.py: '{out}' has neither cells nor a units CSV ({units.name}); give a bench "
                         "output folder or its <suite>-units.csv")
    totals = beside(units, TOTALS)
    return cells_from_units(units), read_totals(totals) if totals.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", nargs="+", default=["runs/dev"],
                        help="the dev bench's output folder(s), or its dev-units.csv")
    parser.add_argument("--suite", default="dev")
    parser.add_argument("--write", help="also write the choices and their evidence as JSON here")
    args = parser.parse_args()
    suite, cells, missing, totals = suite_cells(args.suite, args.out)
    results = {name: choose(cells, family, totals) for name, family in candidates(swept(suite, cells)).items()}
    print(f"# Choices on the `{suite.name}` suite by validation accuracy (commit {commit()})\n")
    if missing:
        print(f"missing cells: {', '.join(missing)}\n")
    for name, result in results.items():
        print(table(name, result) + "\n")
    print(compute_table(results, shared_federation(totals)) + "\n")
    print("chosen: " + " ".join(f"{r['knob']}={r['chosen']}" for r in results.values()))
    if args.write:
        record = {"suite": suite.name, "commit": commit(), "command": f"benchmarks/choose.py --out {' '.join(args.out)}",
                  "missing_cells": missing, "shared_federation": shared_federation(totals), "choices": results}
        atomic_write(args.write, json.dumps(record, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
