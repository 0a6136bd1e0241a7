"""``potara run`` and ``potara merge``: the command line over the engine and the merge."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tqdm.auto import tqdm

from . import config as config_mod


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (config_mod.ConfigError, ValueError, FileNotFoundError, KeyError, OSError) as err:
        print(f"potara: error: {err}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="potara", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="federate, personalize and compare methods (default: offline MiniLM + fortunes)")
    run.add_argument("--config", help="YAML/JSON config file (see configs/)")
    run.add_argument("--out", help="output folder (default runs/<timestamp>); must not exist or be empty")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    run.set_defaults(func=cmd_run)
    merge = sub.add_parser("merge", help="merge a federated and a local PEFT adapter for one client's data")
    merge.add_argument("--federated", required=True, help="federated adapter directory (PEFT)")
    merge.add_argument("--local", required=True, help="local adapter directory (PEFT)")
    merge.add_argument("--data", required=True, help="the client's held-out data: csv/json/parquet with text,label")
    merge.add_argument("--out", required=True, help="folder for the merged PEFT adapter and lambda.json")
    merge.add_argument("--num-labels", type=int, default=None, help="classifier size (default: from the adapter)")
    merge.add_argument("--max-length", type=int, default=48)
    merge.set_defaults(func=cmd_merge)
    return parser


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


def cmd_run(args: argparse.Namespace) -> int:
    from . import engine, reporting

    cfg = config_mod.load(args.config, args.set)
    from .methods import resolve

    resolve(cfg)
    out = Path(args.out or f"runs/{time.strftime('%Y%m%d-%H%M%S')}")
    staging = _staging(out)
    try:
        began = time.perf_counter()
        result = engine.run(cfg, log=_print_round, export_dir=staging / "adapters")
        summary = reporting.summary(cfg.to_dict(), result)
        summary["timing"]["wall_s"] = time.perf_counter() - began
        reporting.write_outputs(staging, summary, result.rounds)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    print(reporting.table(summary))
    print(f"\nwrote {out}/summary.json, rounds.jsonl, accuracy_vs_bytes.png, lambda_vs_train_size.png, adapters/")
    return 0


def _print_round(record: dict) -> None:
    extra = "".join(f" {k}={v:.3f}" for k, v in record.get("methods", {}).items())
    tqdm.write(
        f"round {record['round']}: fedit acc {record['fedit_mean_acc']:.3f}, train loss {record['train_loss']:.3f}, "
        f"bytes up {record['bytes_up']:,} down {record['bytes_down']:,}{extra}"
    )


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge_cli import merge_saved

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
    print(f"λ (federated weight) = {lam['lambda']:.3f}; merged adapter in {out}/adapter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
