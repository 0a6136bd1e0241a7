"""Scale: peak RSS and seconds per round with 10, 50 and 100 simulated clients (MiniLM, short local budget).

    .venv/bin/python benchmarks/scale.py [--clients 10 50 100] [--rounds 2] [--steps 2] [--threads 2]

Each setting runs the federated rounds (sampling, local steps, upload, validation, aggregation,
checkpoint) in a fresh subprocess, so every peak RSS is its own. The table shows the RSS after setup
(model + encoded client data), the peak, s/round, and least-squares slopes of RSS per client against
the size of one adapter payload: the rounds should add about an adapter per client, never a model.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIB = 1024


def rss_bytes() -> int:
    """The current resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(clients: int, rounds: int, steps: int, threads: int) -> dict:
    """One setting, in this process: setup RSS, peak RSS, s/round, adapter and data bytes."""
    import torch

    from potara import config, engine
    from potara.federation import checkpoint
    from potara.federation.rounds import run_rounds
    from potara.models.adapters import get_state, serialize
    from potara.training.loop import Budget

    cfg = config.load(None, [
        f"data.num_clients={clients}", "data.train_sizes=[15,60]", "data.test_size=20",
        f"fed.rounds={rounds}", f"fed.local_steps={steps}", f"threads={threads}",
    ])
    torch.set_num_threads(threads)
    fed_data = engine.load_federated_data(cfg)
    splits = engine.encode_clients(cfg, fed_data)
    model = engine.load_peft_classifier(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    initial = get_state(model)
    setup = rss_bytes()
    times: list[float] = []
    began = [time.perf_counter()]
    ckpt = Path(tempfile.mkdtemp(prefix="potara-scale-"))

    def on_round(entry, state) -> None:
        checkpoint.save(ckpt, checkpoint.RoundState(entry.round, state, [], {}, {}))
        times.append(time.perf_counter() - began[0])
        began[0] = time.perf_counter()

    run_rounds(
        model, {s.name: s.train for s in splits}, initial, engine.strategy_for(cfg), rounds=rounds, fraction=1.0,
        budget=Budget(1, steps, cfg.fed.lr, cfg.fed.batch_size), seed=cfg.seed, limits=cfg.validation,
        on_round=on_round,
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    data = sum(t.nbytes for s in splits for e in (s.train, s.val, s.test) for t in e.tensors.values())
    return {
        "clients": clients, "setup_rss": setup, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB,
        "s_per_round": sum(times) / len(times), "adapter_bytes": len(serialize(initial)), "data_bytes": data,
    }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def table(rows: list[dict]) -> str:
    """Markdown table of the settings, then the per-client slopes against the adapter size."""
    mb = 1e6
    lines = [
        "| clients | setup RSS (MB) | peak RSS (MB) | peak − setup (MB) | s/round | client data (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['setup_rss'] / mb:.1f} | {r['peak_rss'] / mb:.1f} | "
            f"{(r['peak_rss'] - r['setup_rss']) / mb:.1f} | {r['s_per_round']:.2f} | {r['data_bytes'] / mb:.2f} |"
        )
    xs = [r["clients"] for r in rows]
    adapter = rows[0]["adapter_bytes"]
    per = {
        "peak RSS": slope(xs, [r["peak_rss"] for r in rows]),
        "setup RSS": slope(xs, [r["setup_rss"] for r in rows]),
        "peak − setup (the rounds)": slope(xs, [r["peak_rss"] - r["setup_rss"] for r in rows]),
        "encoded client data": slope(xs, [r["data_bytes"] for r in rows]),
    }
    lines += ["", f"adapter payload: {adapter / KIB:.1f} KiB; slope per client:"]
    lines += [f"- {name}: {value / KIB:.1f} KiB/client = {value / adapter:.2f} × adapter" for name, value in per.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="local steps per client and round (fed.local_steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.clients[0], args.rounds, args.steps, args.threads)))
        return 0
    rows = []
    for n in args.clients:
        cmd = [sys.executable, __file__, "--child", "--clients", str(n), "--rounds", str(args.rounds),
               "--steps", str(args.steps), "--threads", str(args.threads)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{n} clients failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{n} clients: {rows[-1]}", file=sys.stderr)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
