"""``potara run``, ``merge``, ``predict`` and ``bench``: the command line over the engine and the merge."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm.auto import tqdm

from .. import config as config_mod
from ..bench import packaged_suites
from ..data.precheck import check_source
from .quiet import quiet, verbose

ROUNDS_BAR = "{desc} |{bar:20}|"  # no rate: the bar opens at the first round's end
ONE_SEED = "One seed cannot separate methods a few points apart: clients and splits move them by as much."


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # the resume line, if any, is already printed: no traceback after it
        return 130
    except (ValueError, KeyError, OSError) as err:  # the project's own errors are ValueErrors with a message
        if getattr(args, "verbose", False):
            raise
        hint = "" if isinstance(err, (config_mod.ConfigError, OSError)) else " (rerun with -v for the traceback)"
        print(f"potara: error: {err}{hint}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="potara", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="also our logs and the libraries' warnings and bars (run: a line per round)"
    )
    run = sub.add_parser("run", parents=[common], help="federate, personalize and compare methods (default: offline MiniLM + fortunes)")
    run.add_argument("--config", help="YAML/JSON config file (see configs/)")
    run.add_argument("--out", help="output folder (default runs/<timestamp>); must not exist or be empty")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    run.add_argument(
        "--resume", metavar="DIR", help="continue the interrupted run whose --out was DIR (state in .DIR.partial/)"
    )
    run.add_argument(
        "--export", choices=("merged", "all"), default="merged",
        help="adapters/<client>/: the Potara merge (merged), and with 'all' also its federated/ and local/ adapters",
    )
    run.set_defaults(func=cmd_run)
    merge = sub.add_parser("merge", parents=[common], help="merge a federated and a local PEFT adapter for one client's data")
    merge.add_argument("--federated", required=True, help="federated adapter directory (PEFT)")
    merge.add_argument("--local", required=True, help="local adapter directory (PEFT)")
    merge.add_argument("--data", required=True, help="the client's held-out data: csv/json/parquet with text,label")
    merge.add_argument("--out", required=True, help="folder for the merged PEFT adapter and lambda.json")
    merge.add_argument(
        "--num-labels", type=int, default=None, help="classifier size (default: the adapter's labels.json or head)"
    )
    merge.add_argument("--max-length", type=int, default=None,
                       help="input tokens (default: the length the adapters were trained at, else model.max_length's default)")
    merge.set_defaults(func=cmd_merge)
    predict = sub.add_parser("predict", parents=[common], help="label texts with a saved adapter (names from its labels.json)")
    predict.add_argument("--adapter", required=True, help="PEFT adapter directory (e.g. runs/X/adapters/client_00)")
    given = predict.add_mutually_exclusive_group(required=True)
    given.add_argument("--text", nargs="+", help="one or more texts")
    given.add_argument("--data", help="csv/json/jsonl file; prints label<TAB>text, and the accuracy if it has labels")
    predict.add_argument("--text-column", default="text", help="the --data file's text column")
    predict.add_argument("--max-length", type=int, default=None,
                         help="input tokens (default: the length the adapter was trained at, else model.max_length's default)")
    predict.set_defaults(func=cmd_predict)
    prof = sub.add_parser(
        "profile", parents=[common],
        help="the federation a config makes, before training: client sizes and label skew (no model loaded)",
    )
    prof.add_argument("--config", help="YAML/JSON config file (see configs/)")
    prof.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    prof.set_defaults(func=cmd_profile)
    bench = sub.add_parser("bench", parents=[common], help="methods × settings × seeds from a suite; resumable; writes report.md")
    suites = ", ".join(packaged_suites())
    bench.add_argument("--suite", default="offline", help=f"a packaged suite ({suites}) or a YAML path")
    bench.add_argument("--out", help="output folder (default runs/bench-<suite>); run again to resume")
    bench.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every cell")
    bench.add_argument("--seeds", type=int, nargs="+",
                       help="run only these of the suite's seeds (the report still covers every finished cell)")
    bench.add_argument("--only", nargs="+", metavar="SETTING",
                       help="run only these settings (the report still covers every finished cell)")
    bench.add_argument("--methods", help="comma-separated methods instead of the suite's")
    only_report = bench.add_mutually_exclusive_group()
    only_report.add_argument("--report-only", action="store_true", help="only aggregate the finished cells")
    only_report.add_argument(
        "--report-from", metavar="DIR_OR_UNITS_CSV",
        help="regenerate the report into --out from committed records alone (<suite>-units.csv, with the "
        "-rounds.csv and -cells.csv beside it), no cells",
    )
    bench.set_defaults(func=cmd_bench)
    return parser


def _terminal(args: argparse.Namespace) -> None:
    """Our logs with ``-v``, else the libraries' noise silenced: after the cheap checks, as it imports them."""
    if args.verbose:
        verbose()
    else:
        quiet()


def _staging(out: Path) -> Path:
    """A temporary folder beside ``out``: outputs appear in ``out`` only when complete."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder '{out}' is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def _publish(staging: Path, out: Path) -> None:
    if out.exists():
        out.rmdir()
    staging.rename(out)


def _partial_of(out: Path) -> Path:
    """The stable folder a run writes to until it is complete: ``.<out>.partial`` beside ``out``."""
    return out.parent / f".{out.name}.partial"


def _start(args: argparse.Namespace) -> tuple[config_mod.RunConfig, Path, Path]:
    """Config, output folder and partial folder of a new run; the config is saved for ``--resume``."""
    from ..reporting.outputs import atomic_write

    cfg = config_mod.load(args.config, args.set)
    check_source(cfg.data)
    _terminal(args)
    from ..methods import resolve

    resolve(cfg)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    partial = _partial_of(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder '{out}' is not empty; choose another --out")
    if partial.exists():
        raise FileExistsError(f"an interrupted run is in '{partial}': continue it with --resume {out}, or delete it")
    atomic_write(partial / "config.json", config_mod.dumps(cfg))
    return cfg, out, partial


def _resumed(args: argparse.Namespace) -> tuple[config_mod.RunConfig, Path, Path]:
    """Config, output folder and partial folder of the interrupted run ``--resume`` names."""
    if args.config or args.set or args.out:
        raise config_mod.ConfigError("--resume continues the run with its saved config; drop --config/--set/--out")
    out = Path(args.resume)
    partial = _partial_of(out)
    if not partial.is_dir():
        done = (out / "summary.json").is_file()
        raise FileNotFoundError(
            f"run in '{out}' is already complete" if done else f"no interrupted run for '{out}' (looked for '{partial}')"
        )
    path = partial / "config.json"
    try:
        cfg = config_mod.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError) as err:
        raise config_mod.ConfigError(f"saved config '{path}' is missing, truncated or altered: {err}") from err
    _terminal(args)
    from ..methods import resolve

    resolve(cfg)
    return cfg, out, partial


def cmd_run(args: argparse.Namespace) -> int:
    cfg, out, staging = _resumed(args) if args.resume else _start(args)
    from .. import engine
    from ..federation.checkpoint import CheckpointError
    from ..reporting import outputs

    try:
        began = time.perf_counter()
        with _round_log(cfg.fed.rounds, args.verbose) as log:
            result = engine.run(
                cfg, log=log, export_dir=staging / "adapters", checkpoint_dir=staging / "checkpoint",
                export_parts=args.export == "all",
            )
        summary = outputs.summary(cfg.to_dict(), result)
        summary["timing"]["wall_s"] = time.perf_counter() - began
        outputs.write_outputs(staging, summary, result.rounds)
        _publish(staging, out)
    except BaseException as err:
        _keep_if_resumable(staging, out, hint=not isinstance(err, CheckpointError))
        if isinstance(err, KeyboardInterrupt) and not (staging / "checkpoint").is_dir():
            print("potara: interrupted before the first round ended; nothing was kept", file=sys.stderr)
        raise
    print(outputs.table(summary))
    print(one_seed_note(cfg))
    plots = ", ".join(sorted(p.name for p in out.glob("*.png")))
    print(f"\nwrote {out}/summary.json, rounds.jsonl, {plots}, adapters/")
    return 0


def one_seed_note(cfg: config_mod.RunConfig) -> str:
    """The line under a run's table: what one seed can show, and where the comparison over seeds is."""
    default = {**config_mod.RunConfig().to_dict(), "seed": cfg.seed, "threads": cfg.threads}
    if cfg.to_dict() != default:
        return f"{ONE_SEED} `potara bench` compares methods over seeds, with intervals."
    return (
        f"{ONE_SEED} The report suite compares these methods over 10 seeds of this setting, with corrected "
        "intervals: `make bench`, results in docs/benchmarks.md#results."
    )


def _keep_if_resumable(partial: Path, out: Path, hint: bool) -> None:
    """After a failure, keep a partial run that has a checkpoint (and say how to resume it); drop any other."""
    from ..federation.checkpoint import rounds

    if rounds(partial / "checkpoint"):
        if hint:
            print(f"potara: the run stopped; continue it with: potara run --resume {out}", file=sys.stderr)
    else:
        shutil.rmtree(partial, ignore_errors=True)


@contextmanager
def _round_log(rounds: int, verbose: bool) -> Iterator[Callable[[dict], None]]:
    """Each round's record: a line of its own with ``-v``, else the text of one bar over the rounds."""
    if verbose:
        yield lambda r: tqdm.write(f"round {r['round']}: {_round_text(r)}, bytes up {r['bytes_up']:,} down {r['bytes_down']:,}")
        return
    bars: list[tqdm] = []  # opened at the first round's end: a run that fails before it leaves no bar

    def show(record: dict) -> None:
        text = f"fedit rounds {record['round']}/{rounds}: {_round_text(record)}"
        if not bars:
            bars.append(tqdm(total=rounds, desc=text, bar_format=ROUNDS_BAR))
        bar = bars[0]
        bar.set_description_str(text, refresh=False)
        bar.update(record["round"] - bar.n)
        bar.refresh()
        if bar.n >= rounds:
            bar.close()  # the personalization that follows is not a round

    try:
        yield show
    finally:
        for bar in bars:
            bar.close()


def _round_text(record: dict) -> str:
    """FedIT's mean accuracy and train loss after a round, and the methods personalized at that round."""
    acc = record["fedit_mean_acc"]
    extra = "".join(f" {k}={v:.3f}" for k, v in record.get("methods", {}).items())
    return f"fedit acc {'–' if acc is None else f'{acc:.3f}'}, train loss {record['train_loss']:.3f}{extra}"


def cmd_profile(args: argparse.Namespace) -> int:
    """Print the profile of the federation ``--config`` makes: its data only, partitioned as a run would."""
    cfg = config_mod.load(args.config, args.set)
    check_source(cfg.data)
    _terminal(args)
    from ..data.profile import profile, profile_table
    from ..engine import load_federated_data

    prof = profile(load_federated_data(cfg))
    if not prof:
        raise config_mod.ConfigError("potara profile reads class labels; this data has none (a causal LM's prompts)")
    print(profile_table(prof))
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    _terminal(args)
    from .merge import merge_saved

    out = Path(args.out)
    staging = _staging(out)
    try:
        lam = merge_saved(
            Path(args.federated), Path(args.local), Path(args.data), staging / "adapter",
            num_labels=args.num_labels, max_length=args.max_length,
        )
        (staging / "lambda.json").write_text(json.dumps(lam, indent=2))
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for reason in lam["warnings"]:
        print(f"potara: warning: {reason}", file=sys.stderr)
    print(f"λ (federated weight) = {lam['lambda']:.3f}; merged adapter in {out}/adapter")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .predict import predict, texts_of

    adapter = Path(args.adapter)
    texts, truth = (args.text, None) if args.text else texts_of(Path(args.data), args.text_column)
    _terminal(args)
    labels = predict(adapter, texts, args.max_length)
    if args.text:
        print("\n".join(labels))
        return 0
    print("\n".join(f"{label}\t{text}" for label, text in zip(labels, texts)))
    if truth is not None:
        hits = sum(p == t for p, t in zip(labels, truth))
        print(f"accuracy {hits / len(truth):.3f} ({hits}/{len(truth)})", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _terminal(args)
    from ..bench.report import report_from_units, write_report
    from ..bench.suite import load_suite, run_suite

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    whole = load_suite(args.suite).narrowed(methods=methods)  # the report's: every setting and seed finished
    out = Path(args.out or f"runs/bench-{whole.name}")
    if args.report_from:
        print(report_from_units(Path(args.report_from), whole, out))
        print(f"wrote {out}/report.md, {out}/plots/ from the records in {args.report_from}")
        return 0
    if args.report_only:
        if not (out / "cells").is_dir():
            raise FileNotFoundError(f"no bench cells in '{out}' (looked for '{out / 'cells'}')")
    else:
        ran, skipped, failed = run_suite(whole.narrowed(args.seeds, args.only), out, args.set)
        print(f"{ran} cell(s) run, {skipped} already done, {len(failed)} failed")
    print(write_report(out, whole, args.set))
    print(f"wrote {out}/report.md, {out}/plots/")
    if not args.report_only and failed:
        for cell, error in failed.items():
            print(f"potara: error: cell {cell} failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
