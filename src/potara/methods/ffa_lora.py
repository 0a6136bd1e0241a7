"""FFA-LoRA (Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", ICLR 2024).

Its own federation (:class:`potara.federation.recipes.FFALoRA`): every ``A`` stays frozen at the shared random
initialisation, only ``B`` and the head are trained, sent and averaged. Every client uses the final model.
Its clients' learning rate is ``peers.ffa_lora_lr_scale`` × ``fed.lr``, tuned on the dev suite like every peer's
setting.
"""

from __future__ import annotations

from ..config import RunConfig
from ..federation.recipes import FFA_LORA, scaled
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.fed], [1.0])

    return Method("ffa_lora", personalize, federation=scaled(FFA_LORA, cfg.peers.ffa_lora_lr_scale))
