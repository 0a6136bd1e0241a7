"""FedIT + local fine-tuning given the local training that Potara's estimator spends on top of its local
adapter, so that no method wins by training more: ``local.epochs × (1 + k)`` epochs from the federated
adapter, with ``k`` the extra full local trainings of ``potara.estimator`` (``EXTRA_LOCAL_TRAININGS``: two
half-data adapters are one). Its first epochs see the batches of ``fedit_ft``."""

from __future__ import annotations

import dataclasses

from ..config import RunConfig
from ..personalize.estimators import EXTRA_LOCAL_TRAININGS
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    factor = 1 + EXTRA_LOCAL_TRAININGS[cfg.potara.estimator]

    def personalize(session: ClientSession) -> Choice:
        budget = session.settings.local_budget
        longer = dataclasses.replace(budget, epochs=budget.epochs * factor)
        return Choice([session.fine_tuned(session.fed, budget=longer)], [1.0], lam=0.0)

    return Method("fedit_ft_matched", personalize)
