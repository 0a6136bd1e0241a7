"""The two figures of a run or a bench setting: accuracy against communication, and λ chosen against the
oracle's λ. Each method keeps its colour and marker (:mod:`.styles`) in every figure."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from .styles import is_bound, label, style

DODGE = 0.06  # points at equal bytes spread sideways over this share of the x range, each method in its place


@dataclass(frozen=True)
class Final:
    """A method's final mean accuracy, at its bytes (MB, up + down); ``spread``: its std over seeds, if any."""

    mb: float
    acc: float
    spread: float | None = None


def pyplot():
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(curves: Mapping[str, list[tuple[float, float]]], finals: Mapping[str, Final], title: str):
    """Left: accuracy against MB, a curve per method measured every round, a point per other method (those at
    equal bytes spread sideways); right: every method's final accuracy side by side, the bounds after a rule."""
    plt = pyplot()
    fig, (ax, side) = plt.subplots(
        1, 2, figsize=(11, 4.6), sharey=True, gridspec_kw={"width_ratios": [3, 2], "wspace": 0.04}
    )
    for name, points in curves.items():
        ax.plot(*zip(*points), label=f"{label(name)} (per round)", **style(name))
    points = {name: f for name, f in finals.items() if name not in curves}
    span = max([f.mb for f in finals.values()] + [x for c in curves.values() for x, _ in c] + [1e-9])
    for name, x in _dodged(points, DODGE * span).items():
        ax.plot([x], [points[name].acc], label=label(name), **{**style(name), "linestyle": "none"})
    ax.set_xlabel("cumulative communication (MB, up + down)")
    ax.set_ylabel("mean personalized test accuracy")
    ax.set_xlim(-0.05 * span, 1.08 * span)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    ax.set_title(f"{title}: against communication (equal bytes spread sideways)", fontsize=9)
    _final_strip(side, finals)
    return fig


def _dodged(points: Mapping[str, Final], width: float) -> dict[str, float]:
    """Each point's x: its MB, moved sideways within the group of points at the same MB, in their order."""
    groups: dict[float, list[str]] = defaultdict(list)
    for name, f in points.items():
        groups[round(f.mb, 6)].append(name)
    out = {}
    for mb, names in groups.items():
        step = width / max(1, len(names) - 1)
        for i, name in enumerate(names):
            out[name] = mb + (i - (len(names) - 1) / 2) * step if len(names) > 1 else mb
    return out


def _final_strip(ax, finals: Mapping[str, Final]) -> None:
    """Every method's final accuracy at its own x (± its spread over seeds), the bounds right of a rule."""
    names = [n for n in finals if not is_bound(n)] + [n for n in finals if is_bound(n)]
    for i, name in enumerate(names):
        f = finals[name]
        ax.errorbar([i], [f.acc], yerr=None if f.spread is None else [f.spread], capsize=3,
                    **{**style(name), "linestyle": "none"})
    methods = sum(not is_bound(n) for n in finals)
    if methods < len(names):
        ax.axvline(methods - 0.5, color="black", linewidth=0.8)
        ax.text(methods - 0.4, 1.01, "bounds", transform=ax.get_xaxis_transform(), fontsize=7, va="bottom")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("final accuracy per method" + (" (± std over seeds)" if any(f.spread for f in finals.values()) else ""),
                 fontsize=9)


def lambda_figure(chosen: Mapping[str, list[tuple[float, float, int]]], oracle: str, title: str):
    """One panel per method: each client's λ chosen against ``oracle``'s λ, with the diagonal (marker area grows
    with the client's training examples); the title gives the mean |λ − λ_oracle|."""
    plt = pyplot()
    cols = min(4, max(1, len(chosen)))
    rows = -(-max(1, len(chosen)) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.8 * rows + 0.4), squeeze=False, sharex=True, sharey=True)
    largest = max([n for pts in chosen.values() for _, _, n in pts if n] + [1])  # n None: size not recorded
    for ax, (name, pts) in zip(axes.flat, chosen.items()):
        st = style(name)
        face = "none" if is_bound(name) else st["color"]
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=0.8, linestyle=":")
        ax.scatter([x for x, _, _ in pts], [y for _, y, _ in pts], s=[14 + 70 * (n or 0) / largest for _, _, n in pts],
                   marker=st["marker"], facecolors=face, edgecolors=st["color"], alpha=0.75)
        gap = sum(abs(y - x) for x, y, _ in pts) / len(pts)
        ax.set_title(f"{name}\nmean |λ − λ_oracle| {gap:.2f}", fontsize=8)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xticks([0, 0.5, 1])
        ax.set_yticks([0, 0.5, 1])
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.supxlabel(f"λ of {oracle} (the grid's best on {'test' if oracle == 'oracle_test' else 'validation'} data)",
                  fontsize=9)
    fig.supylabel("λ chosen (weight of the federated adapter)", fontsize=9)
    fig.suptitle(f"{title}: λ per client against the oracle's (area: client training examples)", fontsize=9)
    fig.tight_layout()
    return fig
