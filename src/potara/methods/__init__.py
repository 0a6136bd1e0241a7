"""The methods, by the names used in configs and outputs. One file per method."""

from __future__ import annotations

from ..config import ESTIMATORS, ConfigError, RunConfig
from . import apfl, ditto, ditto_posthoc, feddpa, fedit, fedit_ft, fedsa_lora, ffa_lora, fixed, local, oracle, potara
from .base import Choice, Method

_FIXED_NAMES = {
    "local": local.build,
    "fedit": fedit.build,
    "fedit_ft": fedit_ft.build,
    "fixed": fixed.build,
    "oracle_val": oracle.build_on("val"),
    "oracle_test": oracle.build_on("test"),
    "potara_module": potara.build_module,
    "ffa_lora": ffa_lora.build,
    "fedsa_lora": fedsa_lora.build,
    "ditto": ditto.build,
    "ditto_posthoc": ditto_posthoc.build,
    "apfl": apfl.build,
    "feddpa": feddpa.build,
}


def available(cfg: RunConfig) -> dict:
    """Every method name valid under ``cfg``: ``potara`` is the configured estimator, ``potara_<name>`` any."""
    builders = dict(_FIXED_NAMES)
    builders["potara"] = potara.build_estimator(cfg.potara.estimator, "potara")
    for est in ESTIMATORS:
        builders[f"potara_{est}"] = potara.build_estimator(est, f"potara_{est}")
    return builders


def resolve(cfg: RunConfig) -> list[Method]:
    """The configured methods; an unknown name in ``methods`` or ``fed.eval_methods`` is an error."""
    builders = available(cfg)
    unknown = [m for m in cfg.methods if m not in builders]
    if unknown:
        raise ConfigError(f"unknown method '{unknown[0]}'; available: {', '.join(sorted(builders))}")
    unknown = [m for m in cfg.fed.eval_methods or [] if m not in builders]
    if unknown:
        raise ConfigError(f"fed.eval_methods names unknown method '{unknown[0]}'; available: {', '.join(sorted(builders))}")
    return [builders[m](cfg) for m in cfg.methods]


__all__ = ["Choice", "Method", "available", "resolve"]
