"""A fixed λ = ½ merge of the federated and local adapters, the same for every client."""

from __future__ import annotations

from ..client import ClientSession
from ..config import RunConfig
from .base import Choice, Method

FIXED_LAMBDA = 0.5


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.fed, session.local()], [FIXED_LAMBDA, 1 - FIXED_LAMBDA], lam=FIXED_LAMBDA)

    return Method("fixed", personalize)
