"""Ditto (Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization", ICML 2021).

Its own federation (:class:`potara.federation.recipes.Ditto`, the paper's Algorithm 1): in every round it takes part in,
client ``k`` (a) makes FedIT's local update of the global adapter ``w``, which is all that travels, and (b)
updates its personal adapter ``v_k`` for the same budget (``fed.*``, the same batches) on
``F_k(v) + μ/2 ‖v − w‖²`` (``μ`` = ``peers.ditto_mu``), ``w`` the global adapter it has just received. ``v_k``
never leaves the client (no bytes: the wire is FedIT's). ``v_k`` starts from the initial (pretrained) adapter,
so a client never sampled keeps it. Client ``k``'s model is its ``v_k`` after the last round.
``μ = 0`` is plain local training of ``v_k`` in the rounds; the post-hoc variant is ``ditto_posthoc``. Its clients'
learning rate (``w``'s and ``v_k``'s) is ``peers.ditto_lr_scale`` × ``fed.lr``.
"""

from __future__ import annotations

from ..config import RunConfig
from ..federation.recipes import Ditto, scaled
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.fed], [1.0])

    return Method("ditto", personalize, federation=scaled(Ditto(cfg.peers.ditto_mu), cfg.peers.ditto_lr_scale))
