"""How far a compressed upload moves a federation: one suite cell run under two payload dtypes, side by side.

    .venv/bin/python benchmarks/payload_drift.py [--suite compression] [--setting fp32] [--seed 500]
        [--method fedsa_lora] [--dtypes fp32 int8]

Prints, for the method's federation, the relative L2 difference of every travelling tensor of the final federated
adapter, of what each client keeps (a peer's local ``B`` and head), whether int8's error feedback holds a residual
on the clients, and each client's test correct count under both dtypes. Written for issue 22: FedSA-LoRA scored
identically on all 60 clients of the compression suite at fp32, fp16 and int8; this shows whether the compressed
uploads reached it at all (they do, as a perturbation too small to flip a prediction) or bypassed it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from potara import engine
from potara.bench.suite import cell_config, load_suite
from potara.federation import checkpoint


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖a‖; ‖a − b‖ itself when ``a`` is zero."""
    scale = float(a.float().norm())
    return float((a.float() - b.float()).norm()) / scale if scale else float((a - b).float().norm())


def run_once(suite: str, setting: str, seed: int, method: str, dtype: str, where: Path):
    """The cell's config with only ``method`` at ``dtype``: its per-client rows and its federation's last round."""
    narrowed = load_suite(suite).narrowed(methods=[method])
    cfg = cell_config(narrowed, setting, seed, [f"fed.payload_dtype={dtype}", "threads=1"])
    result = engine.run(cfg, checkpoint_dir=where)
    own = where / method  # a peer with its own federation checkpoints there; FedIT's methods at the root
    return result.methods[method].per_client, checkpoint.load(own if own.is_dir() else where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="compression")
    parser.add_argument("--setting", default="fp32", help="the suite setting whose overrides are used")
    parser.add_argument("--seed", type=int, default=500)
    parser.add_argument("--method", default="fedsa_lora")
    parser.add_argument("--dtypes", nargs=2, default=["fp32", "int8"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {d: run_once(args.suite, args.setting, args.seed, args.method, d, Path(tmp) / d) for d in args.dtypes}
    (rows_a, last_a), (rows_b, last_b) = (runs[d] for d in args.dtypes)
    a, b = args.dtypes
    print(f"{args.method}, {args.suite} setting {args.setting}, seed {args.seed}: {a} against {b}, round {last_a.round}")
    drift = {k: relative(last_a.adapter[k], last_b.adapter[k]) for k in last_a.adapter}
    print(f"federated adapter: {len(drift)} tensors, relative difference {min(drift.values()):.2e}–"
          f"{max(drift.values()):.2e}")
    for client in sorted(last_a.clients):
        kept = [relative(last_a.clients[client][k], last_b.clients[client][k]) for k in last_a.clients[client]]
        print(f"  {client} kept on the client: up to {max(kept):.2e}")
    print(f"error-feedback residuals: {len(last_a.residuals)} clients at {a}, {len(last_b.residuals)} at {b}")
    same = sum(ra["correct"] == rb["correct"] for ra, rb in zip(rows_a, rows_b, strict=True))
    print(f"test correct equal on {same} of {len(rows_a)} clients")
    for ra, rb in zip(rows_a, rows_b, strict=True):
        print(f"  {ra['client']}: {ra['correct']} / {ra['n_test']} at {a}, {rb['correct']} at {b}")


if __name__ == "__main__":
    main()
