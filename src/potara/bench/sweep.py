"""A suite whose settings each change one thing against a base setting (``compare``: the noise multiplier, the
upload dtype) read as a sweep.

For each compared setting s against its base t, on the same (seed, client): what the change costs each method,
m(s) − m(t); what it costs Potara beyond what it costs each other method, [potara(s) − potara(t)] − [m(s) − m(t)]
(a difference of differences: under DP noise Potara should lose less than FedIT + FT, its local adapter being
untouched by the noise), Holm-corrected over the other methods of that setting; and how Potara's λ (the weight of
the federated adapter) moves. Clusters are seeds (one federation per setting and seed, the same partition in every
setting), so the statistics are those of ``potara.reporting.stats``. Figures: accuracy and λ along the sweep,
against ε when the settings differ in DP, against bytes on the wire otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..reporting.outputs import REFERENCE, difference, is_bound, mean_lambda, save_png, size_text
from ..reporting.plots import pyplot
from ..reporting.stats import holm, stratified_t, t_quantile
from ..reporting.styles import label, style
from .cell import Cell
from .paired import POTARA, cell_of, delta_text, p_text, setting_of, unit_accs, wtl_text
from .suite import Suite

UP = ("bytes_up",)  # the bytes a ratio of upload sizes reads


def swept_settings(suite: Suite, cells: dict[str, list[Cell]]) -> list[str]:
    """The settings of the sweep in suite order: every compared setting and its base, those with cells."""
    named = set(suite.compare) | set(suite.compare.values())
    return [s for s in suite.settings if s in named and cells.get(s)]


def sweep_numbers(cells: dict[str, list[Cell]], suite: Suite) -> dict[str, dict]:
    """Per compared setting: its base, each method's ``change``, Potara's change ``beyond`` each method's (Holm),
    each method against FedIT + FT at the base (``vs_reference_at_base``: does it reach personalized FedIT's base
    accuracy), the change of Potara's mean λ (each a ``PairedDiff.to_dict()``), and each method's upload bytes as a
    share of its base's (``bytes_up_ratio``)."""
    out = {}
    for source, target in suite.compare.items():
        if not (cells.get(source) and cells.get(target)):
            continue
        now, base = _accs(cells[source]), _accs(cells[target])
        change = {m: _change(now[m], base[m]) for m in now if m in base and not is_bound(m)}
        change = {m: d for m, d in change.items() if d}
        beyond = {}
        if POTARA in change:
            own = _minus(now[POTARA], base[POTARA])
            beyond = holm({m: d for m in change if m != POTARA
                           if (d := difference(own, _minus(now[m], base[m]), cell_of, setting_of))})
        at_base = base.get(REFERENCE)
        reference = {m: d for m in change if at_base and (d := _change(now[m], at_base))}
        lam = _change(_lambdas(cells[source]), _lambdas(cells[target]))
        out[source] = {"base": target, "change": {m: d.to_dict() for m, d in change.items()},
                       "potara_beyond": {m: d.to_dict() for m, d in beyond.items()},
                       "vs_reference_at_base": {m: d.to_dict() for m, d in reference.items()},
                       "bytes_up_ratio": {m: _ratio(_bytes(cells[source], m, UP), _bytes(cells[target], m, UP))
                                          for m in change},
                       "potara_lambda_change": lam.to_dict() if lam else None}
    return out


def _ratio(a: float, b: float) -> float | None:
    """a / b; None when b is zero or unknown (a method that sends nothing)."""
    return a / b if b and not math.isnan(b) else None


def _accs(group: list[Cell]) -> dict[str, dict[tuple, float]]:
    """Per method, the test accuracy of every ("", seed, client) of a setting's cells: one stratum, so that the
    compared settings pair seed by seed."""
    return unit_accs({"": group})


def _lambdas(group: list[Cell]) -> dict[tuple, float]:
    """Potara's λ per ("", seed, client) (the mean over modules when per module), where it chose one."""
    return {("", cell.seed, r["client"]): lam for cell in group if POTARA in cell.methods
            for r in cell.methods[POTARA]["per_client"] if not math.isnan(lam := _lambda(r))}


def _lambda(row: dict) -> float:
    """A client's λ as one number (the mean over modules when per module); NaN when none."""
    return math.nan if row.get("lambda") is None else mean_lambda(row["lambda"])


def _change(now: dict[tuple, float], base: dict[tuple, float]):
    return difference(now, base, cell_of, setting_of) if now and base else None


def _minus(a: dict[tuple, float], b: dict[tuple, float]) -> dict[tuple, float]:
    return {u: a[u] - b[u] for u in a if u in b}


def sweep_tables(numbers: dict[str, dict], cells: dict[str, list[Cell]], suite: Suite) -> str:
    """The sweep's markdown: each setting's accuracy per method (and ε, bytes, Potara's λ); each method's change
    against the base; Potara's change beyond each method's."""
    settings = swept_settings(suite, cells)
    names = [m for m in suite.methods if not is_bound(m) and any(m in c.methods for s in settings for c in cells[s])]
    lines = [
        "## The sweep: each setting against its base (same seeds and clients)",
        "",
        "Mean test accuracy over the seeds' client means, with a 95% t-interval over seeds; ε: client-level DP at "
        "the run's δ ('–': no DP); in brackets: bytes up, and up + down, per run, mean over seeds; λ: Potara's mean weight of the "
        "federated adapter.",
        "",
        f"| setting | ε | {' | '.join(names)} | potara λ |",
        "|---|---|" + "---|" * len(names) + "---|",
    ]
    for s in settings:
        accs = [_interval(_seed_means(cells[s], m)) for m in names]
        lam = _interval(_seed_lambda_means(cells[s]))
        lines.append(f"| {s} | {_epsilon_text(cells[s])} | "
                     + " | ".join(f"{_ci(a)} (up {size_text(_bytes(cells[s], m, ('bytes_up',)))}, total "
                                  f"{size_text(_bytes(cells[s], m))})" for a, m in zip(accs, names))
                     + f" | {_ci(lam, 2)} |")
    for source, entry in numbers.items():
        lines += ["", f"### `{source}` − `{entry['base']}`", "",
                  f"| method | its change [95% CI] | p (t / sign-flip) | W/T/L | potara's change − its change "
                  f"[CI, Holm] | p (t / sign-flip / Holm) | verdict | it − {REFERENCE} at `{entry['base']}` [CI] "
                  f"| bytes up ÷ `{entry['base']}`'s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for m, d in entry["change"].items():
            b, ref, ratio = entry["potara_beyond"].get(m), entry["vs_reference_at_base"].get(m), entry["bytes_up_ratio"][m]
            lines.append(f"| {m} | {delta_text(d)} | {p_text(d)} | {wtl_text(d)} "
                         f"| {delta_text(b)} | {p_text(b)} | {b['verdict'] if b else '–'} | {delta_text(ref)} "
                         f"| {'–' if ratio is None else f'{ratio:.3f}'} |")
        lines += ["", f"`it − {REFERENCE} at {entry['base']}`: each method at `{source}` against FedIT + FT at "
                  f"`{entry['base']}` on the same clients (uncorrected): whether it reaches personalized FedIT's "
                  f"`{entry['base']}` accuracy."]
        lam = entry["potara_lambda_change"]
        lines += ["", f"Potara's λ, `{source}` − `{entry['base']}`: {delta_text(lam)} (p {p_text(lam)})."]
    return "\n".join(lines)


def _seed_means(group: list[Cell], name: str) -> list[float]:
    return [c.methods[name]["mean_acc"] for c in group if name in c.methods]


def _seed_lambda_means(group: list[Cell]) -> list[float]:
    out = []
    for cell in group:
        lams = [lam for r in cell.methods.get(POTARA, {}).get("per_client", []) if not math.isnan(lam := _lambda(r))]
        out += [sum(lams) / len(lams)] if lams else []
    return out


def _interval(values: list[float]) -> tuple[float, float, float] | None:
    """(mean, low, high): the 95% t-interval of the mean of ``values`` (low = high = NaN with one value)."""
    if not values:
        return None
    mean, se, df = stratified_t(np.asarray(values, dtype=float), [0] * len(values))  # one stratum: n − 1 df
    half = math.nan if math.isnan(se) else t_quantile(0.975, df) * se
    return mean, mean - half, mean + half


def _ci(x: tuple[float, float, float] | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    mean, low, high = x
    return f"{mean:.{digits}f}" + ("" if math.isnan(low) else f" [{low:.{digits}f}, {high:.{digits}f}]")


def _epsilon(group: list[Cell]) -> float | None:
    """The ε of a setting's cells (one noise multiplier, fraction and rounds per setting); None without DP."""
    block = group[0].summary.get("privacy") if group else None
    return None if block is None else float(block["epsilon"])


def _epsilon_text(group: list[Cell]) -> str:
    eps = _epsilon(group)
    return "–" if eps is None else f"{eps:.3g}"


def _axis_text(group: list[Cell]) -> str:
    eps = _epsilon(group)
    return "no DP" if eps is None else f"ε {eps:.3g}"


def _bytes(group: list[Cell], name: str, parts: tuple[str, ...] = ("bytes_up", "bytes_down")) -> float:
    """A method's bytes per run (``parts`` of them: up and down by default), mean over the seeds."""
    rows = [c.methods[name] for c in group if name in c.methods]
    return sum(sum(r[p] for p in parts) for r in rows) / len(rows) if rows else math.nan


def plot_sweep(cells: dict[str, list[Cell]], suite: Suite, out: Path) -> list[Path]:
    """``sweep.accuracy.png`` (against ε when a setting has DP, else against MB on the wire) and, when Potara
    chose a λ, ``sweep.lambda.png``; the paths written."""
    settings = swept_settings(suite, cells)
    if not settings:
        return []
    names = [m for m in suite.methods if not is_bound(m) and any(m in c.methods for s in settings for c in cells[s])]
    private = any(_epsilon(cells[s]) is not None for s in settings)
    written = [out / "sweep.accuracy.png"]
    if private:
        _categorical(settings, names, lambda s, m: _interval(_seed_means(cells[s], m)), cells,
                     "mean personalized test accuracy", written[0])
    else:
        _against_bytes(settings, names, cells, written[0])
    if any(_seed_lambda_means(cells[s]) for s in settings):
        written.append(out / "sweep.lambda.png")
        _categorical(settings, [POTARA], lambda s, m: _interval(_seed_lambda_means(cells[s])), cells,
                     "Potara's mean λ (weight of the federated adapter)", written[1])
    return written


def _categorical(settings: list[str], names: list[str], point: Callable, cells: dict[str, list[Cell]],
                 ylabel: str, path: Path) -> None:
    """One point per (setting, method) with its 95% interval, settings along x labelled with their ε."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(settings)), 4))
    width = 0.5 / max(1, len(names))
    for i, name in enumerate(names):
        xs, ys, errs = [], [], [[], []]
        for k, s in enumerate(settings):
            p = point(s, name)
            if p is None:
                continue
            mean, low, high = p
            xs.append(k + (i - (len(names) - 1) / 2) * width)
            ys.append(mean)
            errs[0].append(0.0 if math.isnan(low) else mean - low)
            errs[1].append(0.0 if math.isnan(high) else high - mean)
        ax.errorbar(xs, ys, yerr=errs, label=label(name), capsize=3, **style(name))
    ax.set_xticks(range(len(settings)), [f"{s}\n{_axis_text(cells[s])}" for s in settings], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{len(cells[settings[0]])} seeds; 95% t-intervals over seeds (paired differences: report.md)",
                 fontsize=9)
    save_png(fig, path)
    plt.close(fig)


def _against_bytes(settings: list[str], names: list[str], cells: dict[str, list[Cell]], path: Path) -> None:
    """Per method, a line through its settings at their bytes on the wire (log MB), each point with its 95%
    interval and its setting's name."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        points = [(_bytes(cells[s], name) / 1e6, _interval(_seed_means(cells[s], name)), s) for s in settings]
        points = sorted((p for p in points if p[1] is not None and p[0] > 0), key=lambda p: p[0])
        if not points:
            continue
        errs = [[0.0 if math.isnan(i[1]) else i[0] - i[1] for _, i, _ in points],
                [0.0 if math.isnan(i[2]) else i[2] - i[0] for _, i, _ in points]]
        ax.errorbar([mb for mb, _, _ in points], [i[0] for _, i, _ in points], yerr=errs, label=label(name),
                    capsize=3, **style(name))
        for mb, i, s in points:
            ax.annotate(s, (mb, i[0]), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("communication per run (MB, up + down; log scale)")
    ax.set_ylabel("mean personalized test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("accuracy against bytes on the wire; 95% t-intervals over seeds", fontsize=9)
    save_png(fig, path)
    plt.close(fig)
