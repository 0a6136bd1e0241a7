"""Score a written rule for "use Potara on this client" against "always fine-tune" (issue 21).

    .venv/bin/python benchmarks/rule.py --units benchmarks/results/map-check/map-check-units.csv \
        --rule "label_skew>=0.5,n_train>=64" --settings new_a new_b [--potara METHOD] [--write rule.json]
    .venv/bin/python benchmarks/rule.py --units benchmarks/results/map/map-units.csv --fit --settings ...

A rule is a conjunction of thresholds on what a client measures before training (``potara profile``: ``n_train``,
its training examples, and ``label_skew``, the total-variation distance of its training labels to the
federation's): ``key>=value`` or ``key<value`` items, comma-separated. On every (setting, seed, client) of the
given settings it picks Potara (``potara``, or the variant ``--potara`` names, e.g.
``potara@potara.prior_correction=counts``) where the rule holds and ``fedit_ft_es`` (FedIT + FT early-stopped on
validation) elsewhere; "always fine-tune" picks ``fedit_ft_es`` everywhere. Two scores, test accuracy read:

- agreement: the share of clients on which the pick is the better of the two on test (a tie counts as right for
  both picks), for the rule and for "always fine-tune";
- value: the rule's picks minus always fine-tuning, in test accuracy, paired over the same clients, a t-interval on
  the (setting, seed) means stratified by setting (``potara.reporting.stats``).

The rule is written, and committed, before the settings it is scored on are run: scored on the cells it was read
from, it is only a description of them. ``--fit`` is how it is read: every rule of at most one threshold per key
(thresholds midway between the clients' distinct values of ``n_train``, and at the deciles of ``label_skew``; plus
"always Potara"), ranked by its value on the given settings, the simpler rule first on a tie; the top ones printed.
"""

from __future__ import annotations

import argparse
import json
import operator
import re
from pathlib import Path

import numpy as np

from potara.bench.units import cells_from_units
from potara.reporting.outputs import atomic_write
from potara.reporting.stats import paired_difference

POTARA, FINE_TUNE = "potara", "fedit_ft_es"
KEYS = ("n_train", "label_skew")
OPS = {">=": operator.ge, "<": operator.lt}
ITEM = re.compile(r"^\s*(\w+)\s*(>=|<)\s*([0-9.eE+-]+)\s*$")


def parse_rule(text: str) -> list[tuple[str, str, float]]:
    """``"label_skew>=0.5,n_train>=64"`` as [(key, op, value)], ``"always"`` as []; a malformed item or unknown key
    is an error."""
    if text.strip() == "always":
        return []
    items = []
    for part in text.split(","):
        match = ITEM.match(part)
        if not match or match[1] not in KEYS:
            raise SystemExit(f"rule.py: '{part.strip()}' is not KEY>=VALUE or KEY<VALUE with KEY in {', '.join(KEYS)}")
        items.append((match[1], match[2], float(match[3])))
    return items


def holds(rule: list[tuple[str, str, float]], client: dict) -> bool:
    return all(OPS[op](client[key], value) for key, op, value in rule)


def client_table(cells: dict, settings: list[str], potara: str = POTARA) -> list[dict]:
    """Per (setting, seed, client) of ``settings``: its profile, and the test accuracy of ``potara`` (as "potara")
    and of ``fedit_ft_es``."""
    rows = []
    for setting in settings:
        for cell in cells.get(setting, []):
            profile = cell.summary.get("federation", {}).get("clients", {})
            accs = {name: {r["client"]: r["acc"] for r in cell.methods[name]["per_client"]}
                    for name in (potara, FINE_TUNE) if name in cell.methods}
            if len(accs) < 2 or not profile:
                raise SystemExit(f"rule.py: {setting} seed {cell.seed} lacks {potara}, {FINE_TUNE} or the clients' "
                                 "label_skew (a units CSV written before profiles were recorded)")
            rows += [{"setting": setting, "seed": cell.seed, "client": c, **profile[c],
                      POTARA: accs[potara][c], FINE_TUNE: accs[FINE_TUNE][c]} for c in accs[potara]]
    return rows


def score(rule: list[tuple[str, str, float]], rows: list[dict]) -> dict:
    """The rule's and always-fine-tune's agreement with the better pick, and the rule's value with its interval."""
    picks = [POTARA if holds(rule, r) else FINE_TUNE for r in rows]
    right = [r[pick] >= r[FINE_TUNE if pick == POTARA else POTARA] for r, pick in zip(rows, picks)]
    ft_right = [r[FINE_TUNE] >= r[POTARA] for r in rows]
    value = paired_difference([r[pick] for r, pick in zip(rows, picks)], [r[FINE_TUNE] for r in rows],
                              groups=[(r["setting"], r["seed"]) for r in rows], strata=[r["setting"] for r in rows])
    return {"clients": len(rows), "potara_picked": picks.count(POTARA), "rule_right": sum(right) / len(rows),
            "always_fine_tune_right": sum(ft_right) / len(rows), "value": value.to_dict()}


def candidate_rules(rows: list[dict]) -> list[list[tuple[str, str, float]]]:
    """Every rule with at most one threshold per key: the empty rule (always Potara), one item, or one per key."""
    sizes = sorted({r["n_train"] for r in rows})
    skews = [r["label_skew"] for r in rows]
    cuts = {"n_train": [(a + b) / 2 for a, b in zip(sizes, sizes[1:])],
            "label_skew": sorted({round(float(q), 3) for q in np.quantile(skews, np.linspace(0.1, 0.9, 9))})}
    items = {key: [(key, op, cut) for cut in values for op in OPS] for key, values in cuts.items()}
    return ([[]] + [[item] for key in KEYS for item in items[key]]
            + [[a, b] for a in items[KEYS[0]] for b in items[KEYS[1]]])


def rule_text(rule: list[tuple[str, str, float]]) -> str:
    return ",".join(f"{key}{op}{value:g}" for key, op, value in rule) or "always"


def fit(rows: list[dict], top: int = 5) -> list[tuple[str, dict]]:
    """The ``top`` candidate rules by value (mean accuracy gained over always fine-tuning), simplest first on a tie."""
    scored = [(rule, score(rule, rows)) for rule in candidate_rules(rows)]
    scored.sort(key=lambda pair: (-round(pair[1]["value"]["mean"], 9), len(pair[0])))
    return [(rule_text(rule), result) for rule, result in scored[:top]]


def report(rule_text: str, settings: list[str], result: dict) -> str:
    v = result["value"]
    low, high = v["ci"]
    return "\n".join([
        f"rule `{rule_text}` on {', '.join(settings)}: {result['clients']} clients, Potara picked for "
        f"{result['potara_picked']}",
        f"- right (the better pick on test): rule {result['rule_right']:.3f}, always fine-tune "
        f"{result['always_fine_tune_right']:.3f}",
        f"- value (rule's picks − always fine-tune): {v['mean']:+.4f} [{low:+.4f}, {high:+.4f}], p {v['p_t']:.3f}, "
        f"{v['clusters']} clusters: {v['verdict']}",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", required=True, help="a bench's <suite>-units.csv (with its label_skew column)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--rule", help='e.g. "label_skew>=0.5,n_train>=64"; "always" picks Potara everywhere')
    which.add_argument("--fit", action="store_true", help="rank the candidate rules on these settings instead")
    parser.add_argument("--settings", nargs="+", required=True, help="the settings to score it on")
    parser.add_argument("--potara", default=POTARA, help="the Potara method or variant the rule picks (default potara)")
    parser.add_argument("--write", help="also write the result as JSON here")
    args = parser.parse_args()
    if args.fit and args.write:
        parser.error("--write records a written rule's score; --fit only ranks candidates (print, nothing written)")
    rows = client_table(cells_from_units(args.units), args.settings, args.potara)
    if args.fit:
        print("\n".join(report(text, args.settings, result) for text, result in fit(rows)))
        return
    result = score(parse_rule(args.rule), rows)
    print(report(args.rule, args.settings, result))
    if args.write:
        record = {"command": f"benchmarks/rule.py --units {args.units} --rule '{args.rule}' --settings "
                             f"{' '.join(args.settings)} --potara '{args.potara}'", "rule": args.rule,
                  "potara": args.potara, "settings": args.settings, **result}
        atomic_write(Path(args.write), json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
