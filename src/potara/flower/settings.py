"""The Flower run config (flat TOML keys) read into the project's ``RunConfig`` plus Flower-only settings."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .. import config as config_mod
from ..config import ConfigError, RunConfig
from ..federation.recipes import FEDIT
from ..methods import resolve

#: Flower run-config keys (``[tool.flwr.app.config]`` / ``flwr run --run-config``) and their defaults.
DEFAULTS: dict[str, Any] = {
    "config-file": "",  # a Potara YAML/JSON config ("" = defaults)
    "overrides": "",  # space-separated key=value Potara overrides, as ``potara run --set``
    "out-dir": "",  # where the ServerApp writes summary.json etc. ("" = runs/flower-<run id>)
    "min-train-nodes": 1,  # fewer valid train replies than this aborts the run
    "min-available-nodes": 0,  # nodes to wait for before round 1 (0 = data.num_clients)
    "wait-nodes-timeout": 120.0,  # seconds to wait for those nodes
    "round-timeout": 600.0,  # seconds to wait for the replies of one round
    "evaluate-every": 1,  # FedIT accuracy on the nodes every k rounds (0 = never)
}


@dataclass(frozen=True)
class FlowerSettings:
    """Everything the Flower apps need: the Potara config and how the federation is driven."""

    run: RunConfig
    out_dir: str = ""
    min_train_nodes: int = 1
    min_available_nodes: int = 0
    wait_nodes_timeout: float = 120.0
    round_timeout: float = 600.0
    evaluate_every: int = 1

    @property
    def expected_nodes(self) -> int:
        return self.min_available_nodes or self.run.data.num_clients


def from_run_config(
    run_config: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> FlowerSettings:
    """Settings from Flower's ``context.run_config`` over ``defaults`` (e.g. the simulation's)."""
    values = {**DEFAULTS, **(defaults or {}), **dict(run_config)}
    unknown = sorted((k for k in values if k not in DEFAULTS), key=str)
    if unknown:
        raise ConfigError(
            f"unknown Flower setting {unknown[0]!r}; valid: {', '.join(sorted(DEFAULTS))}"
        )
    try:
        overrides = shlex.split(str(values["overrides"]))
    except ValueError as err:  # an unclosed quote
        raise ConfigError(f"overrides {config_mod.shown(values['overrides'])} do not split into key=value words: {err}") from err
    run = config_mod.load(str(values["config-file"]) or None, overrides)
    settings = FlowerSettings(
        run=run,
        out_dir=str(values["out-dir"]),
        min_train_nodes=_integer(values, "min-train-nodes"),
        min_available_nodes=_integer(values, "min-available-nodes"),
        wait_nodes_timeout=_seconds(values, "wait-nodes-timeout"),
        round_timeout=_seconds(values, "round-timeout"),
        evaluate_every=_integer(values, "evaluate-every"),
    )
    _check(settings)
    return settings


def _integer(values: Mapping[str, Any], key: str) -> int:
    value = values[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, got {config_mod.shown(value)}")
    return value


def _seconds(values: Mapping[str, Any], key: str) -> float:
    value = values[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number of seconds, got {config_mod.shown(value)}")
    return float(value)


def _check(settings: FlowerSettings) -> None:
    if settings.min_train_nodes < 1:
        raise ConfigError("min-train-nodes must be >= 1")
    if settings.round_timeout <= 0 or settings.wait_nodes_timeout <= 0:
        raise ConfigError("round-timeout and wait-nodes-timeout must be > 0 seconds")
    if settings.evaluate_every < 0:
        raise ConfigError("evaluate-every must be >= 0")
    own = [m.name for m in resolve(settings.run) if m.federation is not FEDIT]
    if own:
        raise ConfigError(
            f"method(s) {', '.join(own)} need their own federation, which only the embedded engine runs: "
            "use `potara run`, or drop them from methods"
        )
    if settings.run.fed.payload_dtype != "fp32":
        raise ConfigError(
            f"fed.payload_dtype={settings.run.fed.payload_dtype} is not supported by the Flower app, which sends fp32 "
            "ArrayRecords only (Flower's arrays go through NumPy, which has no bfloat16); use fp32 here"
        )
    if settings.run.privacy.noise_multiplier > 0:
        raise ConfigError(
            f"privacy.noise_multiplier={settings.run.privacy.noise_multiplier} is not supported by the Flower app yet "
            "(client-level DP runs in the embedded engine only): use `potara run`, or set privacy.noise_multiplier=0"
        )
