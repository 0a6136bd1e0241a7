"""Potara: merge the federated and the local adapter with a closed-form, per-client λ.

``λ* = v_L / (v_F + v_L)`` minimises the variance-trace bound ``½[λ² v_F + (1−λ)² v_L]`` on the
client's loss (docs/method.md, "Two adapters and a merge"); the variances come from the estimator in
``potara.estimator`` (see :mod:`potara.personalize.estimators`). ``potara_module`` gives every module its own λ:
the spread of two half-data local adapters per module (Fisher metric) as the shape, the pooled estimate's scale.
With ``potara.safety=val_loss`` the ``potara``/``potara_<name>`` estimate yields to the better parent when validation
cannot tell the two apart (:mod:`potara.personalize.safety`).
"""

from __future__ import annotations

from ..config import RunConfig
from ..merge.mixing import complement, module_lambdas
from ..personalize.estimators import configured, module_shape
from ..personalize.safety import safe
from ..personalize.session import ClientSession
from .base import Choice, Method


def build_estimator(estimator: str, name: str, exports: bool = False):
    def build(cfg: RunConfig) -> Method:
        estimate = configured(estimator, cfg.potara)

        def personalize(session: ClientSession) -> Choice:
            if len(session.split("train")) == 0:
                return Choice([session.fed], [1.0], lam=1.0, note="no training data: federated model")
            est = estimate(session)
            if cfg.potara.safety == "val_loss":
                est = safe(session, est, cfg.potara.safety_min_val)
            return Choice([session.fed, session.local()], [est.lam, complement(est.lam)], lam=est.lam, note=est.note)

        return Method(name, personalize, estimates_lambda=True, exports=exports, needs_spread=estimator == "spread")

    return build


def build_module(cfg: RunConfig) -> Method:
    estimate = configured(cfg.potara.estimator, cfg.potara)

    def personalize(session: ClientSession) -> Choice:
        if len(session.split("train")) == 0:
            return Choice([session.fed], [1.0], lam=1.0, note="no training data: federated model")
        pooled = estimate(session).lam
        if isinstance(pooled, dict):
            raise ValueError("potara_module scales a pooled λ; the estimator gave one per module already "
                             "(potara.paper_traces=module or potara.granularity=head_lora): set it back")
        traces, dist = module_shape(session)
        lams = module_lambdas(traces, dist, pooled)
        return Choice([session.fed, session.local()], [lams, {k: 1 - v for k, v in lams.items()}], lam=lams)

    return Method("potara_module", personalize, estimates_lambda=True, needs_spread=cfg.potara.estimator == "spread")
