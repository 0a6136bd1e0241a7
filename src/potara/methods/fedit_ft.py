"""FedIT + local fine-tuning: the federated adapter fine-tuned on the client's data (λ = 0 of the merge)."""

from __future__ import annotations

from ..config import RunConfig
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.local("federated")], [1.0], lam=0.0)

    return Method("fedit_ft", personalize)
