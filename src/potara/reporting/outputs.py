"""Results on disk (atomic), the printed table, and the plots."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from .results import RunResult
from .stats import PairedDiff, paired_difference

BOUNDS = ("oracle_val", "oracle_test")  # λ picked by the grid on held-out or test data: bounds, never methods
REFERENCE = "fedit_ft"  # FedIT + local fine-tuning, the baseline every paired difference is taken against


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary(config: dict[str, Any], result: RunResult) -> dict[str, Any]:
    methods = {
        name: {
            "mean_acc": r.mean_acc(), "worst_acc": r.worst_acc(), "bytes_up": r.bytes_up,
            "bytes_down": r.bytes_down, "rounds": r.rounds, "compute": r.compute, "per_client": r.per_client,
            "bound": is_bound(name),
        }
        for name, r in result.methods.items()
    }
    accs = {name: {row["client"]: row["acc"] for row in m["per_client"]} for name, m in methods.items()}
    return {"config": config, "methods": methods, "timing": result.timing, "paired": paired(accs)}


def is_bound(name: str) -> bool:
    return name in BOUNDS


def is_peer(name: str) -> bool:
    """A method Potara is measured against: not a bound, not a Potara variant."""
    return not is_bound(name) and not name.startswith("potara")


def best_peer(name: str, means: dict[str, float]) -> str | None:
    """The peer other than ``name`` with the highest mean accuracy (the first listed on a tie)."""
    peers = [m for m in means if is_peer(m) and m != name]
    return max(peers, key=means.__getitem__, default=None)


def paired(accs: dict[str, dict[Hashable, float]], cluster: Callable[[Hashable], Hashable] | None = None) -> dict:
    """Per non-bound method, its paired difference ``vs_fedit_ft`` and ``vs_best_peer`` over shared units.

    ``accs[method][unit]`` is an accuracy; ``cluster(unit)`` the unit's bootstrap cluster (None: every unit is
    its own). Each entry is ``stats.PairedDiff.to_dict()`` plus ``against``, the method compared with.
    """
    accs = {name: units for name, units in accs.items() if units}
    means = {name: sum(units.values()) / len(units) for name, units in accs.items()}
    out = {}
    for name in (m for m in accs if not is_bound(m)):
        against = {"vs_fedit_ft": REFERENCE if name != REFERENCE and REFERENCE in accs else None,
                   "vs_best_peer": best_peer(name, means)}
        out[name] = {
            key: {"against": other, **diff.to_dict()}
            for key, other in against.items()
            if other and (diff := difference(accs[name], accs[other], cluster))
        }
    return out


def difference(
    a: dict[Hashable, float], b: dict[Hashable, float], cluster: Callable[[Hashable], Hashable] | None = None
) -> PairedDiff | None:
    """a − b over the units both have (None if none), clustered by ``cluster(unit)`` when given."""
    units = [u for u in a if u in b]
    if not units:
        return None
    groups = [cluster(u) for u in units] if cluster else None
    return paired_difference([a[u] for u in units], [b[u] for u in units], groups)


def table(summary_: dict[str, Any]) -> str:
    """A markdown table: one row per method."""
    lines = [
        "| method | mean acc | worst acc | bytes up | bytes down | rounds | mean λ |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in summary_["methods"].items():
        lines.append(
            f"| {label(name)} | {m['mean_acc']:.4f} | {m['worst_acc']:.4f} | {m['bytes_up']:,} | {m['bytes_down']:,} "
            f"| {m['rounds']} | {_mean_lambda(m['per_client'])} |"
        )
    t = summary_["timing"]
    lam = " · ".join(f"λ of {k} {v:.3f} s" for k, v in t.get("lambda_s", {}).items())
    lines.append("")
    lines.append(
        f"per client: local epoch {t['local_epoch_s']:.3f} s · Fisher {t['fisher_s']:.3f} s"
        f"{' · ' + lam if lam else ''} · federation {t.get('federation_s', 0):.1f} s in all"
    )
    return "\n".join(lines)


def label(name: str) -> str:
    """The method's name, with ``(bound)`` for a bound."""
    return f"{name} (bound)" if is_bound(name) else name


def _mean_lambda(rows: list[dict]) -> str:
    values = [_scalar(r["lambda"]) for r in rows if r.get("lambda") is not None]
    return f"{sum(values) / len(values):.2f}" if values else "–"


def _scalar(lam: float | dict | list) -> float:
    if isinstance(lam, dict):
        return sum(lam.values()) / len(lam)
    if isinstance(lam, list):
        return sum(lam) / len(lam)
    return float(lam)


def write_outputs(out_dir: str | Path, summary_: dict[str, Any], rounds: list[dict], plots: bool = True) -> None:
    out = Path(out_dir)
    atomic_write(out / "summary.json", json.dumps(_finite(summary_), indent=2))
    atomic_write(out / "rounds.jsonl", "".join(json.dumps(_finite(r)) + "\n" for r in rounds))
    if not plots:
        return
    plot_accuracy_vs_bytes(summary_, rounds, out / "accuracy_vs_bytes.png")
    plot_lambda_vs_size(summary_, out / "lambda_vs_train_size.png")


def _finite(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def save_png(fig, path: Path) -> None:
    """A matplotlib figure as a PNG file, written atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    atomic_write(path, buf.getvalue())


def plot_accuracy_vs_bytes(summary_: dict[str, Any], rounds: list[dict], path: Path) -> None:
    """FedIT after every round, every method where it was measured, against cumulative bytes (up + down)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [(r["cum_bytes_up"] + r["cum_bytes_down"]) / 1e6 for r in rounds]
    measured = [(x, r["fedit_mean_acc"]) for x, r in zip(xs, rounds) if r["fedit_mean_acc"] is not None]
    if measured:
        ax.plot(*zip(*measured), "o-", label="fedit (per round)", color="gray")
    series: dict[str, list[tuple[float, float]]] = {}
    for r, x in zip(rounds, xs):
        for name, acc in r.get("methods", {}).items():
            series.setdefault(name, []).append((x, acc))
    final_x = xs[-1] if xs else 0.0
    for name, m in summary_["methods"].items():
        x_end = (m["bytes_up"] + m["bytes_down"]) / 1e6 if m["rounds"] else 0.0
        points = series.get(name, []) + [(x_end if m["rounds"] else 0.0, m["mean_acc"])]
        bound = is_bound(name)  # hollow and dashed
        ax.plot(*zip(*points), "s--" if bound else "^-", mfc="none" if bound else None, label=label(name), alpha=0.8)
    ax.set_xlabel("cumulative communication (MB, up + down)")
    ax.set_ylabel("mean personalized test accuracy")
    ax.set_xlim(left=-0.02 * max(final_x, 1e-9))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_png(fig, path)
    plt.close(fig)


def plot_lambda_vs_size(summary_: dict[str, Any], path: Path) -> None:
    """Per-client λ (federated weight) against the client's training size, for every merging method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in summary_["methods"].items():
        rows = [r for r in m["per_client"] if r.get("lambda") is not None]
        if not rows or name in ("fedit", "fedit_ft", "fixed"):
            continue
        ax.scatter([r["n_train"] for r in rows], [_scalar(r["lambda"]) for r in rows], label=name, alpha=0.7, s=18)
    ax.set_xscale("log")
    ax.set_xlabel("client training examples (log)")
    ax.set_ylabel("λ (weight of the federated adapter)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_png(fig, path)
    plt.close(fig)
