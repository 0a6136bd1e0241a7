"""APFL (Deng et al., "Adaptive Personalized Federated Learning", 2020), co-trained in the rounds (Algorithm 1).

Its own federation (:class:`potara.federation.recipes.APFL`): in every round it takes part in, client ``k`` receives
the global adapter ``w`` and (a) makes FedIT's local update of it, which is all that travels, then (b) trains its
personal adapter ``v_k`` and mixing weight ``α_k`` for the same budget (``fed.*``, the same batches) on the loss of
the mixture ``α_k v_k + (1 − α_k) w``, ``w`` as its local step left it and frozen
(:func:`potara.federation.personal.apfl_step`). ``v_k`` and ``α_k`` never leave the client and carry over from one
of its rounds to the next (kept and checkpointed like Ditto's ``v_k``). ``v_k`` starts from the initial (pretrained)
adapter, ``α_k`` from ½. Client ``k``'s model is the final mixture ``α_k v_k + (1 − α_k) w_final``, the exact merge.

Where it differs from the paper: ``α`` is parametrised as ``sigmoid(s)`` and ``s`` trained by AdamW at
``peers.apfl_alpha_lr`` (APFL takes plain gradient steps on ``α`` and clips it to [0, 1]); ``v`` and ``α`` are
trained after ``w``'s local step, against the ``w`` it ended at, instead of interleaved step by step with it.
The clients' learning rate in the rounds is ``peers.apfl_lr_scale`` × ``fed.lr`` (``w``'s and ``v``'s). Reported
``lambda`` is the federated weight, ``1 − α_k``. The post-hoc variant is ``apfl_posthoc``.
"""

from __future__ import annotations

from ..config import RunConfig
from ..federation.personal import unpack_apfl
from ..federation.recipes import APFL, scaled
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        glob, personal, alpha = unpack_apfl(session.fed)
        return Choice([glob, personal], [1 - alpha, alpha], lam=1 - alpha)

    recipe = APFL(cfg.peers.apfl_alpha_lr, cfg.lora.alpha / cfg.lora.r, 2 * cfg.lora.r)
    # scored as it was trained, the exact merge in ΔW space (federation.personal.apfl_step), whatever
    # potara.merge_space says
    return Method("apfl", personalize, federation=scaled(recipe, cfg.peers.apfl_lr_scale), merge_space="delta")
