"""The methods, by the names used in configs and outputs. One file per method."""

from __future__ import annotations

import copy
import dataclasses

from ..config import ConfigError, RunConfig, apply_override, from_dict
from ..federation.recipes import FEDIT
from ..personalize.estimators import ESTIMATORS
from . import (
    apfl,
    apfl_posthoc,
    ditto,
    ditto_posthoc,
    feddpa,
    fedit,
    fedit_ft,
    fedit_ft_es,
    fedit_ft_matched,
    fedsa_lora,
    ffa_lora,
    fixed,
    local,
    oracle,
    potara,
)
from .base import Choice, Method
from .prior_corrected import with_prior_correction

VARIANT = "@"
VARIANT_KEYS = (
    "peers.", "potara.estimator", "potara.damping", "potara.grid", "potara.paper_", "potara.merge_space", "local.init",
    "potara.prior_correction", "potara.granularity", "potara.safety", "potara.spread_scale",
)
POST_HOC_KEYS = ("potara.prior_correction",)  # change the chosen model's logits only, never what a federation trains

_FIXED_NAMES = {
    "local": local.build,
    "fedit": fedit.build,
    "fedit_ft": fedit_ft.build,
    "fedit_ft_matched": fedit_ft_matched.build,
    "fedit_ft_es": fedit_ft_es.build,
    "fixed": fixed.build,
    "oracle_val": oracle.build_on("val"),
    "oracle_test": oracle.build_on("test"),
    "oracle_split": oracle.build_split,
    "potara_module": potara.build_module,
    "ffa_lora": ffa_lora.build,
    "fedsa_lora": fedsa_lora.build,
    "ditto": ditto.build,
    "ditto_posthoc": ditto_posthoc.build,
    "apfl": apfl.build,
    "apfl_posthoc": apfl_posthoc.build,
    "feddpa": feddpa.build,
}


def available(cfg: RunConfig) -> dict:
    """Every method name valid under ``cfg``: ``potara`` is the configured estimator, ``potara_<name>`` any."""
    if cfg.potara.estimator not in ESTIMATORS:
        raise ConfigError(f"potara.estimator must be one of {', '.join(ESTIMATORS)}, got '{cfg.potara.estimator}'")
    builders = dict(_FIXED_NAMES)
    builders["potara"] = potara.build_estimator(cfg.potara.estimator, "potara", exports=True)
    for est in ESTIMATORS:
        builders[f"potara_{est}"] = potara.build_estimator(est, f"potara_{est}")
    return builders


def resolve(cfg: RunConfig) -> list[Method]:
    """The configured methods; an unknown or repeated name in ``methods``, or an unknown one in ``fed.eval_methods``,
    is an error."""
    names = available(cfg)
    repeated = sorted({m for m in cfg.methods if cfg.methods.count(m) > 1})
    if repeated:
        raise ConfigError(f"methods names {repeated[0]!r} more than once; name each method once")
    unknown = [m for m in cfg.methods if m.split(VARIANT)[0] not in names]
    if unknown:
        raise ConfigError(f"methods names unknown method {unknown[0]!r}; available: {', '.join(sorted(names))}")
    unknown = [m for m in cfg.fed.eval_methods or [] if m not in cfg.methods and m.split(VARIANT)[0] not in names]
    if unknown:
        raise ConfigError(f"fed.eval_methods names unknown method {unknown[0]!r}; available: {', '.join(sorted(names))}")
    return _sharing_federations([build(spec, cfg) for spec in cfg.methods])


def _sharing_federations(methods: list[Method]) -> list[Method]:
    """``methods`` with one recipe object per federation name, so that a peer and its post-hoc variants
    (``ditto@potara.prior_correction=counts``) are personalized from one federation, run once."""
    first: dict[str, object] = {}
    return [m if m.federation is FEDIT else dataclasses.replace(m, federation=first.setdefault(m.federation.name,
                                                                                                 m.federation))
            for m in methods]


def build(spec: str, cfg: RunConfig) -> Method:
    """The method named ``spec``: a name, or a variant ``name@key=value[@key=value…]`` that sets method-only
    keys (``peers.*``, ``potara.estimator``, ``potara.damping``, ``potara.grid``, ``potara.paper_*``,
    ``potara.merge_space``, ``local.init``, the mechanisms ``potara.prior_correction``, ``potara.granularity``,
    ``potara.safety*``, ``potara.spread_scale``) for that method alone, so that a tuning sweep runs its candidates side by
    side on the same federation and clients."""
    name, *items = spec.split(VARIANT)
    if not items:
        return _corrected(available(cfg)[name](cfg), cfg)
    values = cfg.to_dict()
    for item in items:
        key = _item_key(item)
        if not key.startswith(VARIANT_KEYS):
            raise ConfigError(
                f"method variant {spec!r}: {key!r} is not a method-only key; a variant may set "
                f"{', '.join(VARIANT_KEYS)}* (other keys change what every method shares: use a suite setting)"
            )
        apply_override(values, item)
    variant = from_dict(values)
    method = available(variant)[name](variant)
    trained = [item for item in items if not _item_key(item).startswith(POST_HOC_KEYS)]
    plain = VARIANT.join([name, *trained])  # the method this variant post-processes: itself if nothing is post hoc
    if method.federation is not FEDIT and method.federation.name == name and trained:  # one per variant (μ)
        method = dataclasses.replace(method, federation=copy.copy(method.federation))
        method.federation.name = plain
    shares = plain if plain != spec and cfg.potara.prior_correction != "counts" else None
    return _corrected(dataclasses.replace(
        method, name=spec, local_init=variant.local.init, merge_space=method.merge_space or variant.potara.merge_space,
        exports=False,
    ), variant, shares)  # exports=False: adapters/<client>/ holds the plain method's merge, never a variant's; a
    # method that pins its merge space (APFL's mixture is trained as the exact merge) keeps it


def _item_key(item: str) -> str:
    """The key of a variant item ``key=value``."""
    return item.split("=", 1)[0].strip()


def _corrected(method: Method, cfg: RunConfig, shares: str | None = None) -> Method:
    """``method`` with its logits prior-corrected when ``cfg`` (the run's, or the variant's) asks for it; ``shares``:
    the plain, uncorrected method whose choice on a client it reuses (a variant's)."""
    return with_prior_correction(method, shares) if cfg.potara.prior_correction == "counts" else method


__all__ = ["Choice", "Method", "available", "build", "resolve"]
