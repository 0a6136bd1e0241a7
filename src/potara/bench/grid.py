"""A suite whose settings form a grid (``grid``: setting → [row, column], e.g. heterogeneity × client size) read
as a map of where Potara wins (issue 21).

Per cell (setting) and Potara variant (``potara``, and ``potara@…`` with a mechanism kept on dev): the variant − the
best non-Potara method (the highest mean test accuracy among the methods that are neither a bound nor a Potara
variant: picked on test, so the comparison favours the other method) and − FedIT + FT early-stopped on validation,
both read from the variant's Holm family in that setting (``paired.versus``); a cell is marked when its corrected
verdict is a win or a loss. Beside them the worst clients: the 10th percentile of client test accuracy, every
(seed, client) of the cell pooled, for the variant and for FedIT + FT. And what a user can measure
on their own federation before training (``potara profile``): the clients' training examples and label skew.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..reporting.outputs import is_bound, save_png
from ..reporting.plots import pyplot
from .cell import Cell
from .paired import POTARA, delta_text, unit_accs, verdict_text, versus

EARLY_STOPPED, FINE_TUNED = "fedit_ft_es", "fedit_ft"
WORST_PERCENTILE = 10


def grid_numbers(cells: dict[str, list[Cell]], grid: dict[str, list]) -> dict[str, dict]:
    """Per setting of ``grid`` with cells: its row, column, seeds and clients' profile; the best non-Potara method;
    for each Potara variant the cells have (``potara``, ``potara@…`` with a mechanism), its corrected differences
    to that method and to ``fedit_ft_es`` (``paired.versus``: the variant against every other method of the cell,
    Holm over the peers and references) and its clients' 10th-percentile accuracy; the same percentile for
    ``fedit_ft`` and ``fedit_ft_es``."""
    out = {}
    for setting, (row, column) in grid.items():
        group = cells.get(setting) or []
        if not group:
            continue
        means = _method_means(group)
        others = [m for m in means if not is_bound(m) and not m.startswith(POTARA)]
        best = max(others, key=means.__getitem__, default=None)
        variants = {}
        for name in (m for m in means if m.split("@")[0] == POTARA):
            against = versus(unit_accs({setting: group}), name)
            variants[name] = {"vs_best": against.get(best), "vs_early_stopped": against.get(EARLY_STOPPED),
                              "worst_clients": _percentile(group, name)}
        out[setting] = {
            "row": str(row), "column": str(column), "clusters": len(group), "best": best, "potara": variants,
            "worst_clients": {m: _percentile(group, m) for m in (FINE_TUNED, EARLY_STOPPED) if m in means},
            **_profile(group),
        }
    return out


def _profile(group: list[Cell]) -> dict[str, float]:
    """The cells' clients (every seed) as ``potara profile`` measures them: median training examples and mean
    label skew; empty for cells recorded without a profile."""
    clients = [c for cell in group for c in cell.summary.get("federation", {}).get("clients", {}).values()]
    if not clients:
        return {}
    return {"median_n_train": float(np.median([c["n_train"] for c in clients])),
            "mean_label_skew": float(np.mean([c["label_skew"] for c in clients]))}


def _method_means(group: list[Cell]) -> dict[str, float]:
    """Each method's mean test accuracy over every (seed, client) of the cells."""
    accs: dict[str, list[float]] = {}
    for cell in group:
        for name, m in cell.methods.items():
            accs.setdefault(name, []).extend(r["acc"] for r in m["per_client"])
    return {name: sum(a) / len(a) for name, a in accs.items()}


def _percentile(group: list[Cell], name: str) -> float:
    accs = [r["acc"] for c in group if name in c.methods for r in c.methods[name]["per_client"]]
    return float(np.percentile(accs, WORST_PERCENTILE))


def grid_table(numbers: dict[str, dict]) -> str:
    """The map as markdown: a row per (cell, Potara variant)."""
    lines = [
        "## The map: where Potara wins",
        "",
        "Per cell and Potara variant (plain, and with each mechanism kept on dev): the variant − the best non-Potara "
        "method (picked on test: favours it) and − FedIT + FT early-stopped on validation; 95% t-intervals on the "
        "seeds' means at the level of the variant's Holm family in that cell (it against every peer and "
        "reference); **bold**: a corrected win or loss. Worst clients: the "
        f"{WORST_PERCENTILE}th percentile of client test accuracy over every (seed, client) of the cell. Train "
        "examples and label skew (total-variation distance of a client's training labels to the federation's): "
        "what `potara profile` measures on a federation before training.",
        "",
        "| cell | rows × columns | seeds | median train examples | mean label skew | variant | best other "
        "| − best [CI] | verdict | − fedit_ft_es [CI] | verdict "
        f"| p{WORST_PERCENTILE} variant | p{WORST_PERCENTILE} fedit_ft | p{WORST_PERCENTILE} fedit_ft_es |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, n in numbers.items():
        worst = n["worst_clients"]
        for name, v in n["potara"].items():
            lines.append(
                f"| {setting} | {n['row']} × {n['column']} | {n['clusters']} | "
                f"{_number(n.get('median_n_train'), 'g')} | {_number(n.get('mean_label_skew'), '.3f')} | {name} "
                f"| {n['best']} | {delta_text(v['vs_best'])} | {verdict_text(v['vs_best'], bold=True)} "
                f"| {delta_text(v['vs_early_stopped'])} | {verdict_text(v['vs_early_stopped'], bold=True)} "
                f"| {v['worst_clients']:.3f} | "
                + " | ".join(f"{worst[m]:.3f}" if m in worst else "–" for m in (FINE_TUNED, EARLY_STOPPED))
                + " |"
            )
    return "\n".join(lines)


def _number(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def plot_grid(numbers: dict[str, dict], path: Path) -> None:
    """Two heatmaps per Potara variant (− best other, − fedit_ft_es): rows × columns, colour the mean difference,
    each cell annotated with its interval; a corrected win or loss framed in black."""
    rows = list(dict.fromkeys(n["row"] for n in numbers.values()))
    columns = list(dict.fromkeys(n["column"] for n in numbers.values()))
    variants = list(dict.fromkeys(v for n in numbers.values() for v in n["potara"]))
    panels = (("vs_best", "− best other method"), ("vs_early_stopped", "− FedIT + FT (early-stopped)"))
    plt = pyplot()
    fig, axes = plt.subplots(len(variants), 2, squeeze=False,
                             figsize=(4.2 * 2 + 0.6 * len(columns), (1.2 + 1.0 * len(rows)) * len(variants)))
    limit = max([abs(d["mean"]) for n in numbers.values() for v in n["potara"].values() for k, _ in panels
                 if (d := v[k])] + [0.01])
    for ax_row, variant in zip(axes, variants):
        for ax, (key, title) in zip(ax_row, panels):
            values = np.full((len(rows), len(columns)), np.nan)
            for n in numbers.values():
                d = n["potara"].get(variant, {}).get(key)
                values[rows.index(n["row"]), columns.index(n["column"])] = d["mean"] if d else np.nan
                _annotate(ax, rows.index(n["row"]), columns.index(n["column"]), d, limit)
            image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit)
            ax.set_xticks(range(len(columns)), columns)
            ax.set_yticks(range(len(rows)), rows)
            ax.set_title(f"{variant} {title}", fontsize=8)
            fig.colorbar(image, ax=ax, shrink=0.8, label="accuracy difference")
    save_png(fig, path)
    plt.close(fig)


def _annotate(ax, i: int, j: int, d: dict | None, limit: float) -> None:
    """The cell's mean and interval as text (white on a dark cell); a black frame when its corrected verdict is
    a win or a loss."""
    if d is None:
        ax.text(j, i, "–", ha="center", va="center", fontsize=8)
        return
    low, high = d["ci"]
    interval = "" if low is None or math.isnan(low) else f"\n[{low:+.3f}, {high:+.3f}]"
    colour = "white" if abs(d["mean"]) > 0.6 * limit else "black"
    ax.text(j, i, f"{d['mean']:+.3f}{interval}\n{d['verdict']}", ha="center", va="center", fontsize=7, color=colour)
    if d["verdict"] in ("win", "loss"):
        ax.add_patch(_frame(i, j))


def _frame(i: int, j: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.48, i - 0.48), 0.96, 0.96, fill=False, edgecolor="black", linewidth=2.5)
