"""FedIT (Zhang et al., 2024): the federated LoRA adapter, as is, for every client."""

from __future__ import annotations

from ..config import RunConfig
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.fed], [1.0], lam=1.0)

    return Method("fedit", personalize)
