"""The shared training defaults chosen on the `dev-defaults` suite by validation accuracy, printed with the evidence.

    .venv/bin/potara bench --suite dev-defaults --out benchmarks/results/dev-defaults
    .venv/bin/python benchmarks/choose_defaults.py --out benchmarks/results/dev-defaults [--write FILE.md]

A setting of that suite is ``<base>@<knob>=<value>`` (``classes@head=10``); a candidate is a knob's value, scored on
every base setting and dev seed. The rule, written in the suite file before it ran: the candidate with the highest
mean validation accuracy of ``local`` and ``fedit_ft`` (methods that fit nothing on validation) over its units
(setting, seed, client) wins. The winner against the runner-up: the paired difference of that score per unit, a
t-interval on the (base setting, seed) cluster means stratified by base setting (``potara.reporting.stats``).
``potara_heldout`` is printed beside it for information (it fits λ on validation: in-sample). Choose.py handles
method variants; this handles settings, since a shared key changes the federation itself.
"""

from __future__ import annotations

import argparse
import subprocess
from collections import defaultdict
from pathlib import Path

from potara.bench.report import load_cells
from potara.bench.suite import load_suite
from potara.reporting.outputs import atomic_write
from potara.reporting.stats import paired_difference

SCORED = ("local", "fedit_ft")
BESIDE = "potara_heldout"


def unit_scores(cells: dict) -> dict[str, dict[tuple, dict[str, float]]]:
    """knob=value → (base setting, seed, client) → method → validation accuracy."""
    out: dict[str, dict[tuple, dict[str, float]]] = defaultdict(dict)
    for setting, group in cells.items():
        base, candidate = setting.split("@", 1)
        for cell in group:
            for name, method in cell.methods.items():
                for row in method["per_client"]:
                    out[candidate].setdefault((base, cell.seed, row["client"]), {})[name] = row["val_acc"]
    return out


def score(units: dict[tuple, dict[str, float]], names: tuple[str, ...]) -> dict[tuple, float]:
    """Per unit, the mean validation accuracy of ``names`` (units where all of them ran)."""
    return {u: sum(v[n] for n in names) / len(names) for u, v in units.items() if all(n in v for n in names)}


def table(scores: dict[str, dict[tuple, dict[str, float]]]) -> tuple[str, str]:
    """The Markdown table of every candidate, and the winner's name."""
    means = {c: _mean(score(u, SCORED)) for c, u in scores.items()}
    ranked = sorted(means, key=lambda c: -means[c])
    lines = ["| candidate | units | mean val acc of local and fedit_ft | local | fedit_ft | potara_heldout (in-sample) |",
             "|---|---|---|---|---|---|"]
    for c in ranked:
        u = scores[c]
        cols = [_mean(score(u, (n,))) for n in (*SCORED, BESIDE)]
        mark = " **(chosen)**" if c == ranked[0] else ""
        lines.append(f"| {c}{mark} | {len(score(u, SCORED))} | {means[c]:.4f} | " + " | ".join(f"{x:.4f}" for x in cols) + " |")
    if len(ranked) > 1:
        a, b = score(scores[ranked[0]], SCORED), score(scores[ranked[1]], SCORED)
        common = sorted(set(a) & set(b))
        d = paired_difference([a[k] for k in common], [b[k] for k in common], groups=[k[:2] for k in common],
                              strata=[k[0] for k in common])
        low, high = d.to_dict()["ci"]
        lines.append(f"\nchosen − runner-up ({ranked[1]}): {d.mean:+.4f} [{low:+.4f}, {high:+.4f}], "
                     f"{d.clusters} clusters, p_t {d.to_dict()['p_t']:.3g}: {d.verdict}")
    return "\n".join(lines), ranked[0]


def _mean(values: dict) -> float:
    return sum(values.values()) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/dev-defaults")
    parser.add_argument("--write", help="also write the Markdown here")
    args = parser.parse_args()
    suite = load_suite("dev-defaults")
    cells = load_cells(Path(args.out), suite)
    done = {s: sorted(c.seed for c in g) for s, g in cells.items()}
    missing = [f"{s} seed {seed}" for s in suite.settings for seed in suite.seeds if seed not in done.get(s, [])]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    text, winner = table(unit_scores({s: g for s, g in cells.items() if g}))
    doc = (f"# Shared defaults on the `dev-defaults` suite (commit {commit}; "
           f"`benchmarks/choose_defaults.py --out {args.out}`)\n\n"
           + (f"missing cells: {', '.join(missing)}\n\n" if missing else "") + text + f"\n\nchosen: {winner}\n")
    print(doc)
    if args.write:
        atomic_write(args.write, doc)


if __name__ == "__main__":
    main()
