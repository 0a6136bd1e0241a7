"""Fixtures of the bench tests: ``benchmarks/choose.py`` loaded as a module (it is a script, not part of potara)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def choose():
    spec = importlib.util.spec_from_file_location("choose", Path(__file__).parents[2] / "benchmarks" / "choose.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["choose"] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module
