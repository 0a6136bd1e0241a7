"""The public API at ``potara``, and the parts that must load without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

import potara
from potara import config, engine
from potara.merge import taskvec


def test_run_config_and_merge_are_reexported():
    assert potara.run is engine.run
    assert potara.config is config and potara.RunConfig is config.RunConfig
    assert potara.merge.merge is taskvec.merge
    with pytest.raises(AttributeError):
        potara.no_such_name  # noqa: B018


@pytest.mark.parametrize("module", ["potara", "potara.config", "potara.reporting.outputs", "potara.flower.certs"])
def test_loads_without_torch_or_flower(module):
    probe = f"import sys, {module}; print(sorted({{'torch', 'flwr'}} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
