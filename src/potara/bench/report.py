"""The report of a bench run: per-setting tables (mean ± std over seeds, paired differences), the communication
table, paired differences over every setting (also ``report.json``), plots.

A unit of a paired difference is one (setting, seed, client); its cluster is the (setting, seed): the clients of
one cell share a federation; its stratum is the setting (see ``potara.reporting.stats``). The headline family,
Holm-corrected, is `potara` against every peer and reference pooled over the settings; each setting's `potara`
rows are a family of their own; every other difference is uncorrected and exploratory.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from pathlib import Path

from ..reporting.communication import FEDIT, TARGET, Reach, analyse, curve, median_round
from ..reporting.outputs import (
    REFERENCE,
    atomic_write,
    bound_rule,
    bounds_last,
    difference,
    first_bound,
    is_bound,
    json_safe,
    lambdas_against,
    oracle_of,
    paired,
    save_png,
    size_text,
)
from ..reporting.plots import Final, accuracy_figure, lambda_figure, pyplot
from ..reporting.stats import ALPHA, MIN_CLUSTERS
from ..reporting.styles import NON_PERSONALIZED, colour_marker, label, row_label
from .cell import Cell
from .grid import grid_numbers, grid_table, plot_grid
from .paired import POTARA, cell_of, delta_text, p_text, setting_of, unit_accs, versus, wtl_text
from .records import UNITS, cells_from_records, record_path, write_records
from .suite import Suite, cell_config, cell_dir, check_same_cell
from .sweep import plot_sweep, sweep_numbers, sweep_tables
from .totals import COMMIT, CPU_TIME

BAR_METHODS = ("potara", "oracle_val", "local", "fedit")


def load_cells(out: Path, suite: Suite, sets: list[str] = ()) -> dict[str, list[Cell]]:
    """The finished cells of every setting of ``suite`` under ``out`` (missing ones are left out), each checked to
    be the cell the suite (with ``sets``) runs: a cell of another config is an error, never reported as this one."""
    cells: dict[str, list[Cell]] = {}
    for setting in suite.settings:
        cells[setting] = []
        for seed in suite.seeds:
            where = cell_dir(out, setting, seed)
            if (where / "summary.json").is_file():
                summary = json.loads((where / "summary.json").read_text())
                check_same_cell(cell_config(suite, setting, seed, sets), summary["config"], where)
                rounds = [json.loads(x) for x in (where / "rounds.jsonl").read_text().splitlines() if x.strip()]
                cells[setting].append(Cell(seed, summary, rounds))
    return cells


def write_report(out: Path, suite: Suite, sets: list[str] = ()) -> str:
    """Aggregate the cells into ``out/report.md``, ``out/report.json``, ``out/plots/<setting>.*.png`` and the
    records every number and plot of it regenerates from (``out/<suite>-{units,rounds,cells}.csv``, ``records``);
    return the markdown. ``suite`` is the whole suite: a report of a few settings or seeds would overwrite the
    records of the others."""
    cells = load_cells(out, suite, sets)
    write_records(out, suite.name, cells)
    return render(out, suite, cells)


def report_from_units(units_csv: Path, suite: Suite, out: Path) -> str:
    """The report regenerated into ``out`` from a units CSV (or the folder holding ``<suite>-units.csv``) and the
    rounds and cells CSVs beside it: the same report.md, report.json and plots as from the cells. Without those
    two CSVs: no bytes, cell times, communication analysis or accuracy-vs-bytes plot."""
    units_csv = Path(units_csv)
    if units_csv.is_dir():
        units_csv = record_path(units_csv, suite.name, UNITS)
    if not units_csv.is_file():
        raise FileNotFoundError(f"no units CSV at '{units_csv}' (a bench report writes <suite>-units.csv)")
    cells = cells_from_records(units_csv)
    return render(out, suite, {setting: cells.get(setting, []) for setting in suite.settings})


def render(out: Path, suite: Suite, cells: dict[str, list[Cell]]) -> str:
    """``write_report``'s files from ``cells``; the accuracy-vs-bytes plot only for cells with round records."""
    parts = [f"# potara bench: suite `{suite.name}`"] + ([suite.description.strip()] if suite.description else [])
    parts += [provenance(suite, cells), STATISTICS]
    for setting, group in cells.items():
        parts.append(setting_table(setting, group, suite))
        if any(c.rounds for c in group):
            plot_accuracy_vs_bytes(setting, group, suite.methods, out / "plots" / f"{setting}.accuracy_vs_bytes.png")
        if group:
            plot_per_client(setting, group[0], out / "plots" / f"{setting}.per_client.png")
            plot_lambda_vs_oracle(setting, group, out / "plots" / f"{setting}.lambda_vs_oracle.png")
    parts.append(communication_table(cells))
    numbers = paired_report(cells, suite)
    every_cell = [c for group in cells.values() for c in group]
    parts.append(paired_table(numbers["overall"], method_order(every_cell, suite.methods)))
    parts.append(versus_table(numbers["potara_versus"], pooled_settings(cells, suite)))
    parts += [cross_setting_table(source, target, numbers["compare"][source], cells)
              for source, target in suite.compare.items() if cells.get(source) and cells.get(target)]
    if numbers.get("map"):
        parts.append(grid_table(numbers["map"]))
        plot_grid(numbers["map"], out / "plots" / "map.heatmap.png")
    if numbers.get("sweep"):
        parts.append(sweep_tables(numbers["sweep"], cells, suite))
        plot_sweep(cells, suite, out / "plots")
    parts.append(compute_table(cells))
    text = "\n\n".join(parts) + "\n"
    atomic_write(out / "report.json", json.dumps(json_safe(numbers), indent=2))
    atomic_write(out / "report.md", text)
    return text


def provenance(suite: Suite, cells: dict[str, list[Cell]]) -> str:
    """Where this report's numbers come from and which code ran its cells (the same text from cells or records)."""
    commits = Counter(c.summary.get("code", {}).get(COMMIT, "") for group in cells.values() for c in group)
    ran = [f"`{sha}` ({n} cells)" for sha, n in sorted(commits.items()) if sha]
    if commits.get(""):
        ran.append(f"not recorded ({commits['']} cells, run before cells recorded their commit)")
    return (
        f"**Provenance.** `potara bench --suite {suite.name}` ran the cells; every number and plot here regenerates "
        f"from the records beside this report (`{record_path(Path(), suite.name, UNITS)}` and its `-rounds.csv` and "
        f"`-cells.csv`) with `potara bench --suite {suite.name} --report-from <this folder> --out <folder>`. "
        f"Code that ran the cells: {', '.join(ran) or 'none yet'}."
    )


STATISTICS = (
    "**Statistics.** A unit is one (setting, seed, client); a cluster is one (setting, seed), a federation whose "
    "clients share the global adapter, and the independent replicate. A paired difference a − b is the mean of the "
    "clusters' mean differences, with a t-interval on those cluster means, stratified by setting (variance "
    "Σ w_s² var_s / n_s, w_s ∝ clusters of setting s; df by Welch–Satterthwaite, clusters − 1 for one setting); "
    "beside it the two-sided t-test p and the exact sign-flip p on the cluster means (all 2^n flips up to 16 "
    "clusters). W/T/L count units. With fewer than "
    f"{MIN_CLUSTERS} clusters no verdict is given (\"too few clusters\"); otherwise win / loss when p < {ALPHA} "
    "(Holm-adjusted where corrected) and the mean has that sign, else tie. The headline family, Holm-corrected, is "
    "`potara` against every peer and reference pooled over the settings; each setting's `potara` rows are a Holm "
    "family of their own; every other difference is uncorrected and exploratory. FedIT and FFA-LoRA are "
    "non-personalized baselines (one adapter for every client), never counted as a personalized peer."
)


def paired_report(cells: dict[str, list[Cell]], suite: Suite) -> dict:
    """``report.json``: ``paired`` (as in summary.json) per setting and pooled over the settings that are not
    compared with another (``suite.compare``); ``potara_versus``: Potara against every other method, pooled
    and per setting; ``compare``: each compared setting's methods against its target setting's; ``sweep``: the
    same pairs read as a sweep (``sweep.sweep_numbers``); ``map``: a grid suite's map (``grid.grid_numbers``)."""
    pooled = {k: v for k, v in cells.items() if k in pooled_settings(cells, suite)}
    numbers = {
        "suite": suite.name,
        "unit": "(setting, seed, client)",
        "cluster": "(setting, seed)",
        "stratum": "setting",
        "statistics": STATISTICS,
        "bounds": sorted({name for group in cells.values() for c in group for name in c.methods if is_bound(name)}),
        "non_personalized": list(NON_PERSONALIZED),
        "settings": {setting: paired(unit_accs({setting: group}), cell_of, setting_of)
                     for setting, group in cells.items()},
        "overall": paired(unit_accs(pooled), cell_of, setting_of),
        "potara_versus": {
            "pooled": versus(unit_accs(pooled), POTARA),
            **{setting: versus(unit_accs({setting: cells[setting]}), POTARA) for setting in pooled},
        },
        "compare": {source: compare_settings(cells[source], cells[target]) for source, target in suite.compare.items()
                    if cells.get(source) and cells.get(target)},
        **({"sweep": sweep_numbers(cells, suite)} if suite.sweep else {}),
    }
    if suite.grid:
        numbers["map"] = grid_numbers(cells, suite.grid)
    return numbers


def pooled_settings(cells: dict[str, list[Cell]], suite: Suite) -> list[str]:
    """The settings pooled into the overall numbers: all but those compared with another setting."""
    return [s for s in cells if s not in suite.compare]


def compare_settings(source: list[Cell], target: list[Cell]) -> dict[str, dict]:
    """Each non-bound method of ``source`` against each non-bound method of ``target`` on the same (seed,
    client), with each one's mean client compute (training example passes) and bytes."""
    a, b = unit_accs({"": source}), unit_accs({"": target})
    out = {}
    for name in (m for m in a if not is_bound(m)):
        rows = {}
        for other in (m for m in b if not is_bound(m)):
            diff = difference(a[name], b[other], cell_of, setting_of)
            if diff is not None:
                rows[other] = {**diff.to_dict(), **_effort(target, other)}
        out[name] = {**_effort(source, name), "versus": rows}
    return out


def _effort(group: list[Cell], name: str) -> dict[str, float]:
    """Mean over seeds of a method's mean client training passes and its total bytes (up + down)."""
    rows = [c.methods[name] for c in group if name in c.methods]
    return {"train_passes": _avg([r.get("compute", {}).get("train_passes", 0.0) for r in rows]),
            "bytes": _avg([r["bytes_up"] + r["bytes_down"] for r in rows])}


def method_order(group: list[Cell], order: list[str]) -> list[str]:
    """The methods the cells have: in ``order`` first, then any others by name."""
    present = {name for cell in group for name in cell.methods}
    return [m for m in order if m in present] + sorted(present - set(order))


def setting_table(setting: str, group: list[Cell], suite: Suite) -> str:
    """Mean ± std over seeds of mean and worst-client accuracy; bytes; each method's own personalization time."""
    missing = [s for s in suite.seeds if s not in {c.seed for c in group}]
    head = f"## {setting}\n\nseeds {', '.join(str(c.seed) for c in group) or 'none'}"
    head += f" (missing: {', '.join(map(str, missing))})" if missing else ""
    if not group:
        return head
    lines = [
        head, "",
        f"| method | mean acc | worst acc | Δ vs {REFERENCE} [95% CI] | W/T/L | bytes up | bytes down "
        "| train passes | personalize s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    accs = unit_accs({setting: group})
    names = bounds_last(method_order(group, suite.methods))
    for name in names:
        lines += [bound_rule(9)] if name == first_bound(names) else []
        rows = [c.methods[name] for c in group if name in c.methods]
        own = [c.summary["timing"].get("method_s", {}).get(name) for c in group if name in c.methods]
        versus = _versus_reference(accs, name)
        lines.append(
            f"| {row_label(name)} | {_pm([r['mean_acc'] for r in rows])} | {_pm([r['worst_acc'] for r in rows])} "
            f"| {delta_text(versus)} | {wtl_text(versus)} "
            f"| {size_text(_avg([r['bytes_up'] for r in rows]))} | {size_text(_avg([r['bytes_down'] for r in rows]))} "
            f"| {_avg([r.get('compute', {}).get('train_passes', 0.0) for r in rows]):,.0f} "
            f"| {_avg([x for x in own if x is not None]) or 0:.1f} |"
        )
    timing = [c.summary["timing"] for c in group]
    lines += [
        "",
        f"cell wall time {_pm([t.get('wall_s', 0.0) for t in timing], 0)} s, shared by every method "
        f"(federation {_avg([t['federation_s'] for t in timing]):.0f} s; local training "
        f"{_avg([t['local_epoch_s'] for t in timing]):.2f} s per client-epoch). `train passes`: a method's mean "
        "client compute in training example passes (forward + backward), its federated rounds and its own "
        "personalization, shared work (the local adapter) charged to every method that uses it; `personalize s`: "
        "a method's personalization seconds per client, counted the same way. "
        f"`Δ vs {REFERENCE}`: paired over (seed, client), 95% t-interval on the seeds' means ('–': one seed), "
        "uncorrected; W/T/L: clients above / equal / below. A bound picks λ on held-out or test data: not a method; "
        "FedIT and FFA-LoRA give every client one adapter: non-personalized baselines.",
    ]
    return "\n".join(lines)


def compute_table(cells: dict[str, list[Cell]]) -> str:
    """What the finished cells cost: per setting and in all, the sum of their wall hours and, for the cells that
    recorded it, of the bench process's CPU hours (every thread)."""
    lines = [
        "## Compute",
        "",
        "Sums over the finished cells: wall hours, and CPU hours of the bench process (every thread) for the cells "
        "that recorded it (cells run side by side share the machine: their wall hours overlap, their CPU hours do not).",
        "",
        "| setting | cells | wall h | CPU h (cells recorded) |",
        "|---|---|---|---|",
    ]
    every = [c for group in cells.values() for c in group]
    for setting, group in [*cells.items(), ("all", every)]:
        wall = [c.summary["timing"].get("wall_s", math.nan) for c in group]
        cpu = [c.summary["timing"][CPU_TIME] for c in group if c.summary["timing"].get(CPU_TIME) is not None]
        lines.append(f"| {setting} | {len(group)} | {_hours(wall)} | {_hours(cpu)} ({len(cpu)}) |")
    return "\n".join(lines)


def _hours(seconds: list[float]) -> str:
    return "–" if not seconds or any(math.isnan(x) for x in seconds) else f"{sum(seconds) / 3600:.2f}"


def communication_table(cells: dict[str, list[Cell]]) -> str:
    """Per setting and method: in how many seeds, at which round and with how many bytes (up + down, the
    broadcast of that round's global adapter included) it reaches ``fedit_ft``'s final accuracy."""
    lines = [
        "## Communication: rounds (and cumulative bytes, up + down) to reach personalized FedIT's final accuracy",
        "",
        f"Target: `{TARGET}`'s (FedIT + local fine-tuning) final mean accuracy, per seed. For every method with "
        "per-round accuracies (fedit; those of `fed.eval_methods` when `fed.eval_every` personalizes every round; "
        "peers with their own federation): the first round at which it reaches the target and the bytes up + "
        "down by then, the broadcast of that round's global adapter to every client included; a method that "
        "sends nothing (local) reaches it with 0 bytes or never. Median: over the seeds that reached.",
        "",
        "| setting | R | target | method | seeds reached | median round | per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    skipped = []
    for setting, group in cells.items():
        usable = [c for c in group if _analysable(c)]
        skipped += [f"{setting} seed {c.seed}" for c in group if c not in usable]
        if usable:
            lines += _communication_rows(setting, usable)
    if skipped:
        lines += ["", f"Not analysed (no `{TARGET}`, or round records without `broadcast_bytes`): {', '.join(skipped)}."]
    return "\n".join(lines)


def _analysable(cell: Cell) -> bool:
    return bool(cell.rounds) and TARGET in cell.methods and "broadcast_bytes" in cell.rounds[-1]


def _communication_rows(setting: str, group: list[Cell]) -> list[str]:
    """One row per method the seeds' analyses have, in the order the first seed lists them."""
    found = {c.seed: analyse(c.rounds, c.methods) for c in group}
    names = list(dict.fromkeys(name for f in found.values() for name in f.reach))
    target = _pm([f.target for f in found.values()])
    rows = []
    for name in names:
        reaches = {seed: f.reach[name] for seed, f in found.items() if name in f.reach}
        median = median_round(list(reaches.values()))
        rows.append(
            f"| {setting} | {next(iter(found.values())).rounds} | {target} | {name} "
            f"| {sum(r.round is not None for r in reaches.values())}/{len(reaches)} "
            f"| {'–' if median is None else f'r{median:g}'} "
            f"| {', '.join(f's{seed}: {_reach(r)}' for seed, r in reaches.items())} |"
        )
    return rows


def _reach(reach: Reach) -> str:
    if reach.round is None:
        return "never"
    return "0 bytes" if reach.round == 0 else f"r{reach.round} ({size_text(reach.cum_bytes)})"


def _avg(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _pm(values: list[float], digits: int = 3) -> str:
    """``mean ± std``; '–' when a value is unknown (NaN: a report regenerated from its units CSV)."""
    if any(math.isnan(v) for v in values):
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{_avg(values):.{digits}f} ± {std:.{digits}f}"


def _versus_reference(accs: dict[str, dict[tuple, float]], name: str) -> dict | None:
    """``name`` − fedit_ft over their shared units, clustered by cell; None for fedit_ft itself or without it."""
    if name == REFERENCE or REFERENCE not in accs:
        return None
    diff = difference(accs.get(name, {}), accs[REFERENCE], cell_of, setting_of)
    return diff.to_dict() if diff else None


def paired_table(overall: dict, order: list[str]) -> str:
    """Every method against fedit_ft and its best peer, pooled over every (setting, seed, client)."""
    lines = [
        "## Paired differences, pooled over every setting",
        "",
        "Method − other over every (setting, seed, client); 95% t-interval on the (setting, seed) means, stratified "
        "by setting; p: t-test / sign-flip. **Uncorrected, exploratory** (the corrected family is the next table). "
        "The best peer is the personalized method with the highest pooled accuracy that is neither a bound nor a "
        "Potara variant (FedIT and FFA-LoRA are non-personalized baselines, never a peer). Also in `report.json`.",
        "",
        f"| method | Δ vs {REFERENCE} [95% CI] | p | W/T/L | verdict "
        "| best peer | Δ vs best peer [95% CI] | p | W/T/L | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in (m for m in order if m in overall):
        ref, peer = overall[name].get("vs_fedit_ft"), overall[name].get("vs_best_peer")
        lines.append(f"| {row_label(name)} | {_columns(ref)} | {peer['against'] if peer else '–'} | {_columns(peer)} |")
    return "\n".join(lines)


def versus_table(numbers: dict[str, dict], settings: list[str]) -> str:
    """Potara against every other method: pooled, and the verdict per setting."""
    pooled = numbers.get("pooled", {})
    lines = [
        f"## `{POTARA}` against every method",
        "",
        f"`{POTARA}` − method over every (setting, seed, client) of the pooled settings, stratified by setting. "
        "**Holm-corrected family**: every peer and reference (not the bounds, not the Potara variants, marked "
        "†: uncorrected); the comparison of rank k by p among m is shown at level 1 − 0.05/(m − k + 1) and its "
        "verdict read from its Holm-adjusted p (the p column: t / sign-flip / Holm). Then the verdict in each "
        "setting, each setting its own Holm family. Bounds are shown for the gap, not as peers.",
        "",
        f"| method | Δ [CI] | p | W/T/L | verdict | {' | '.join(settings)} |",
        "|---|---|---|---|---|" + "---|" * len(settings),
    ]
    for other in bounds_last(pooled):
        diff = pooled[other]
        lines += [bound_rule(5 + len(settings))] if other == first_bound(pooled) else []
        per = [numbers.get(s, {}).get(other) for s in settings]
        mark = "" if diff.get("holm_family") else " †"
        lines.append(f"| {row_label(other)}{mark} | {_columns(diff)} | "
                     + " | ".join(f"{d['verdict']} ({d['mean']:+.3f})" if d else "–" for d in per) + " |")
    return "\n".join(lines)


def cross_setting_table(source: str, target: str, numbers: dict[str, dict], cells: dict[str, list[Cell]]) -> str:
    """The methods of ``source`` against those of ``target`` on the same seeds and clients, with their effort."""
    lines = [
        f"## `{source}` against `{target}` (same seeds and clients)",
        "",
        f"Each method of `{source}` − each method of `{target}`, paired over (seed, client), uncorrected and "
        "exploratory; compute: mean client training example passes (federated rounds plus personalization); "
        "bytes: up + down, broadcast included.",
        "",
        f"| {source} | its passes | its bytes | {target} | its passes | its bytes | Δ [95% CI] | p | W/T/L | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in numbers.items():
        for other, diff in entry["versus"].items():
            lines.append(
                f"| {name} | {entry['train_passes']:,.0f} | {size_text(entry['bytes'])} | {other} "
                f"| {diff['train_passes']:,.0f} | {size_text(diff['bytes'])} | {_columns(diff)} |"
            )
    return "\n".join(lines)


def _columns(diff: dict | None) -> str:
    """Δ [CI] | p | W/T/L | verdict."""
    return f"{delta_text(diff)} | {p_text(diff)} | {wtl_text(diff)} | {diff['verdict'] if diff else '–'}"


def mean_curve(group: list[Cell], name: str) -> list[tuple[float, float]]:
    """(cumulative MB, accuracy) per round, each the mean over the seeds that measured that round."""
    by_round: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for cell in group:
        if name in cell.methods:
            for p in curve(cell.rounds, name, cell.methods[name]["mean_acc"]):
                by_round[p.round].append((p.cum_bytes, p.acc))
    return [
        (_avg([b for b, _ in pts]) / 1e6, _avg([a for _, a in pts])) for _, pts in sorted(by_round.items())
    ]


def plot_accuracy_vs_bytes(setting: str, group: list[Cell], order: list[str], path: Path) -> None:
    """Mean over seeds: a curve per method measured every round, a point per other method at its bytes; beside
    it, every method's final accuracy (± std over seeds)."""
    per_round = {FEDIT} | {name for c in group for r in c.rounds for name in r.get("methods", {})}
    names = method_order(group, order)
    curves = {name: mean_curve(group, name) for name in names if name in per_round}
    finals = {}
    for name in names:
        rows = [c.methods[name] for c in group if name in c.methods]
        accs = [r["mean_acc"] for r in rows]
        finals[name] = Final(_avg([r["bytes_up"] + r["bytes_down"] for r in rows]) / 1e6, _avg(accs),
                             statistics.stdev(accs) if len(accs) > 1 else None)
    fig = accuracy_figure(curves, finals, f"{setting}, mean over {len(group)} seed(s)")
    save_png(fig, path)
    pyplot().close(fig)


def plot_lambda_vs_oracle(setting: str, group: list[Cell], path: Path) -> None:
    """Every seed's clients: λ chosen by each method that chooses one against the oracle's (no oracle: no plot)."""
    oracle = oracle_of(group[0].methods)
    if oracle is None:
        return
    chosen: dict[str, list] = defaultdict(list)
    for cell in (c for c in group if oracle in c.methods):
        for name, points in lambdas_against(cell.methods, oracle).items():
            chosen[name] += points
    fig = lambda_figure(chosen, oracle, f"{setting}, {len(group)} seed(s)")
    save_png(fig, path)
    pyplot().close(fig)


def plot_per_client(setting: str, cell: Cell, path: Path) -> None:
    """Per-client test accuracy of potara, oracle_val, local and fedit (those the cell has), one seed."""
    plt = pyplot()
    names = [m for m in BAR_METHODS if m in cell.methods]
    clients = [r["client"] for r in cell.methods[names[0]]["per_client"]] if names else []
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(clients)), 4))
    for i, name in enumerate(names):
        accs = [r["acc"] for r in cell.methods[name]["per_client"]]
        ax.bar([k + (i - (len(names) - 1) / 2) * width for k in range(len(accs))], accs, width, label=label(name),
               color=colour_marker(name)[0], edgecolor=colour_marker(name)[0],
               **({"fill": False, "hatch": "//"} if is_bound(name) else {}))
    sizes = [r["n_train"] for r in cell.methods[names[0]]["per_client"]] if names else []
    ax.set_xticks(range(len(clients)), [c if n is None else f"{c}\nn={n}" for c, n in zip(clients, sizes)], fontsize=7)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{setting}: per client, seed {cell.seed}")
    ax.legend(fontsize=7)
    save_png(fig, path)
    plt.close(fig)
