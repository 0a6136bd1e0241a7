"""A run killed with SIGKILL mid-round and resumed ends exactly like the uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import without_seconds
from safetensors.torch import load_file

from potara.cli.main import main
from potara.federation import checkpoint

ROUNDS = 8


@pytest.fixture
def overrides(tiny_overrides) -> list[str]:
    """The tiny run, with more rounds (so a kill lands mid-run), one thread and a personalization every 3 rounds."""
    extra = [f"fed.rounds={ROUNDS}", "fed.local_epochs=3", "fed.eval_every=3", "threads=1",
             "methods=local,fedit,fedit_ft,potara"]
    return tiny_overrides + extra


def cli_args(out: Path, overrides: list[str]) -> list[str]:
    return ["run", "--out", str(out)] + [x for o in overrides for x in ("--set", o)]


def kill_after_first_round(out: Path, overrides: list[str]) -> int:
    """Start ``potara run`` in a subprocess, SIGKILL it once round 1 is checkpointed; the round it died in."""
    partial = out.parent / f".{out.name}.partial"
    proc = subprocess.Popen(
        [sys.executable, "-m", "potara.cli", *cli_args(out, overrides)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not checkpoint.rounds(partial / "checkpoint") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return checkpoint.load(partial / "checkpoint").round


def outputs(out: Path) -> tuple[dict, list[dict], dict]:
    summary = json.loads((out / "summary.json").read_text())
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    adapters = {p.parent.name: load_file(p) for p in sorted((out / "adapters").glob("*/adapter_model.safetensors"))}
    return summary, rounds, adapters


@pytest.mark.slow
def test_sigkill_mid_round_then_resume_equals_the_uninterrupted_run(overrides, tmp_path, capsys):
    assert main(cli_args(tmp_path / "straight", overrides)) == 0
    resumed = tmp_path / "resumed"
    done = kill_after_first_round(resumed, overrides)
    assert 1 <= done < ROUNDS and not resumed.exists()
    assert main(["run", "--resume", str(resumed)]) == 0
    assert not (tmp_path / ".resumed.partial").exists()
    (s1, r1, a1), (s2, r2, a2) = outputs(tmp_path / "straight"), outputs(resumed)
    assert without_seconds(s1["methods"]) == without_seconds(s2["methods"]) and r1 == r2 and len(r2) == ROUNDS
    assert sorted(a1) == sorted(a2) == ["client_00", "client_01", "client_02"]
    for client, tensors in a1.items():
        assert all((tensors[k] - a2[client][k]).abs().max() <= 1e-6 for k in tensors)
    final = [checkpoint.load(p / "checkpoint").adapter for p in (tmp_path / "straight", resumed)]
    assert all(final[0][k].equal(final[1][k]) for k in final[0])


def test_resume_needs_an_interrupted_run(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no interrupted run for" in capsys.readouterr().err
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "summary.json").write_text("{}")
    assert main(["run", "--resume", str(tmp_path / "done")]) == 2
    assert "already complete" in capsys.readouterr().err


def test_resume_takes_no_new_config_and_a_new_run_does_not_clobber_a_partial_one(overrides, tmp_path, capsys):
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    assert main(["run", "--resume", str(tmp_path / "out"), "--set", "seed=1"]) == 2
    assert "drop --config/--set/--out" in capsys.readouterr().err
    assert main(cli_args(tmp_path / "out", overrides)) == 2
    assert "continue it with --resume" in capsys.readouterr().err and partial.is_dir()


def test_corrupted_saved_config_is_named(tmp_path, capsys):
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "config.json").write_text('{"seed": 0, "fed": {"rou')
    assert main(["run", "--resume", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"saved config '{partial / 'config.json'}'" in err and err.count("\n") == 1


def test_ctrl_c_prints_the_resume_line_and_no_traceback(overrides, tmp_path):
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    endless = [*overrides, "fed.rounds=200"]  # still running whenever the signal lands (a short run could finish first)
    proc = subprocess.Popen(
        [sys.executable, "-m", "potara.cli", *cli_args(out, endless)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        # a shell's background job ignores SIGINT and its children inherit that: give the run the default, as a terminal would
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not checkpoint.rounds(partial / "checkpoint") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.rstrip().endswith(f"potara: the run stopped; continue it with: potara run --resume {out}")
