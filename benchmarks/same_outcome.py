"""Whether two runs had the same outcome: their ``summary.json`` files equal but for measured time.

    .venv/bin/python benchmarks/same_outcome.py runs/before/summary.json runs/after/summary.json

Drops ``timing`` and every ``seconds`` entry (times differ between equal runs), then compares the rest exactly:
every accuracy, λ, byte count, example pass and paired difference. Prints the paths where the two differ and
exits 1 if any, else prints ``same outcome`` and exits 0. A refactoring that changes no behaviour leaves the
default run's summary the same.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

MEASURED_TIME = ("timing", "seconds")


def outcome(value: Any) -> Any:
    """``value`` without its measured times."""
    if isinstance(value, dict):
        return {k: outcome(v) for k, v in value.items() if k not in MEASURED_TIME}
    if isinstance(value, list):
        return [outcome(v) for v in value]
    return value


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths at which ``a`` and ``b`` differ, with both values (NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in {'first' if k in a else 'second'}" for k in sorted(set(a) ^ set(b))]
        for k in (k for k in a if k in b):
            out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items against {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return [] if a == b or both_nan else [f"{path}: {a!r} against {b!r}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="a run's summary.json")
    parser.add_argument("second", type=Path, help="another run's summary.json")
    args = parser.parse_args(argv)
    first, second = (outcome(json.loads(p.read_text())) for p in (args.first, args.second))
    found = differences(first, second)
    for line in found:
        print(line)
    print(f"{len(found)} difference(s)" if found else "same outcome")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
