"""FedSA-LoRA (Guo et al., "Selective Aggregation for LoRA in Federated Learning", ICLR 2025).

Its own federation (:class:`potara.federation.recipes.FedSALoRA`): only the ``A`` factors are sent and averaged (the
paper finds ``A`` learns general knowledge, ``B`` client-specific knowledge); each client's ``B`` and its
classifier head stay on the client from one of its rounds to the next. The head is client-specific as ``B``
is (each client has its own label mix), and the authors' GLUE configuration (RoBERTa with a classifier,
``Pengxin-Guo/FedSA-LoRA`` ``federatedscope/glue/yamls/fedsa-lora.yaml``) keeps it local:
``personalization.local_param: ['lora_B', 'classifier']``. Client ``k``'s model is the final global ``A``
with its own ``B`` and head.
Its clients' learning rate is ``peers.fedsa_lora_lr_scale`` × ``fed.lr``, tuned on the dev suite like every peer's
setting.
"""

from __future__ import annotations

from ..config import RunConfig
from ..federation.recipes import FEDSA_LORA, scaled
from ..personalize.session import ClientSession
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.fed], [1.0])

    return Method("fedsa_lora", personalize, federation=scaled(FEDSA_LORA, cfg.peers.fedsa_lora_lr_scale))
