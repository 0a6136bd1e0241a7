"""Ditto after the federation (a post-hoc variant of Li et al., "Ditto: Fair and Robust Federated Learning
Through Personalization", ICML 2021; Ditto proper is ``ditto``, which trains the personal model in the rounds).

Client ``k``'s personal adapter minimises ``F_k(v) + μ/2 ‖v − w_F‖²`` (``μ`` = ``peers.ditto_mu``), with the
final FedIT adapter ``w_F`` as the anchor. ``v`` starts from ``w_F`` after the federation and is trained with
the local budget (``local.*``, the batches of ``fedit_ft``, at ``peers.ditto_lr_scale`` × ``local.lr``), so ``μ = 0``
at scale 1 is exactly ``fedit_ft``. The proximal
term acts on the LoRA factors and the head, the tensors that are trained.
"""

from __future__ import annotations

from dataclasses import replace

from ..config import RunConfig
from ..personalize.session import ClientSession
from ..training.loop import Proximal, state_as_params
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    mu, lr_scale = cfg.peers.ditto_mu, cfg.peers.ditto_lr_scale

    def personalize(session: ClientSession) -> Choice:
        anchor = Proximal(state_as_params(session.fed, session.model), mu)
        budget = session.settings.local_budget
        return Choice([session.fine_tuned(session.fed, anchor, replace(budget, lr=budget.lr * lr_scale))], [1.0])

    return Method("ditto_posthoc", personalize)
