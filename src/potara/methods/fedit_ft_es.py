"""FedIT + local fine-tuning with early stopping on the validation split Potara's ``heldout`` estimator reads.

From the federated adapter, up to ``local.epochs × peers.fedit_ft_es_max_epochs_factor`` epochs (the batches of
``fedit_ft`` first); the validation split is scored at epoch 0 (the federated adapter itself) and after every
epoch, and the best epoch is kept: the highest validation accuracy, ties to the lower loss, then the earlier
epoch. Its training and its validation passes are its cost, measured like every method's. With an empty
validation split there is nothing to stop on: it is plain ``fedit_ft`` (and its note says so).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import RunConfig
from ..merge.taskvec import AdapterState
from ..models.adapters import get_state, set_state
from ..personalize.session import ClientSession, evaluate_split
from ..training.loop import Budget
from .base import Choice, Method


@dataclass
class Stopped:
    """The best adapter by validation, its epoch, and every epoch's (accuracy, loss) from epoch 0."""

    state: AdapterState
    epoch: int
    scores: list[tuple[float, float]]


def early_stopped(session: ClientSession, budget: Budget) -> Stopped:
    """``session.fed`` fine-tuned on the training data for ``budget``, the best epoch by validation kept."""
    val, s = session.split("val"), session.settings
    best: list = []  # (key, epoch, state) of the best epoch so far
    scores: list[tuple[float, float]] = []

    def score_epoch(epoch: int) -> None:
        ev = evaluate_split(session.model, val, s.eval_batch_size, s.max_new_tokens)
        scores.append((ev.acc, ev.loss))
        key = (ev.acc, -ev.loss)
        if not best or key > best[0]:
            best[:] = [key, epoch, get_state(session.model)]

    set_state(session.model, session.fed)
    score_epoch(0)
    session.fine_tuned(session.fed, budget=budget, after_epoch=score_epoch)
    return Stopped(best[2], best[1], scores)


def build(cfg: RunConfig) -> Method:
    factor = cfg.peers.fedit_ft_es_max_epochs_factor

    def personalize(session: ClientSession) -> Choice:
        if len(session.split("val")) == 0:
            return Choice([session.local("federated")], [1.0], lam=0.0, note="empty validation split: plain fedit_ft")
        budget = session.settings.local_budget
        stopped = early_stopped(session, dataclasses.replace(budget, epochs=budget.epochs * factor))
        note = f"epoch {stopped.epoch} of {budget.epochs * factor} (best validation accuracy)"
        return Choice([stopped.state], [1.0], lam=0.0, note=note)

    return Method("fedit_ft_es", personalize)
