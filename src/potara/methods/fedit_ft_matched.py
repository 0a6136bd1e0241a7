"""FedIT + local fine-tuning given, on each client, the compute that Potara's estimator measurably spends on λ,
so that no method wins by computing more.

On each client the configured ``potara.estimator`` (a variant's, e.g. ``fedit_ft_matched@potara.estimator=
crossfit``) is run first, apart: its ``lambda_cost`` (what choosing λ cost beyond the local adapter the merge needs,
measured by the pass meter; free in time when ``potara`` already ran on the session, which caches it) is read and
the estimator's result thrown away. That cost becomes extra fine-tuning examples beyond ``fedit_ft``'s
``local.epochs × n``: ``train_passes + round(forward_passes / 3)``. The conversion: a training pass is a forward
and a backward pass, and a backward pass costs about two forwards, so a training pass ≈ 3 forward passes
(docs/earlier-measurements.md measured a forward pass at 0.35 of a training step on the default clients). The
training stops at the first optimizer step that reaches the total, so it overshoots by less than one batch.

Like ``fedit_ft_es`` it starts from the federated adapter with the batches of ``fedit_ft`` and keeps the best epoch
by validation (epoch 0 included), so it reads the validation split Potara's estimator reads. Its cost is its own
training and validation passes; the estimator's run, only a measurement of the budget, is not charged to it.
"""

from __future__ import annotations

import dataclasses
import math

from ..config import RunConfig
from ..personalize.estimators import configured
from ..personalize.session import ClientSession
from ..training.cost import Cost
from ..training.loop import Budget
from .base import Choice, Method
from .fedit_ft_es import early_stopped

FORWARDS_PER_TRAINING_PASS = 3


def matched_examples(spent: Cost) -> int:
    """The training examples that ``spent`` is worth (a training pass = 3 forward passes)."""
    return spent.train_passes + round(spent.forward_passes / FORWARDS_PER_TRAINING_PASS)


def steps_for(examples: int, n: int, batch_size: int) -> int:
    """The optimizer steps whose batches (epochs of ``n`` in batches of ``batch_size``) first reach ``examples``."""
    epochs, rest = divmod(examples, n)
    return epochs * math.ceil(n / batch_size) + math.ceil(rest / batch_size)


def build(cfg: RunConfig) -> Method:
    estimate = configured(cfg.potara.estimator, cfg.potara)

    def personalize(session: ClientSession) -> Choice:
        n = len(session.split("train"))
        if n == 0:
            return Choice([session.fed], [1.0], lam=1.0, note="no training data: federated model")
        extra = matched_examples(session.cost_apart(lambda: estimate(session)))
        budget: Budget = session.settings.local_budget
        steps = steps_for(budget.epochs * n + extra, n, budget.batch_size)
        stopped = early_stopped(session, dataclasses.replace(budget, steps=steps))
        note = f"{extra} extra training examples (the estimator's λ cost); best epoch {stopped.epoch}"
        return Choice([stopped.state], [1.0], lam=0.0, note=note)

    return Method("fedit_ft_matched", personalize, needs_spread=cfg.potara.estimator == "spread")
