"""benchmarks/flower_compare.py's helpers: the process-tree sampler, the agreement check, the table."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "flower_compare", Path(__file__).parents[2] / "benchmarks" / "flower_compare.py"
)
fc = importlib.util.module_from_spec(SPEC)
sys.modules["flower_compare"] = fc  # dataclasses look their module up
SPEC.loader.exec_module(fc)

# A parent that starts a grandchild (left running, orphaned), holds ~80 MB for a second, then exits.
PARENT = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
block = bytearray(80_000_000)
time.sleep(1.5)
"""


def test_the_sampler_sums_the_tree_and_reaps_what_is_left():
    proc = subprocess.Popen([sys.executable, "-c", PARENT])
    with fc.TreeSampler(proc.pid, interval=0.05) as sampler:
        proc.wait(30)
    assert sampler.peak_procs == 2 and len(sampler.seen) == 2
    assert sampler.peak_rss > 80e6 and 0 < sampler.peak_pss <= sampler.peak_rss
    assert sampler.cpu_s > 0 and sum(n for _, n, _ in sampler.cpu_by_name()) == 2
    [orphan] = [p for p in sampler.seen.values() if p.pid != proc.pid]
    assert sampler.reap() == 1
    deadline = time.monotonic() + 5
    while (now := fc.read_proc(orphan.pid)) is not None and now.start == orphan.start and time.monotonic() < deadline:
        time.sleep(0.05)  # killed, reaped by init
    assert sampler.reap() == 0


def test_tree_keeps_the_root_and_its_descendants_only():
    procs = [fc.Proc(1, 0, 0, 0), fc.Proc(10, 1, 0, 0), fc.Proc(11, 10, 0, 0), fc.Proc(12, 11, 0, 0),
             fc.Proc(20, 1, 0, 0)]
    assert sorted(p.pid for p in fc.tree(10, procs)) == [10, 11, 12]


def test_differences_cover_every_method_client_and_module():
    ref = {"potara": [{"client": "a", "acc": 0.5, "lambda": {"q": 0.2, "v": 0.4}}],
           "fedit": [{"client": "a", "acc": 0.5, "lambda": None}]}
    mine = {"potara": [{"client": "a", "acc": 0.5, "lambda": {"q": 0.2, "v": 0.1}}],
            "fedit": [{"client": "a", "acc": 0.75, "lambda": None}]}
    assert fc.max_difference(mine, ref, "acc") == 0.25
    assert fc.max_difference(mine, ref, "lambda") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="client b"):
        fc.max_difference({"potara": [{"client": "b", "acc": 0.5}], "fedit": mine["fedit"]}, ref, "acc")


def test_the_table_has_a_cell_per_column():
    row = {"engine": "embedded", "round_s": [3.0, 2.0, 2.5], "personalize_s": 4.0, "wall_s": 20.0, "cpu_s": 19.0,
           "peak_rss": 9e8, "peak_pss": 8e8, "peak_procs": 1, "procs": 1, "load_before": 1.5}
    lines = fc.table([row, {**row, "engine": "simulation", "d_adapter": 1e-7}]).splitlines()
    assert len({line.count("|") for line in lines}) == 1
    assert "| embedded | 3.0 | 2.2 | 4.0 | 20.0 | 8.5 | 19 | 900 | 800 | 1 / 1 |" in lines[2]


def test_cpu_lines_show_the_top_names_then_the_rest():
    by_name = [("flwr-clientapp", 30, 500.0), ("python", 2, 40.0), ("bash", 3, 0.4)]
    assert fc.cpu_lines(by_name, top=2) == "flwr-clientapp 500 (30), python 40 (2), other 0 (3)"


def test_the_secure_deployment_runs_with_credentials_and_secagg_and_dp_reaches_every_engine(tmp_path):
    args = fc.parse(["--clients", "3", "--dp"])
    over = fc.overrides(args, "offline:minilm")
    assert "privacy.noise_multiplier=1e-9" in over and "privacy.clip_norm=0.05" in over
    assert not any(o.startswith("privacy.") for o in fc.overrides(fc.parse([]), "offline:minilm"))
    secure = fc.engine_command("deployment-secure", args, over, tmp_path / "secure")
    plain = fc.engine_command("deployment", args, over, tmp_path / "plain")
    creds = Path(secure[secure.index("-c") + 1])
    assert (creds / "ca.crt").exists() and "secagg=true" in secure
    assert "-c" not in plain and "secagg=true" not in plain
