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
    "dp-clipping": "auto",  # with privacy.noise_multiplier > 0: where updates are clipped (auto: client under secagg)
    "secagg": False,  # train rounds aggregate through Flower's SecAgg+ (the server sees only the sum)
    "secagg-num-shares": 1.0,  # key shares per client: an integer > 2, or a fraction of the sampled clients
    "secagg-reconstruction-threshold": 0.5,  # shares to rebuild a key: an integer, or a fraction of num-shares
    "secagg-clipping-range": 8.0,  # SecAgg+ quantizes each uploaded value within ± this (beyond: refused)
    "secagg-quantization-range": 2**22,  # quantization levels over [-range, range]: the aggregate's resolution
}
CLIPPING = ("auto", "server", "client")


@dataclass(frozen=True)
class SecAgg:
    """Flower's SecAgg+ settings (``SecAggPlusWorkflow``'s arguments of the same names)."""

    num_shares: int | float
    reconstruction_threshold: int | float
    clipping_range: float
    quantization_range: int

    def shares_for(self, sampled: int) -> int:
        """The number of shares with ``sampled`` clients, as ``SecAggPlusWorkflow.setup_stage`` computes it."""
        if isinstance(self.num_shares, int):
            return self.num_shares
        shares = round(self.num_shares * sampled)
        if shares < sampled and shares % 2 == 0:
            shares += 1
        return sampled if shares <= 2 else shares

    def threshold_for(self, sampled: int) -> int:
        """The reconstruction threshold with ``sampled`` clients, as the workflow computes it."""
        if isinstance(self.reconstruction_threshold, int):
            return self.reconstruction_threshold
        return max(2, round(self.reconstruction_threshold * self.shares_for(sampled)))


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
    dp_clipping: str = "auto"
    secagg: SecAgg | None = None

    @property
    def expected_nodes(self) -> int:
        return self.min_available_nodes or self.run.data.num_clients

    @property
    def client_clipping(self) -> bool:
        """Whether DP clips on the clients (``fixedclipping_mod``) rather than on the server."""
        return self.run.privacy.noise_multiplier > 0 and (
            self.dp_clipping == "client" or (self.dp_clipping == "auto" and self.secagg is not None)
        )


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
        dp_clipping=str(values["dp-clipping"]),
        secagg=_secagg(values),
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


def _secagg(values: Mapping[str, Any]) -> SecAgg | None:
    """The SecAgg+ settings when ``secagg`` is true; each bad value a one-line error naming its key."""
    if not isinstance(values["secagg"], bool):
        raise ConfigError(f"secagg must be true or false, got {config_mod.shown(values['secagg'])}")
    if not values["secagg"]:
        return None
    shares, threshold = values["secagg-num-shares"], values["secagg-reconstruction-threshold"]
    if not _share_count(shares) or (isinstance(shares, int) and shares <= 2):
        raise ConfigError(f"secagg-num-shares must be an integer > 2 or a fraction in (0, 1], got {config_mod.shown(shares)}")
    if not _share_count(threshold) or (isinstance(threshold, int) and isinstance(shares, int) and threshold >= shares):
        raise ConfigError(
            f"secagg-reconstruction-threshold must be an integer below secagg-num-shares or a fraction in (0, 1], "
            f"got {config_mod.shown(threshold)}"
        )
    clip, levels = values["secagg-clipping-range"], values["secagg-quantization-range"]
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < math.inf:
        raise ConfigError(f"secagg-clipping-range must be a finite number > 0, got {config_mod.shown(clip)}")
    if isinstance(levels, bool) or not isinstance(levels, int) or not 1 < levels < 2**32:
        raise ConfigError(f"secagg-quantization-range must be an integer in (1, 2**32), got {config_mod.shown(levels)}")
    return SecAgg(shares, threshold, float(clip), levels)


def _share_count(value: Any) -> bool:
    """An integer >= 1 or a fraction in (0, 1] (Flower's two ways of giving a count of shares)."""
    if isinstance(value, bool):
        return False
    return (isinstance(value, int) and value >= 1) or (isinstance(value, float) and 0 < value <= 1)


def _check(settings: FlowerSettings) -> None:
    if settings.min_train_nodes < 1:
        raise ConfigError(f"min-train-nodes must be >= 1, got {settings.min_train_nodes}")
    sampled = config_mod.sampled_clients(settings.run)
    if settings.min_train_nodes > sampled:
        raise ConfigError(
            f"min-train-nodes={settings.min_train_nodes} exceeds the {sampled} clients sampled a round "
            "(fed.fraction × data.num_clients): no round could complete; lower it or sample more clients"
        )
    for key, seconds in (("round-timeout", settings.round_timeout), ("wait-nodes-timeout", settings.wait_nodes_timeout)):
        if seconds <= 0:
            raise ConfigError(f"{key} must be > 0 seconds, got {seconds}")
    if settings.evaluate_every < 0:
        raise ConfigError(f"evaluate-every must be >= 0, got {settings.evaluate_every}")
    own = [m.name for m in resolve(settings.run) if m.federation is not FEDIT]
    if own:
        raise ConfigError(
            f"method(s) {', '.join(own)} need their own federation, which only the embedded engine runs: "
            "use `potara run`, or drop them from methods"
        )
    _check_private(settings)
    run = settings.run
    if run.data.eval_clients is not None:
        raise ConfigError(
            "data.eval_clients (score a drawn subset of the clients) is the embedded engine's: in the Flower app every "
            "node personalizes itself; set data.eval_clients=null (or use `potara run`)"
        )
    if run.fed.payload_dtype != "fp32" and run.privacy.noise_multiplier > 0:
        raise ConfigError(
            f"fed.payload_dtype={run.fed.payload_dtype} cannot combine with privacy.noise_multiplier > 0 in the Flower "
            "app: Flower's DP wrappers clip and noise fp32 arrays of the whole adapter; set fed.payload_dtype=fp32 "
            "(or use `potara run`)"
        )


def _check_private(settings: FlowerSettings) -> None:
    """DP and SecAgg+ settings that Flower cannot combine: one line each, naming the key to change."""
    if settings.dp_clipping not in CLIPPING:
        raise ConfigError(f"dp-clipping must be one of {', '.join(CLIPPING)}, got {config_mod.shown(settings.dp_clipping)}")
    run, secagg = settings.run, settings.secagg
    if settings.dp_clipping == "client" and secagg is None and run.privacy.noise_multiplier > 0:
        raise ConfigError("dp-clipping=client needs secagg=true (the clients clip inside the SecAgg+ mods); use dp-clipping=server")
    if secagg is None:
        return
    if run.fed.payload_dtype != "fp32":
        raise ConfigError(
            f"fed.payload_dtype={run.fed.payload_dtype} cannot combine with secagg: SecAgg+ quantizes the uploads itself "
            "(secagg-quantization-range); set fed.payload_dtype=fp32"
        )
    if run.fed.aggregation != "factors":
        raise ConfigError(
            f"fed.aggregation={run.fed.aggregation} cannot combine with secagg: SecAgg+ sums the uploads, and the product "
            "average needs each client's B·A; set fed.aggregation=factors"
        )
    if run.privacy.noise_multiplier > 0 and settings.dp_clipping == "server":
        raise ConfigError(
            "dp-clipping=server cannot combine with secagg: the server never sees an individual update to clip; "
            "use dp-clipping=client (or auto)"
        )
    if run.privacy.noise_multiplier > 0 and run.privacy.adaptive:
        raise ConfigError(
            "privacy.adaptive=true cannot combine with secagg: Flower's client-side adaptive clipping sends each "
            "client's clipped bit in the clear, which SecAgg+ is there to hide; set privacy.adaptive=false"
        )
    sampled = config_mod.sampled_clients(run)
    if sampled < 3:
        raise ConfigError(f"secagg needs at least 3 sampled clients a round, got {sampled} (fed.fraction × data.num_clients)")
    threshold = secagg.threshold_for(sampled)
    if threshold > sampled:
        raise ConfigError(
            f"secagg-reconstruction-threshold={threshold} exceeds the {sampled} clients sampled a round: no round "
            "could complete; lower it or sample more clients"
        )
