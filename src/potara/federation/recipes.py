"""What a federation trains, what travels and what stays on the client. One recipe per class; variants
override one hook (Flower-strategy style).

- ``FedIT`` (Zhang et al., "Towards Building the Federated GPT", 2024): every adapter tensor is trained,
  uploaded, averaged and sent back; nothing stays on the client.
- ``FFALoRA`` (Sun et al., "Improving LoRA in Privacy-preserving Federated Learning", ICLR 2024): every
  ``A`` stays frozen at its shared random initialisation (each client derives it from the run's seed), so
  only ``B`` and the saved modules (head) are trained and travel. With ``A`` common and fixed, the average
  of the ``B`` factors is the exact average of the products ``B·A``.
- ``FedSALoRA`` (Guo et al., "Selective Aggregation for LoRA in Federated Learning", ICLR 2025): only ``A``
  travels and is averaged; each client's ``B`` and head (client-specific, local in the authors' GLUE setup)
  are trained too, never leave it and carry over from one of its rounds to the next.
- ``Ditto`` (Li et al., "Ditto: Fair and Robust Federated Learning Through Personalization", ICML 2021):
  FedIT's federation of the global adapter ``w``, and beside it a personal adapter ``v_k`` per client, kept on
  the client and updated in each of its rounds toward the ``w`` it received (``μ/2 ‖v − w‖²``).
"""

from __future__ import annotations

import copy

from ..merge.taskvec import LORA_A, AdapterState
from .strategies import FedAvg, ProductFedAvg


class FedIT:
    """Everything trained, everything sent, nothing kept."""

    name = "fedit"
    lr_scale = 1.0  # the clients' learning rate in this federation ÷ ``fed.lr`` (a peer's own tuned rate)

    def travels(self, key: str) -> bool:
        """Whether tensor ``key`` is uploaded, aggregated and sent back (else it stays on the client)."""
        return True

    def trains(self, key: str) -> bool:
        """Whether tensor ``key`` is trained on the client (else it stays as it was)."""
        return True

    def strategy(self, aggregation: str) -> FedAvg:
        """The server's aggregation: ``fed.aggregation`` chooses factors (FedIT) or exact products."""
        return ProductFedAvg() if aggregation == "product" else FedAvg()

    def personal_mu(self) -> float | None:
        """Ditto's ``μ`` when each client also trains a personal adapter beside the global one (every tensor,
        kept on the client, pulled by ``μ/2 ‖v − w‖²`` toward the global ``w`` it receives); None: none."""
        return None

    def split(self, state: AdapterState) -> tuple[AdapterState, AdapterState]:
        """(the tensors that travel, the tensors that stay on the client)."""
        return (
            {k: v for k, v in state.items() if self.travels(k)},
            {k: v for k, v in state.items() if not self.travels(k)},
        )

    def kept_at_start(self, initial: AdapterState) -> AdapterState:
        """What each client holds before its first round: the tensors that stay, or its personal adapter
        (``initial`` whole) when there is one."""
        return dict(initial) if self.personal_mu() is not None else self.split(initial)[1]


def scaled(recipe: FedIT, lr_scale: float) -> FedIT:
    """``recipe`` with its clients' learning rate at ``lr_scale × fed.lr`` (the recipe itself when 1)."""
    if lr_scale == 1.0:
        return recipe
    other = copy.copy(recipe)
    other.lr_scale = lr_scale
    return other


class FFALoRA(FedIT):
    """``A`` frozen at the shared initialisation: neither trained nor sent."""

    name = "ffa_lora"

    def travels(self, key: str) -> bool:
        return not key.endswith(LORA_A)

    def trains(self, key: str) -> bool:
        return not key.endswith(LORA_A)

    def strategy(self, aggregation: str) -> FedAvg:
        return FedAvg()  # with A shared and fixed, averaging B is already the exact product average


class FedSALoRA(FedIT):
    """Only ``A`` averaged; ``B`` and the head trained and kept on each client."""

    name = "fedsa_lora"

    def travels(self, key: str) -> bool:
        return key.endswith(LORA_A)

    def strategy(self, aggregation: str) -> FedAvg:
        return FedAvg()  # the server never sees B, so there is no product to average


class Ditto(FedIT):
    """FedIT's federation, and a personal adapter per client trained toward the received global one."""

    name = "ditto"

    def __init__(self, mu: float) -> None:
        self.mu = mu

    def personal_mu(self) -> float | None:
        return self.mu


FEDIT = FedIT()
FFA_LORA = FFALoRA()
FEDSA_LORA = FedSALoRA()
