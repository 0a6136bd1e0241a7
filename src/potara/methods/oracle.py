"""Grid-search oracles: per client, λ on ``potara.grid`` with the best accuracy on a split.

``oracle_val`` chooses on the validation split (a fair, expensive peer); ``oracle_test`` chooses on
the test split itself — an upper bound, never a method. Ties go to the lower loss.
"""

from __future__ import annotations

from ..config import RunConfig
from ..personalize.session import ClientSession
from .base import Choice, Method


def build_on(split: str):
    def build(cfg: RunConfig) -> Method:
        grid = list(cfg.potara.grid)

        def personalize(session: ClientSession) -> Choice:
            data = session.split(split)
            scored = [(session.fed_local_eval(lam, data), lam) for lam in grid]
            best, lam = max(scored, key=lambda item: (item[0].acc, -item[0].loss))
            return Choice([session.fed, session.local()], [lam, 1 - lam], lam=lam)

        return Method(f"oracle_{split}", personalize)

    return build
