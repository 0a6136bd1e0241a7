"""A fixed λ merge of the federated and local adapters, the same for every client (``peers.fixed_lambda``,
½ by default; a sweep of it on the dev suite is the strongest one-λ-for-all peer)."""

from __future__ import annotations

from ..config import RunConfig
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    lam = cfg.peers.fixed_lambda

    def personalize(session: ClientSession) -> Choice:
        return Choice([session.fed, session.local()], [lam, 1 - lam], lam=lam)

    return Method("fixed", personalize)
