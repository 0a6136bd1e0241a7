"""How Potara should choose λ, read from the `dev_lambda` suite by validation accuracy (issue 12).

    .venv/bin/potara bench --suite dev_lambda --out runs/dev-lambda
    .venv/bin/python benchmarks/lambda_study.py --out runs/dev-lambda [--write benchmarks/results/lambda-study-dev.json]

Applies the rules written at the top of the suite file: the default is the best of the ten (estimator, local init)
candidates by validation accuracy among those whose λ costs at most 0.10 of the client's training seconds, unless
the best overall beats it with a paired 95% interval above zero. Then the paper estimator's open choices and the
factor-space merge, each against its own base (same init) on the same clients. Test accuracy is never read.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from choose import acc_rows, commit, score, suite_cells, val_rows
from lambda_cost import training

from potara.personalize.estimators import ESTIMATORS
from potara.reporting.outputs import atomic_write
from potara.reporting.stats import paired_difference

PRETRAINED = "@local.init=pretrained"
COST_GATE = 0.10


def candidates() -> list[str]:
    return [f"potara_{est}{init}" for init in ("", PRETRAINED) for est in ESTIMATORS if est != "fisher"]


def oracle_of(method: str) -> str:
    return "oracle_val" + (PRETRAINED if PRETRAINED in method else "")


def paired(cells: dict, a: str, b: str, key: str = "val_acc") -> dict | None:
    """``a − b`` on ``key`` (validation accuracy) over their common (setting, seed, client) units, by cell."""
    ua, ub = acc_rows(cells, a, key), acc_rows(cells, b, key)
    common = sorted(set(ua) & set(ub))
    if not common:
        return None
    return paired_difference([ua[u] for u in common], [ub[u] for u in common], groups=[u[:2] for u in common],
                             strata=[u[0] for u in common]).to_dict()


def _lam(value) -> float:
    return sum(value.values()) / len(value) if isinstance(value, dict) else float(value)


def lambda_gap(cells: dict, method: str, oracle: str | None = None) -> float:
    """Mean |λ − λ of ``oracle`` (default: the validation oracle at the same init)| over (cell, client)."""
    gaps = []
    for group in cells.values():
        for cell in group:
            rows, oracle_rows = cell.methods.get(method), cell.methods.get(oracle or oracle_of(method))
            if rows and oracle_rows:
                lams = {r["client"]: _lam(r["lambda"]) for r in oracle_rows["per_client"]}
                gaps += [abs(_lam(r["lambda"]) - lams[r["client"]]) for r in rows["per_client"]]
    return _mean(gaps)


def cost_ratios(outs: list[str], method: str) -> tuple[float, float]:
    """Mean over (cell, client) of λ seconds ÷ training seconds and λ training passes ÷ training passes."""
    seconds, passes = [], []
    for out in outs:
        for path in sorted(Path(out).glob("cells/*/seed-*/summary.json")):
            summary = json.loads(path.read_text())
            train_s, train_passes = training(summary)
            for row in summary["methods"].get(method, {}).get("per_client", []):
                seconds.append(row["lambda_cost"]["seconds"] / train_s)
                passes.append(row["lambda_cost"]["train_passes"] / train_passes)
    return _mean(seconds), _mean(passes)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def ci_text(d: dict | None) -> str:
    """A paired difference as `mean [low, high] p verdict` (p: the t-test's); '—' when there was none."""
    if d is None:
        return "—"
    low, high = d["ci"]
    return f"{d['mean']:+.4f} [{low:+.4f}, {high:+.4f}] p {d['p_t']:.3f} {d['verdict']}"


def default_choice(cells: dict, outs: list[str]) -> tuple[dict, list[dict]]:
    rows = []
    for method in candidates():
        overall, per = score(val_rows(cells, method))
        if math.isnan(overall):
            continue
        secs, passes = cost_ratios(outs, method)
        rows.append({"method": method, "val_acc": overall, "per_setting": per, "lambda_s_ratio": secs,
                     "lambda_pass_ratio": passes, "meets_gate": secs <= COST_GATE,
                     "lambda_gap_to_oracle_val": lambda_gap(cells, method),
                     "vs_fedit_ft": paired(cells, method, "fedit_ft"),
                     "vs_fedit_ft_matched": paired(cells, method, "fedit_ft_matched")})
    rows.sort(key=lambda r: -r["val_acc"])
    best = rows[0]
    gated = next((r for r in rows if r["meets_gate"]), None)
    if gated is None or gated is best:
        chosen, why = best, "the best overall" + (" meets the cost gate" if gated is best else "; none meets the gate")
    else:
        margin = paired(cells, best["method"], gated["method"])
        resolved = margin["ci"][0] > 0
        chosen = best if resolved else gated
        why = (f"best overall {best['method']} − best within the gate {gated['method']}: {ci_text(margin)}; "
               + ("resolved, so the best overall (cost goal missed)" if resolved else "not resolved, so the gated one"))
    return {"method": chosen["method"], "why": why}, rows


def study(cells: dict, suite_methods: list[str]) -> list[dict]:
    """Every variant of the paper estimator and every factor-space merge against its base at the same init."""
    out = []
    for method in suite_methods:
        name, _, rest = method.partition("@")
        items = [i for i in rest.split("@") if i and not i.startswith("local.init")]
        if not items or not (name.startswith("potara_") or name == "oracle_val"):
            continue
        base = name + (PRETRAINED if PRETRAINED in method else "")
        overall, _ = score(val_rows(cells, method))
        out.append({"method": method, "base": base, "change": "@".join(items), "val_acc": overall,
                    "vs_base": paired(cells, method, base), "lambda_gap_to_oracle_val": lambda_gap(cells, method)})
    return out


def references(cells: dict, suite_methods: list[str]) -> list[dict]:
    names = ["local", "fedit", "fedit_ft", "fedit_ft_matched", "oracle_val", "oracle_val" + PRETRAINED,
             *[m for m in suite_methods if m.startswith("fixed@")]]
    return [{"method": m, "val_acc": score(val_rows(cells, m))[0]} for m in names if val_rows(cells, m)]


def markdown(chosen: dict, rows: list[dict], studied: list[dict], refs: list[dict], missing: list[str]) -> str:
    settings = sorted({s for r in rows for s in r["per_setting"]})
    lines = [f"# λ study on dev (validation accuracy; commit {commit()})", ""]
    if missing:
        lines += [f"missing cells: {', '.join(missing)}", ""]
    lines += ["## The default: ten (estimator, local init) candidates", "",
              f"| candidate | val acc | {' | '.join(settings)} | − fedit_ft | − fedit_ft_matched | |λ − λ oracle_val| "
              "| λ s ÷ train s | λ train passes ÷ train passes |",
              "|---|---|" + "---|" * len(settings) + "---|---|---|---|---|"]
    for r in rows:
        mark = " **(chosen)**" if r["method"] == chosen["method"] else ""
        cols = " | ".join(f"{r['per_setting'].get(s, float('nan')):.4f}" for s in settings)
        gate = "" if r["meets_gate"] else " ✗"
        lines.append(f"| {r['method']}{mark} | {r['val_acc']:.4f} | {cols} | {ci_text(r['vs_fedit_ft'])} "
                     f"| {ci_text(r['vs_fedit_ft_matched'])} | {r['lambda_gap_to_oracle_val']:.3f} "
                     f"| {r['lambda_s_ratio']:.3f}{gate} | {r['lambda_pass_ratio']:.3f} |")
    lines += ["", f"Chosen: **{chosen['method']}** — {chosen['why']}.", "",
              "## The paper estimator's open choices and the factor-space merge (each against its base, same init)", "",
              "| variant | base | val acc | − base [95% CI] | |λ − λ oracle_val| |", "|---|---|---|---|---|"]
    for s in studied:
        lines.append(f"| {s['change']} | {s['base']} | {s['val_acc']:.4f} | {ci_text(s['vs_base'])} "
                     f"| {s['lambda_gap_to_oracle_val']:.3f} |")
    lines += ["", "## References", "", "| method | val acc |", "|---|---|"]
    lines += [f"| {r['method']} | {r['val_acc']:.4f} |" for r in refs]
    return "\n".join(lines)


def write_tables(path: str, record: dict, text: str) -> None:
    """``record`` as JSON at ``path`` and ``text`` as Markdown beside it, headed by ``record["command"]``."""
    atomic_write(path, json.dumps(record, indent=2, default=str) + "\n")
    atomic_write(str(Path(path).with_suffix(".md")), f"<!-- {record['command']} -->\n{text}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", nargs="+", default=["runs/dev-lambda"], help="the dev_lambda bench's output folder(s)")
    parser.add_argument("--suite", default="dev_lambda")
    parser.add_argument("--write", help="also write the tables as JSON here (and Markdown beside it)")
    args = parser.parse_args()
    suite, cells, missing = suite_cells(args.suite, args.out)
    chosen, rows = default_choice(cells, args.out)
    studied, refs = study(cells, suite.methods), references(cells, suite.methods)
    text = markdown(chosen, rows, studied, refs, missing)
    print(text)
    if args.write:
        command = f"benchmarks/lambda_study.py --out {' '.join(args.out)}"
        record = {"suite": suite.name, "commit": commit(), "command": command, "missing_cells": missing,
                  "chosen": chosen, "candidates": rows, "study": studied, "references": refs}
        write_tables(args.write, record, text)


if __name__ == "__main__":
    main()
