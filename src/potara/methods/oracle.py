"""Grid-search oracles: per client, λ on ``potara.grid`` with the best accuracy on a split.

``oracle_val`` chooses on the validation split (a fair, expensive peer); ``oracle_test`` chooses on
the test split itself — an upper bound, never a method, and optimistic by construction (it picks and scores on
the same examples). ``oracle_split`` is the honest bound: the test split in two seeded halves, λ picked on one
half and scored on the other, both ways, so no example is scored by a λ chosen on it. Ties go to the lower loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import RunConfig
from ..data.encoding import Encoded
from ..personalize.session import ClientSession
from ..training.causal_lm import PromptTargets
from ..training.loop import Evaluation, score
from .base import Choice, Method


def best_lambda(session: ClientSession, grid: list[float], data: Encoded) -> float:
    """The grid's λ with the best accuracy of the merge on ``data`` (ties: the lower loss, then the first)."""
    return best_scored([(session.fed_local_eval(lam, data), lam) for lam in grid])


def best_scored(scored: list[tuple[Evaluation, float]]) -> float:
    """The λ of the best (evaluation, λ): the highest accuracy, ties to the lower loss, then the first."""
    return max(scored, key=lambda item: (item[0].acc, -item[0].loss))[1]


def build_on(split: str):
    def build(cfg: RunConfig) -> Method:
        grid = list(cfg.potara.grid)

        def personalize(session: ClientSession) -> Choice:
            lam = best_lambda(session, grid, session.split(split))
            return Choice([session.fed, session.local()], [lam, 1 - lam], lam=lam)

        return Method(f"oracle_{split}", personalize)

    return build


def halves(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two disjoint seeded halves of ``range(n)`` (the first has ``n // 2``)."""
    order = torch.randperm(n, generator=generator)
    return order[: n // 2], order[n // 2 :]


def build_split(cfg: RunConfig) -> Method:
    grid = list(cfg.potara.grid)

    def personalize(session: ClientSession) -> Choice:
        if isinstance(session.split("test"), PromptTargets):
            raise ValueError("oracle_split scores a classifier's logits; on causal-LM data use oracle_test")
        states = [session.fed, session.local()]

        def cross_picks(data: Encoded) -> list[tuple[Tensor, float]]:
            """Each half's indices with the λ picked on the *other* half (a split under two examples: its own
            pick), scored from the split's cached logits at each λ: one forward pass per λ for both halves."""
            at = {lam: session.logits(states, [lam, 1 - lam], data) for lam in grid}
            labels = data.tensors["labels"]

            def pick(index: Tensor) -> float:
                return best_scored([(score(at[lam][index], labels[index]), lam) for lam in grid])

            if len(data) < 2:
                return [(torch.arange(len(data)), pick(torch.arange(len(data))))]
            first, second = halves(len(data), session.generator("oracle_split", "halves"))
            return [(first, pick(second)), (second, pick(first))]

        test = session.split("test")
        picks = [lam for _, lam in cross_picks(test)] if len(test) else [1.0]
        lam = sum(picks) / len(picks)

        def logits(data: Encoded) -> Tensor:
            """On the test split, every example's logits under the merge at the λ picked on its other half; on
            another split (validation), the merge at the two picks' mean, the λ reported."""
            if data is not test:
                return session.logits(states, [lam, 1 - lam], data)
            parts = cross_picks(data)
            out = torch.cat([session.logits(states, [pick, 1 - pick], data)[index] for index, pick in parts])
            return out.index_select(0, torch.argsort(torch.cat([index for index, _ in parts])))

        note = "" if len(picks) == 2 else "test split under two examples: λ picked and scored on it"
        return Choice(states, [lam, 1 - lam], lam=lam, note=note, logits=logits)

    return Method("oracle_split", personalize)
