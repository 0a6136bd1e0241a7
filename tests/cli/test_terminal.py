"""The terminal of ``potara``: progress bars and the table by default, our logs and third-party warnings with
``-v``; the noise is silenced by the command only, never by importing the library."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import potara
from potara.cli.quiet import quiet

SRC = str(Path(potara.__file__).parents[1])
NOISE = ("WARNING", "Warning", "will NOT be used", "Loading weights", "not sharded", "Generating train split")


def terminal(*args: str) -> str:
    """stdout and stderr of ``python -m potara.cli ARGS`` in a fresh process (so no test's filters apply)."""
    done = subprocess.run([sys.executable, "-m", "potara.cli", *args], capture_output=True, text=True,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}, timeout=1200)
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_run_shows_bars_and_the_table_and_more_with_verbose(tiny_overrides, tmp_path):
    sets = [x for o in tiny_overrides + ["data.classes_per_client=1", "methods=local,fedit,oracle_val"]
            for x in ("--set", o)]  # one class per client: flwr-datasets warns that the others go unused
    shown = terminal("run", "--out", str(tmp_path / "quiet"), *sets)
    assert [noise for noise in NOISE if noise in shown] == []
    assert "fedit rounds 2/2" in shown and "| oracle_val (bound) |" in shown and "round 1:" not in shown
    loud = terminal("run", "-v", "--out", str(tmp_path / "loud"), *sets)
    for line in ("will NOT be used", "FutureWarning", "Loading weights", "round 1: fedit acc"):
        assert line in loud


def test_only_the_command_silences():
    """No module but ``cli/quiet.py`` touches warning filters, log levels or progress bars."""
    muting = re.compile(r"filterwarnings|simplefilter|set_verbosity|disable_progress_bar|setLevel\(|logging\.disable")
    loud = [str(p) for p in Path(SRC, "potara").rglob("*.py") if p.name != "quiet.py" and muting.search(p.read_text())]
    assert loud == []


def test_quiet_drops_the_dependencies_noise_and_keeps_the_users(restore_quiet, capfd):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet()
        warn("Classes: [1, 3] will NOT be used due to the chosen configuration.", UserWarning,
             "flwr_datasets.partitioner.pathological_partitioner")
        warn("`is_gradient_checkpointing` is deprecated", FutureWarning, "transformers.modeling_utils")
        warn("my own deprecation", FutureWarning, "mycode")
    assert [str(w.message) for w in seen] == ["my own deprecation"]
    import transformers.utils.logging as t

    assert t.get_verbosity() == t.ERROR and not t.is_progress_bar_enabled()
    from potara.reporting.privacy import epsilon  # dp-accounting warns per RDP order it excludes (dozens at z = 0.5)

    capfd.readouterr()
    assert epsilon(0.5, 0.1, 20, 0.01) == pytest.approx(9.37, abs=0.01)
    assert "converge" not in capfd.readouterr().err


def warn(message: str, category: type[Warning], module: str) -> None:
    warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)


@pytest.fixture
def restore_quiet():
    """Undo what :func:`quiet` sets outside the warnings filters (those ``catch_warnings`` restores)."""
    import datasets
    import huggingface_hub.utils
    import transformers.utils.logging as t

    verbosity, bars, absl = t.get_verbosity(), t.is_progress_bar_enabled(), logging.getLogger("absl").level
    yield
    logging.getLogger("absl").setLevel(absl)
    t.set_verbosity(verbosity)
    t.enable_progress_bar() if bars else t.disable_progress_bar()
    datasets.enable_progress_bars()
    huggingface_hub.utils.enable_progress_bars()
