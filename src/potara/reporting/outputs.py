"""Results on disk (atomic), the printed table, and the plots."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

from .communication import FEDIT, curve, per_round_methods
from .plots import Final, accuracy_figure, lambda_figure, pyplot
from .privacy import privacy_line, privacy_summary
from .provenance import code_version
from .results import RunResult
from .stats import PairedDiff, paired_difference
from .styles import is_bound, is_personalized, row_label

FIXED_LAMBDA = ("fedit", "fedit_ft", "fedit_ft_matched", "fixed")  # the same λ for every client: no choice to plot
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
            "bound": is_bound(name), "federation": r.federation,
        }
        for name, r in result.methods.items()
    }
    accs = {name: {row["client"]: row["acc"] for row in m["per_client"]} for name, m in methods.items()}
    out = {"config": config, "methods": methods, "timing": result.timing, "paired": paired(accs, one_federation),
           **({"federation": result.federation} if result.federation else {}), "code": code_version()}
    private = privacy_summary(config)
    return {**out, "privacy": private} if private else out


def one_federation(unit: Hashable) -> str:
    """The cluster of every client of a single run: its one federation (so no verdict: "too few clusters")."""
    return "this run"


def is_peer(name: str) -> bool:
    """A personalized method Potara is measured against: not a bound, not a Potara variant, not FedIT or FFA-LoRA
    (one adapter for all clients: non-personalized baselines)."""
    return not is_bound(name) and not name.startswith("potara") and is_personalized(name)


def best_peer(name: str, means: dict[str, float]) -> str | None:
    """The peer other than ``name`` with the highest mean accuracy (the first listed on a tie)."""
    peers = [m for m in means if is_peer(m) and m != name]
    return max(peers, key=means.__getitem__, default=None)


def paired(
    accs: dict[str, dict[Hashable, float]],
    cluster: Callable[[Hashable], Hashable] | None = None,
    stratum: Callable[[Hashable], Hashable] | None = None,
) -> dict:
    """Per non-bound method, its paired difference ``vs_fedit_ft`` and ``vs_best_peer`` over shared units.

    ``accs[method][unit]`` is an accuracy; ``cluster(unit)`` the unit's cluster, its federation (None: every unit
    is its own); ``stratum(unit)`` its stratum, its setting (None: one). Each entry is ``stats.PairedDiff.to_dict()``
    plus ``against``, the method compared with. Uncorrected for multiplicity: exploratory.
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
            if other and (diff := difference(accs[name], accs[other], cluster, stratum))
        }
    return out


def difference(
    a: dict[Hashable, float],
    b: dict[Hashable, float],
    cluster: Callable[[Hashable], Hashable] | None = None,
    stratum: Callable[[Hashable], Hashable] | None = None,
) -> PairedDiff | None:
    """a − b over the units both have (None if none), clustered by ``cluster(unit)`` and stratified by
    ``stratum(unit)`` when given."""
    units = [u for u in a if u in b]
    if not units:
        return None
    groups = [cluster(u) for u in units] if cluster else None
    strata = [stratum(u) for u in units] if stratum else None
    return paired_difference([a[u] for u in units], [b[u] for u in units], groups, strata)


def table(summary_: dict[str, Any]) -> str:
    """A markdown table: one row per method, then the bounds below a rule."""
    lines = [
        "| method | mean acc | worst acc | bytes up | bytes down | rounds | mean λ |",
        "|---|---|---|---|---|---|---|",
    ]
    methods = summary_["methods"]
    for name in bounds_last(methods):
        m = methods[name]
        lines += [bound_rule(7)] if name == first_bound(methods) else []
        lines.append(
            f"| {row_label(name)} | {m['mean_acc']:.4f} | {m['worst_acc']:.4f} | {m['bytes_up']:,} | {m['bytes_down']:,} "
            f"| {m['rounds']} | {_mean_lambda(m['per_client'])} |"
        )
    t = summary_["timing"]
    lam = " · ".join(f"λ of {k} {v:.3f} s" for k, v in t.get("lambda_s", {}).items())
    lines.append("")
    lines.append(
        f"per client: local epoch {t['local_epoch_s']:.3f} s · Fisher {t['fisher_s']:.3f} s"
        f"{' · ' + lam if lam else ''} · federation {t.get('federation_s', 0):.1f} s in all"
    )
    if "privacy" in summary_:
        lines.append(privacy_line(summary_["privacy"]))
    return "\n".join(lines)


def bounds_last(names: Iterable[str]) -> list[str]:
    """The methods in their order, then the bounds in theirs."""
    names = list(names)
    return [n for n in names if not is_bound(n)] + [n for n in names if is_bound(n)]


def first_bound(names: Iterable[str]) -> str | None:
    """The bound a table's rule goes above: the first of ``bounds_last(names)``'s bounds (None without one)."""
    return next((n for n in bounds_last(names) if is_bound(n)), None)


def bound_rule(columns: int) -> str:
    """The row between a table's methods and its bounds."""
    return "| *bounds: λ picked on validation / test data, not methods* |" + " |" * (columns - 1)


def _mean_lambda(rows: list[dict]) -> str:
    values = [mean_lambda(r["lambda"]) for r in rows if r.get("lambda") is not None]
    return f"{sum(values) / len(values):.2f}" if values else "–"


def mean_lambda(lam: float | dict | list) -> float:
    """One number for a λ: the mean over modules (or list entries) when there are several."""
    if isinstance(lam, dict):
        return sum(lam.values()) / len(lam)
    if isinstance(lam, list):
        return sum(lam) / len(lam)
    return float(lam)


def write_outputs(out_dir: str | Path, summary_: dict[str, Any], rounds: list[dict], plots: bool = True) -> None:
    out = Path(out_dir)
    atomic_write(out / "summary.json", json.dumps(json_safe(summary_), indent=2))
    atomic_write(out / "rounds.jsonl", "".join(json.dumps(json_safe(r)) + "\n" for r in rounds))
    if not plots:
        return
    plot_accuracy_vs_bytes(summary_, rounds, out / "accuracy_vs_bytes.png")
    plot_lambda_vs_oracle(summary_, out / "lambda_vs_oracle.png")


def json_safe(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def size_text(nbytes: float) -> str:
    """``1.23 MB`` or ``4.5 kB``; '–' when unknown (NaN)."""
    if math.isnan(nbytes):
        return "–"
    if not nbytes:
        return "0"
    return f"{nbytes / 1e6:.2f} MB" if nbytes >= 1e5 else f"{nbytes / 1e3:.1f} kB"


def save_png(fig, path: Path) -> None:
    """A matplotlib figure as a PNG file, written atomically."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    atomic_write(path, buf.getvalue())


def plot_accuracy_vs_bytes(summary_: dict[str, Any], rounds: list[dict], path: Path) -> None:
    """FedIT after every round (and any method measured every round) against cumulative MB, every other method's
    final point at its bytes; beside it, every method's final accuracy."""
    methods = summary_["methods"]
    curves = {}
    for name in sorted(per_round_methods(rounds), key=lambda n: (n != FEDIT, n)):
        points = curve(rounds, name, methods[name]["mean_acc"] if name in methods else None)
        curves.update({name: [(p.cum_bytes / 1e6, p.acc) for p in points]} if points else {})
    finals = {name: Final((m["bytes_up"] + m["bytes_down"]) / 1e6, m["mean_acc"]) for name, m in methods.items()}
    fig = accuracy_figure(curves, finals, "this run")
    save_png(fig, path)
    pyplot().close(fig)


def plot_lambda_vs_oracle(summary_: dict[str, Any], path: Path) -> None:
    """Each client's λ chosen by every method that chooses one, against the oracle's (no oracle: no plot)."""
    methods = summary_["methods"]
    oracle = oracle_of(methods)
    if oracle is None:
        return
    fig = lambda_figure(lambdas_against(methods, oracle), oracle, "this run")
    save_png(fig, path)
    pyplot().close(fig)


def oracle_of(methods: Iterable[str]) -> str | None:
    """The λ a choice is measured against: ``oracle_test``'s (the best on test data), else ``oracle_val``'s."""
    return next((name for name in ("oracle_test", "oracle_val") if name in methods), None)


def lambdas_against(methods: dict[str, dict], oracle: str) -> dict[str, list]:
    """Per method that chooses λ per client, (oracle's λ, its λ, training examples) of every client both have."""
    ref = {r["client"]: mean_lambda(r["lambda"]) for r in methods[oracle]["per_client"] if r.get("lambda") is not None}
    out = {}
    for name, m in methods.items():
        points = [(ref[r["client"]], mean_lambda(r["lambda"]), r["n_train"]) for r in m["per_client"]
                  if r.get("lambda") is not None and r["client"] in ref]
        if points and name != oracle and name.split("@")[0] not in FIXED_LAMBDA:
            out[name] = points
    return out
