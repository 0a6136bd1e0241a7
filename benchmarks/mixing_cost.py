"""What a held-out λ costs against a local epoch, per client (SPEC check 4: a small fraction of an epoch).

    .venv/bin/python benchmarks/mixing_cost.py [--set key=value ...] [--repeats 3]

For every client of the run's config (no federation: the timings do not depend on the adapter values)
it times one local training epoch (the local budget, from the pretrained adapter) and one forward pass
over the validation split (as `heldout` runs it, three times for λ = 0, ½, 1), and prints per-example
costs. Measured on the default clients (benchmarks/results/mixing_cost.md): a forward costs about 0.35 of
a training step per example and the validation split is a quarter of the training split, so one
validation pass is about 0.09 of an epoch: an estimator that fits in 0.1 of an epoch reads the
validation split at most once.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from potara import config, engine
from potara.models.adapters import get_state, set_state
from potara.models.loading import load_peft_model
from potara.training.loop import predict, train


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """The fastest of ``repeats`` timed calls (seconds), after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = config.load(None, args.set)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    fed_data = engine.load_federated_data(cfg)
    clients = engine.encode_clients(cfg, fed_data)
    model = load_peft_model(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    start = get_state(model)
    settings = engine.session_settings(cfg)
    budget = dataclasses.replace(settings.local_budget, epochs=1)

    def one_epoch(client) -> None:
        set_state(model, start)
        train(model, client.train, budget, torch.Generator().manual_seed(cfg.seed))

    print("| client | n_train | n_val | epoch s | val pass s | train ms/example | forward ms/example | "
          "forward / train step | 3 val passes / epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios, per_example = [], []
    for client in clients:
        epoch_s = best_of(args.repeats, lambda: one_epoch(client))
        val_s = best_of(args.repeats, lambda: predict(model, client.val, cfg.eval_batch_size))
        train_ms, fwd_ms = 1e3 * epoch_s / len(client.train), 1e3 * val_s / max(len(client.val), 1)
        ratios.append(3 * val_s / epoch_s)
        per_example.append(fwd_ms / train_ms)
        print(f"| {client.name} | {len(client.train)} | {len(client.val)} | {epoch_s:.3f} | {val_s:.3f} | "
              f"{train_ms:.1f} | {fwd_ms:.1f} | {fwd_ms / train_ms:.2f} | {ratios[-1]:.2f} |")
    print(f"\nmedian forward / training step per example: {statistics.median(per_example):.2f}; "
          f"median three validation passes / local epoch: {statistics.median(ratios):.2f} (check 4 asks ≤ 0.1)")


if __name__ == "__main__":
    main()
