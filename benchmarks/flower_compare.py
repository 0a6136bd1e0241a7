"""Side by side with Flower: one federation under the embedded engine, Flower's simulation (Ray) and a
loopback deployment (SuperLink + SuperNodes), in one run: s/round, wall, CPU and peak memory of every process.

    .venv/bin/python benchmarks/flower_compare.py [--clients 4] [--rounds 3] [--steps 1] [--actors 2]
        [--methods fedit potara] [--engines embedded simulation deployment deployment-secure] [--dp]
        [--out benchmarks/results/flower-compare.md]

``deployment-secure`` is the same loopback deployment with TLS, SuperNode authentication (credentials made by
``potara.flower.certs``) and SecAgg+ (``secagg = true``): what privacy costs in time against ``deployment``.
``--dp`` turns client-level DP on in every engine at a noise multiplier of 1e-9 (clip norm 0.05, as the deployment
test): the DP code paths run (clipping, noise, equal weights; on the client under SecAgg+) while the engines' noise
(NumPy's in Flower, torch's in the embedded engine) stays below float32 resolution, so they can still be compared.

Needs the flower extra (``pip install -e .[flower]``: flwr[simulation], which brings Ray). Every engine runs
the same config overrides in its own process tree (a child of this script); a sampler reads every process
of that tree from /proc every 0.2 s: peak RSS and PSS summed over the tree, the most processes at once,
every process seen and their CPU seconds. Rounds are timed inside the run (the embedded engine's round log;
``seconds`` of the ServerApp's rounds.jsonl), personalization apart. The model is the offline MiniLM with its
dropout off (``--dropout`` keeps it): dropout draws from the process's global RNG, which differs between one
process training every client and one process per client, so only without it can the engines agree exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "scripts" / "deploy_local.sh"
ENGINES = ("embedded", "simulation", "deployment", "deployment-secure")
DEPLOYMENTS = ("deployment", "deployment-secure")
DP_OVERRIDES = ["privacy.noise_multiplier=1e-9", "privacy.clip_norm=0.05"]
KIB, MB = 1024, 1e6
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Proc:
    """One process as /proc shows it: parent, start time (ticks since boot, with the pid its identity), CPU ticks,
    name (``comm``: the executable or script, 15 characters at most)."""

    pid: int
    ppid: int
    start: int
    cpu_ticks: int
    name: str = ""


def read_proc(pid: int) -> Proc | None:
    """``/proc/<pid>/stat`` parsed, or None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return Proc(pid, int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12]), name)


def all_procs() -> list[Proc]:
    """Every process this user can read."""
    pids = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [p for p in map(read_proc, pids) if p is not None]


def tree(root: int, procs: list[Proc]) -> list[Proc]:
    """``root`` and its descendants among ``procs``."""
    children: dict[int, list[Proc]] = {}
    for p in procs:
        children.setdefault(p.ppid, []).append(p)
    found = [p for p in procs if p.pid == root]
    for p in found:
        found.extend(children.get(p.pid, []))
    return found


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of a process in KiB from ``smaps_rollup``; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return 0, 0
    values = {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines()[1:] if line.endswith("kB")}
    return values.get("Rss", 0), values.get("Pss", 0)


@dataclass
class TreeSampler:
    """Samples a process tree every ``interval`` seconds in a thread: peaks of summed RSS and PSS and of the
    process count, and every process seen (with its last CPU ticks); ``reap`` ends those still alive."""

    root: int
    interval: float = 0.2
    peak_rss: int = 0
    peak_pss: int = 0
    peak_procs: int = 0
    seen: dict[tuple[int, int], Proc] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        """One reading of the tree."""
        procs = tree(self.root, all_procs())
        mem = [memory_kib(p.pid) for p in procs]
        self.peak_rss = max(self.peak_rss, sum(r for r, _ in mem) * KIB)
        self.peak_pss = max(self.peak_pss, sum(p for _, p in mem) * KIB)
        self.peak_procs = max(self.peak_procs, len(procs))
        self.seen.update({(p.pid, p.start): p for p in procs})

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    @property
    def cpu_s(self) -> float:
        """CPU seconds of every process seen, as last sampled (short of at most one interval each)."""
        return sum(p.cpu_ticks for p in self.seen.values()) / TICK

    def cpu_by_name(self) -> list[tuple[str, int, float]]:
        """(name, processes, CPU seconds) of every process name seen, most CPU first."""
        totals: dict[str, tuple[int, float]] = {}
        for p in self.seen.values():
            count, cpu = totals.get(p.name, (0, 0.0))
            totals[p.name] = (count + 1, cpu + p.cpu_ticks / TICK)
        return sorted(((n, c, s) for n, (c, s) in totals.items()), key=lambda t: -t[2])

    def reap(self) -> int:
        """SIGKILL the processes seen that still run (same pid and start time: not a reused pid); how many."""
        alive = [p for p in self.seen.values() if (now := read_proc(p.pid)) is not None and now.start == p.start]
        for p in alive:
            try:
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(alive)


def overrides(args: argparse.Namespace, model: str) -> list[str]:
    """The one Potara config of every engine: no per-round evaluation, one thread per process."""
    return [
        f"model.name={model}", f"data.num_clients={args.clients}", "data.train_sizes=[15,60]", "data.test_size=20",
        f"fed.rounds={args.rounds}", f"fed.local_steps={args.steps}", "fed.eval_rounds=false", "local.epochs=1",
        f"threads={args.threads}", f"methods=[{','.join(args.methods)}]", *(DP_OVERRIDES if args.dp else []),
    ]


def minilm_without_dropout(out: Path) -> Path:
    """The offline MiniLM with hidden and attention dropout 0 (files linked, config rewritten)."""
    from potara.models.loading import resolve_model_path

    src = Path(resolve_model_path("offline:minilm"))
    out.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.name != "config.json" and not (out / item.name).exists():
            (out / item.name).symlink_to(item)
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def run_embedded(over: list[str], out: Path) -> None:
    """``potara run``'s engine in this process; round times from its round log; the final federated adapter."""
    from potara import config, engine
    from potara.models.adapters import serialize

    stamps: list[float] = []
    captured: dict = {}
    original = engine.run_rounds

    def capture(*a, **kw):  # noqa: ANN002, ANN003, ANN202 (engine.run_rounds' own signature)
        captured["state"] = original(*a, **kw)
        return captured["state"]

    engine.run_rounds = capture
    try:
        result = engine.run(config.load(None, over), log=lambda record: stamps.append(time.perf_counter()))
    finally:
        engine.run_rounds = original
    ended = time.perf_counter()
    fed_s = result.timing["federation_s"]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    rows = {name: m.per_client for name, m in result.methods.items()}
    write_result(out, [fed_s - sum(gaps), *gaps], fed_s, ended - stamps[-1], rows)
    (out / "federated.safetensors").write_bytes(serialize(captured["state"]))


def run_simulation(over: list[str], out: Path, clients: int, actors: int) -> None:
    """The Flower apps under ``flwr.simulation.run_simulation`` on Ray: ``actors`` actors of one CPU each."""
    from flwr.simulation import run_simulation as flower_simulation

    from potara.flower.client_app import build_client_app
    from potara.flower.server_app import build_server_app

    settings = {"overrides": " ".join(over), "out-dir": str(out / "flower"), "evaluate-every": 0}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": actors}}
    flower_simulation(build_server_app(settings), build_client_app(settings), clients, backend_config=backend)
    flower_result(out / "flower", out)


def flower_result(flower_out: Path, out: Path) -> None:
    """The ServerApp's outputs (summary.json, rounds.jsonl) in this script's result format."""
    summary = json.loads((flower_out / "summary.json").read_text())
    rounds = [json.loads(line) for line in (flower_out / "rounds.jsonl").read_text().splitlines()]
    timing = summary["timing"]
    rows = {name: m["per_client"] for name, m in summary["methods"].items()}
    write_result(out, [r["seconds"] for r in rounds], timing["federation_s"],
                 timing["wall_s"] - timing["federation_s"], rows)
    shutil.copy(flower_out / "federated.safetensors", out / "federated.safetensors")


def write_result(out: Path, round_s: list[float], federation_s: float, personalize_s: float, rows: dict) -> None:
    """result.json: per-round seconds, federation and personalization seconds, per-client rows per method."""
    keep = ("client", "acc", "lambda")
    per_client = {name: [{k: r.get(k) for k in keep} for r in method_rows] for name, method_rows in rows.items()}
    result = {"round_s": round_s, "federation_s": federation_s, "personalize_s": personalize_s,
              "per_client": per_client}
    (out / "result.json").write_text(json.dumps(result, indent=1))


def engine_command(engine: str, args: argparse.Namespace, over: list[str], out: Path) -> list[str]:
    """The child process that runs one engine, writing ``out/result.json`` (deployment-secure: its TLS and
    SuperNode credentials are made here first, in ``out/creds``)."""
    if engine in DEPLOYMENTS:
        from potara.flower.ports import free_port_block

        run_config = [f"overrides='{' '.join(over)}'", f"out-dir='{out / 'flower'}'", "evaluate-every=0"]
        secure = []
        if engine == "deployment-secure":
            from potara.flower.certs import make_credentials

            secure = ["-c", str(make_credentials(out / "creds", args.clients))]
            run_config.append("secagg=true")
        return [str(DEPLOY), "-n", str(args.clients), "-p", str(free_port_block(args.clients + 1)), *secure,
                "-w", str(out / "deploy"), "-t", str(args.timeout), "--", *run_config]
    return [sys.executable, __file__, "--child", engine, "--work", str(out), "--clients", str(args.clients),
            "--actors", str(args.actors), "--overrides", json.dumps(over)]


def measure(engine: str, args: argparse.Namespace, over: list[str], work: Path) -> dict:
    """Run one engine in a child process tree, sampled throughout; its timings, memory, CPU and result."""
    out = work / engine
    out.mkdir(parents=True)
    env = {**os.environ, "VENV": str(Path(sys.executable).parents[1])}
    load = os.getloadavg()[0]
    began = time.perf_counter()
    with (out / "log.txt").open("w") as log:
        proc = subprocess.Popen(engine_command(engine, args, over, out), stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        with TreeSampler(proc.pid) as sampler:
            code = proc.wait(args.timeout + 60)
    wall = time.perf_counter() - began
    left = sampler.reap()
    if code:
        raise SystemExit(f"{engine} exited with {code}; see {out / 'log.txt'}")
    if engine in DEPLOYMENTS:
        flower_result(out / "flower", out)
    result = json.loads((out / "result.json").read_text())
    return {"engine": engine, "wall_s": wall, "peak_rss": sampler.peak_rss, "peak_pss": sampler.peak_pss,
            "peak_procs": sampler.peak_procs, "procs": len(sampler.seen), "cpu_s": sampler.cpu_s,
            "load_before": load, "left_running": left, "cpu_by_name": sampler.cpu_by_name(), **result}


def agreement(rows: list[dict], work: Path) -> None:
    """Per engine: the largest difference to the embedded engine's federated adapter, accuracies and λ."""
    from potara.models.adapters import deserialize

    ref_row = next(r for r in rows if r["engine"] == "embedded")
    ref = deserialize((work / "embedded" / "federated.safetensors").read_bytes())
    for row in rows:
        state = deserialize((work / row["engine"] / "federated.safetensors").read_bytes())
        row["d_adapter"] = max(float((state[k] - v).abs().max()) for k, v in ref.items())
        row["d_acc"] = max_difference(row["per_client"], ref_row["per_client"], "acc")
        row["d_lambda"] = max_difference(row["per_client"], ref_row["per_client"], "lambda")


def max_difference(mine: dict, theirs: dict, key: str) -> float:
    """The largest |difference| of ``key`` over methods and clients (numbers, or per-module dicts/lists)."""
    diffs = [0.0]
    for name, rows in theirs.items():
        for a, b in zip(mine[name], rows, strict=True):
            if a["client"] != b["client"]:
                raise ValueError(f"{name}: client {a['client']} against {b['client']}")
            diffs += [abs(x - y) for x, y in zip(_numbers(a.get(key)), _numbers(b.get(key)), strict=True)]
    return max(diffs)


def _numbers(value: float | dict | list | None) -> list[float]:
    if value is None:
        return []
    if isinstance(value, dict):
        return [float(v) for v in value.values()]
    return [float(v) for v in value] if isinstance(value, list) else [float(value)]


def table(rows: list[dict]) -> str:
    """The comparison as a Markdown table: time, CPU, memory and agreement with the embedded engine."""
    lines = [
        "| engine | round 1 (s) | s/round (2..R) | personalize (s) | total wall (s) | outside rounds (s) | CPU (s) "
        "| peak RSS Σ (MB) | peak PSS Σ (MB) | procs (peak / all) | load before | max Δ adapter | max Δ acc | max Δ λ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        later = r["round_s"][1:]
        outside = r["wall_s"] - sum(r["round_s"]) - r["personalize_s"]
        lines.append(
            f"| {r['engine']} | {r['round_s'][0]:.1f} | {sum(later) / max(1, len(later)):.1f} "
            f"| {r['personalize_s']:.1f} | {r['wall_s']:.1f} | {outside:.1f} | {r['cpu_s']:.0f} "
            f"| {r['peak_rss'] / MB:.0f} | {r['peak_pss'] / MB:.0f} | {r['peak_procs']} / {r['procs']} "
            f"| {r['load_before']:.1f} | {r.get('d_adapter', 0.0):.1e} | {r.get('d_acc', 0.0):.3f} "
            f"| {r.get('d_lambda', 0.0):.1e} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """CPU model, cores, memory and the load average (the machine may be shared)."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {mem:.0f} GiB RAM; load average (1/5/15 min) at the end: {load}"


def versions() -> str:
    """The versions that matter here."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for pkg in ("flwr", "ray", "torch", "transformers", "peft"):
        try:
            found.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            found.append(f"{pkg} (not installed)")
    return ", ".join(found)


def report(rows: list[dict], argv: list[str], over: list[str], args: argparse.Namespace) -> str:
    """The Markdown file: command, commit, machine, settings, the table."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return "\n".join([
        "# Potara: embedded engine, Flower simulation (Ray) and loopback deployment side by side", "",
        f"Command: `{' '.join(['.venv/bin/python benchmarks/flower_compare.py', *argv])}`", "",
        f"Commit: {commit}{' (with local changes)' if dirty else ''}; {versions()}", "",
        f"Machine: {machine()}", "",
        f"Work: {args.clients} clients, {args.rounds} rounds, {args.steps} local step(s) each, methods "
        f"{', '.join(args.methods)}; simulation: {args.actors} Ray actor(s) of 1 CPU; deployment: 1 SuperLink + "
        f"{args.clients} SuperNodes on 127.0.0.1 (insecure; deployment-secure: TLS, SuperNode authentication and "
        f"SecAgg+). Overrides: `{' '.join(over)}`", "",
        table(rows), "", "CPU seconds by process name (processes), most first:", "",
        *(f"- {r['engine']}: {cpu_lines(r['cpu_by_name'])}" for r in rows), "",
    ])


def cpu_lines(by_name: list[tuple[str, int, float]], top: int = 6) -> str:
    """The ``top`` process names by CPU seconds, then the rest together."""
    shown = [f"{name} {cpu:.0f} ({count})" for name, count, cpu in by_name[:top]]
    rest = by_name[top:]
    if rest:
        shown.append(f"other {sum(c for _, _, c in rest):.0f} ({sum(n for _, n, _ in rest)})")
    return ", ".join(shown)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1, help="local steps per client and round (fed.local_steps)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every process")
    parser.add_argument("--actors", type=int, default=2, help="Ray actors (ClientApps at once) in the simulation")
    parser.add_argument("--methods", nargs="+", default=["fedit", "potara"])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--dropout", action="store_true", help="keep MiniLM's dropout (engines then differ)")
    parser.add_argument("--dp", action="store_true", help="client-level DP at a negligible noise in every engine")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one engine may take")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "flower-compare.md")
    parser.add_argument("--child", choices=ENGINES[:2], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.child:
        over = json.loads(args.overrides)
        if args.child == "embedded":
            run_embedded(over, args.work)
        else:
            run_simulation(over, args.work, args.clients, args.actors)
        return 0
    work = Path(tempfile.mkdtemp(prefix="potara-flower-compare-"))
    model = "offline:minilm" if args.dropout else str(minilm_without_dropout(work / "minilm-nodrop"))
    over = overrides(args, model)
    rows = []
    for engine in args.engines:
        rows.append(measure(engine, args, over, work))
        print(f"{engine}: {rows[-1]['wall_s']:.0f} s, rounds {rows[-1]['round_s']}", file=sys.stderr)
    if "embedded" in args.engines:
        agreement(rows, work)
    text = report(rows, argv, over, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"work files: {work}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
