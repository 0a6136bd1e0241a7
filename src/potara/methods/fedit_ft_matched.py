"""FedIT + local fine-tuning given the local training that Potara's estimator spends on top of its local
adapter, so that no method wins by training more: ``local.epochs × (1 + k)`` epochs from the federated
adapter, with ``k`` the extra full local trainings of ``potara.estimator`` (``Estimator.extra_local_trainings``:
two half-data adapters are one). Its first epochs see the batches of ``fedit_ft``."""

from __future__ import annotations

import dataclasses

from ..config import RunConfig
from ..personalize.estimators import ESTIMATORS
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    factor = 1 + ESTIMATORS[cfg.potara.estimator].extra_local_trainings

    def personalize(session: ClientSession) -> Choice:
        budget = session.settings.local_budget
        longer = dataclasses.replace(budget, epochs=budget.epochs * factor)
        return Choice([session.fine_tuned(session.fed, budget=longer)], [1.0], lam=0.0)

    return Method("fedit_ft_matched", personalize)
