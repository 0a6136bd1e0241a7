"""FedSA-LoRA (Guo et al., "Selective Aggregation for LoRA in Federated Learning", ICLR 2025).

Its own federation (:class:`potara.recipes.FedSALoRA`): ``A`` and the head are sent and averaged, each
client's ``B`` stays on the client from one of its rounds to the next. Client ``k``'s model is the final
global ``A`` and head with its own ``B``.
"""

from __future__ import annotations

from ..client import ClientSession
from ..config import RunConfig
from ..recipes import FEDSA_LORA
from .base import Choice, Method


def build(cfg: RunConfig) -> Method:
    def personalize(session: ClientSession) -> Choice:
        return Choice([session.fed], [1.0])

    return Method("fedsa_lora", personalize, federation=FEDSA_LORA)
