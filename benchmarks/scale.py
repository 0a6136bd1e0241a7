"""Scale: seconds per round against pure training compute, and peak RSS, with 10 to 1000 simulated clients.

    .venv/bin/python benchmarks/scale.py [--settings 10 100 1000:0.1] [--rounds 2] [--steps 1] [--threads 1]

A setting is ``CLIENTS`` or ``CLIENTS:FRACTION`` (``fed.fraction``, the share sampled each round). Each runs the
federated rounds (sampling, local steps, upload, validation, aggregation, checkpoint) in a fresh subprocess, so
every peak RSS is its own. Inside the same run a forward pre-hook and an optimizer step post-hook time the
clients' pure training compute (forward + backward + optimizer step); the overhead ratio is s/round ÷ that.
The table shows them with the RSS after setup (model + encoded client data) and the peak, then least-squares
slopes of RSS per client against the size of one adapter payload: a client should cost about an adapter, never
a model.
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

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

KIB = 1024


def rss_bytes() -> int:
    """The current resident set size of this process."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    raise RuntimeError("no VmRSS in /proc/self/status")


class StepTimer:
    """Seconds from each training forward of ``model`` to the end of the optimizer step that follows it."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.seconds, self.steps, self._began = 0.0, 0, None
        model.register_forward_pre_hook(self._start)
        register_optimizer_step_post_hook(self._stop)

    def _start(self, module: torch.nn.Module, _args: tuple) -> None:
        if module.training and torch.is_grad_enabled() and self._began is None:
            self._began = time.perf_counter()

    def _stop(self, *_args: object) -> None:
        if self._began is not None:
            self.seconds, self.steps, self._began = self.seconds + time.perf_counter() - self._began, self.steps + 1, None


def measure(clients: int, fraction: float, rounds: int, steps: int, threads: int) -> dict:
    """One setting, in this process: setup RSS, peak RSS, s/round, pure train s/round, adapter and data bytes."""
    from potara import config, engine
    from potara.federation import checkpoint
    from potara.federation.rounds import run_rounds
    from potara.models.adapters import get_state, serialize
    from potara.training.loop import Budget

    cfg = config.load(None, [
        f"data.num_clients={clients}", "data.train_sizes=[15,60]", "data.test_size=20",
        f"fed.rounds={rounds}", f"fed.local_steps={steps}", f"fed.fraction={fraction}", f"threads={threads}",
    ])
    torch.set_num_threads(threads)
    fed_data = engine.load_federated_data(cfg)
    splits = engine.encode_clients(cfg, fed_data)
    model = engine.load_peft_model(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    initial = get_state(model)
    setup = rss_bytes()
    timer = StepTimer(model)
    times: list[float] = []
    train: list[float] = []
    began = [time.perf_counter(), 0.0]
    ckpt = Path(tempfile.mkdtemp(prefix="potara-scale-"))

    def on_round(entry, state) -> None:
        checkpoint.save(ckpt, checkpoint.RoundState(entry.round, state, [], {}, {}))
        times.append(time.perf_counter() - began[0])
        train.append(timer.seconds - began[1])
        began[:] = [time.perf_counter(), timer.seconds]

    run_rounds(
        model, {s.name: s.train for s in splits}, initial, engine.strategy_for(cfg), rounds=rounds,
        fraction=fraction, budget=Budget(1, steps, cfg.fed.lr, cfg.fed.batch_size), seed=cfg.seed,
        limits=cfg.validation, on_round=on_round,
    )
    shutil.rmtree(ckpt, ignore_errors=True)
    data = sum(t.nbytes for s in splits for e in (s.train, s.val, s.test) for t in e.tensors.values())
    return {
        "clients": clients, "fraction": fraction, "sampled": max(1, round(fraction * clients)), "setup_rss": setup,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB, "s_per_round": sum(times) / len(times),
        "train_s_per_round": sum(train) / len(train), "steps": timer.steps,
        "adapter_bytes": len(serialize(initial)), "data_bytes": data,
    }


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys against xs."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def table(rows: list[dict]) -> str:
    """Markdown table of the settings, then the per-client slopes against the adapter size."""
    mb = 1e6
    lines = [
        "| clients (sampled) | s/round | pure train s/round | overhead ratio | setup RSS (MB) | peak RSS (MB) | "
        "peak − setup (MB) | client data (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} ({r['sampled']}) | {r['s_per_round']:.2f} | {r['train_s_per_round']:.2f} | "
            f"{r['s_per_round'] / r['train_s_per_round']:.2f}× | {r['setup_rss'] / mb:.1f} | {r['peak_rss'] / mb:.1f} | "
            f"{(r['peak_rss'] - r['setup_rss']) / mb:.1f} | {r['data_bytes'] / mb:.2f} |"
        )
    adapter = rows[0]["adapter_bytes"]
    lines += ["", f"adapter payload: {adapter / KIB:.1f} KiB; slope per extra client (÷ adapter payload):"]
    if len(rows) < 2:
        return "\n".join(lines)
    total, whole = [r["clients"] for r in rows], [r for r in rows if r["fraction"] == 1.0]
    per = {
        "peak RSS, per client": slope(total, [r["peak_rss"] for r in rows]),
        "setup RSS, per client": slope(total, [r["setup_rss"] for r in rows]),
        "encoded client data, per client": slope(total, [r["data_bytes"] for r in rows]),
    }
    if len(whole) > 1:  # same data per client, every client sampled: what a round costs per client
        per["peak − setup (the rounds), per sampled client, fraction 1"] = slope(
            [r["clients"] for r in whole], [r["peak_rss"] - r["setup_rss"] for r in whole])
    lines += [f"- {name}: {value / KIB:.1f} KiB = {value / adapter:.2f} × adapter" for name, value in per.items()]
    return "\n".join(lines)


def setting(text: str) -> tuple[int, float]:
    """``CLIENTS`` or ``CLIENTS:FRACTION``."""
    clients, _, fraction = text.partition(":")
    return int(clients), float(fraction or 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=setting, nargs="+", default=[setting(s) for s in ("10", "100", "1000:0.1")])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1, help="local steps per client and round (fed.local_steps)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.settings[0], args.rounds, args.steps, args.threads)))
        return 0
    rows = []
    for clients, fraction in args.settings:
        cmd = [sys.executable, __file__, "--child", "--settings", f"{clients}:{fraction}", "--rounds",
               str(args.rounds), "--steps", str(args.steps), "--threads", str(args.threads)]
        done = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{clients} clients failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{clients} clients: {rows[-1]}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
