"""Potara: personalized federated LoRA with closed-form federated-local merging.

The public API: ``potara.run`` (the embedded engine: federate, then personalize with every method),
``potara.config`` (``RunConfig``, ``load``, ``from_dict``) and ``potara.merge`` (the merge math: task vectors,
the exact merge, Fisher, closed-form λ). ``import potara`` loads no torch: ``run`` and ``merge`` are imported on
first use, so that the torch-free parts (``potara.config``, ``potara.reporting``, ``potara.flower.certs``) stay so.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import config
from .config import RunConfig

__version__ = "0.1.0"
__all__ = ["RunConfig", "config", "merge", "run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from .engine import run

        return run
    if name == "merge":
        return importlib.import_module(f"{__name__}.merge")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
