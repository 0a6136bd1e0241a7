"""The λ estimators on the report set, by test accuracy, read once after the default was frozen on dev (issue 12).

    .venv/bin/potara bench --suite report --out runs/report
    .venv/bin/python benchmarks/lambda_report.py --out runs/report [--write benchmarks/results/lambda-report.json]

One row per estimator that ran (``potara`` is the default, frozen on dev: lambda-study-dev.md): mean test accuracy
(mean over settings of the mean over clients), paired differences against the references (95% t-intervals on
the (setting, seed) means, stratified by setting; uncorrected), the mean |λ − λ of oracle_test| per client, and the mean per client of λ seconds ÷ its
training seconds (a row's ``lambda_cost.seconds`` ÷ ``timing.train_s``). Pooled over the settings where every
reference ran, then per setting. Nothing here chooses anything.
"""

from __future__ import annotations

import argparse
import math

from choose import acc_rows, commit, score, suite_cells
from lambda_study import ci_text, lambda_gap, paired, write_tables

ESTIMATORS = ["potara", "potara_crossfit", "potara_folds", "potara_cautious", "potara_paper"]
REFERENCES = ["fedit_ft", "fedit_ft_matched", "local", "fixed", "fixed@peers.fixed_lambda=0.1", "oracle_val",
              "oracle_test"]


def cost_ratio(cells: dict, method: str) -> float:
    """Mean over (cell, client) of the seconds spent choosing λ ÷ the client's training seconds."""
    ratios = [row["lambda_cost"]["seconds"] / cell.summary["timing"]["train_s"]
              for group in cells.values() for cell in group
              for row in cell.methods.get(method, {}).get("per_client", []) if row.get("lambda_cost")]
    return sum(ratios) / len(ratios) if ratios else float("nan")


def rows(cells: dict, against: list[str]) -> list[dict]:
    out = []
    for method in ESTIMATORS:
        accuracy, per = score(acc_rows(cells, method, "acc"))
        if math.isnan(accuracy):
            continue
        out.append({"method": method, "test_acc": accuracy, "per_setting": per,
                    "vs": {ref: paired(cells, method, ref, "acc") for ref in against},
                    "lambda_gap_to_oracle_test": lambda_gap(cells, method, "oracle_test"),
                    "lambda_s_ratio": cost_ratio(cells, method)})
    return out


def scopes(cells: dict) -> dict[str, dict]:
    """The settings where every reference ran, pooled (when there are several), then each setting on its own."""
    full = {s: group for s, group in cells.items() if group and all(ref in group[0].methods for ref in REFERENCES)}
    pooled = {"pooled: " + " + ".join(full): full} if len(full) > 1 else {}
    return {**pooled, **{s: {s: group} for s, group in cells.items() if group}}


def markdown(tables: dict[str, list[dict]], references: dict[str, dict], missing: list[str]) -> str:
    lines = [f"# λ estimators on the report set (test accuracy; commit {commit()})", ""]
    if missing:
        lines += [f"missing cells: {', '.join(missing)}", ""]
    for scope, table in tables.items():
        against = [ref for ref in REFERENCES if any(r["vs"].get(ref) for r in table)]
        lines += [f"## {scope}", "", "| estimator | test acc | " + " | ".join(f"− {a}" for a in against)
                  + " | |λ − λ oracle_test| | λ s ÷ train s |", "|---|---|" + "---|" * len(against) + "---|---|"]
        for r in table:
            label = r["method"] + (" (default: heldout)" if r["method"] == "potara" else "")
            diffs = " | ".join(ci_text(r["vs"].get(a)) for a in against)
            lines.append(f"| {label} | {r['test_acc']:.4f} | {diffs} | {r['lambda_gap_to_oracle_test']:.3f} "
                         f"| {r['lambda_s_ratio']:.3f} |")
        refs = references[scope]
        lines += ["", "references: " + ", ".join(f"{m} {acc:.4f}" for m, acc in refs.items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", nargs="+", default=["runs/report"], help="the report bench's output folder(s)")
    parser.add_argument("--suite", default="report")
    parser.add_argument("--write", help="also write the tables as JSON here (and Markdown beside it)")
    args = parser.parse_args()
    suite, cells, missing = suite_cells(args.suite, args.out)
    tables, references = {}, {}
    for scope, part in scopes(cells).items():
        tables[scope] = rows(part, REFERENCES)
        units = {m: acc_rows(part, m, "acc") for m in REFERENCES}
        references[scope] = {m: score(u)[0] for m, u in units.items() if u}
    text = markdown(tables, references, missing)
    print(text)
    if args.write:
        command = f"benchmarks/lambda_report.py --out {' '.join(args.out)}"
        record = {"suite": suite.name, "commit": commit(), "command": command, "missing_cells": missing,
                  "tables": tables, "references": references}
        write_tables(args.write, record, text)


if __name__ == "__main__":
    main()
