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
- ``APFL`` (Deng et al., "Adaptive Personalized Federated Learning", 2020): FedIT's federation of ``w``, and per
  client a personal adapter ``v_k`` and mixing weight ``α_k``, kept on the client and trained in each of its
  rounds on the loss of the mixture ``α_k v_k + (1 − α_k) w`` (:func:`potara.federation.personal.apfl_step`).
"""

from __future__ import annotations

import copy

from peft import PeftModel

from ..data.encoding import Encoded
from ..merge.taskvec import LORA_A, AdapterState
from ..training.loop import Budget
from .personal import apfl_start, apfl_step, ditto_step
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

    def personal_start(self, initial: AdapterState) -> AdapterState:
        """A client's personal state before its first round, kept on the client ({}: none)."""
        return {}

    def personal_step(
        self, model: PeftModel, kept: AdapterState, received: AdapterState, trained: AdapterState, data: Encoded,
        budget: Budget, seed: int,
    ) -> AdapterState:
        """A client's personal state after its round (``kept`` before it; ``received``: the global adapter it
        got, ``trained``: after its local step); {}: none."""
        return {}

    def split(self, state: AdapterState) -> tuple[AdapterState, AdapterState]:
        """(the tensors that travel, the tensors that stay on the client)."""
        return (
            {k: v for k, v in state.items() if self.travels(k)},
            {k: v for k, v in state.items() if not self.travels(k)},
        )

    def kept_at_start(self, initial: AdapterState) -> AdapterState:
        """What each client holds before its first round: the tensors that stay and its personal state."""
        return {**self.split(initial)[1], **self.personal_start(initial)}


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

    def personal_start(self, initial: AdapterState) -> AdapterState:
        return dict(initial)

    def personal_step(
        self, model: PeftModel, kept: AdapterState, received: AdapterState, trained: AdapterState, data: Encoded,
        budget: Budget, seed: int,
    ) -> AdapterState:
        return ditto_step(model, kept, received, data, budget, seed, self.mu)


class APFL(FedIT):
    """FedIT's federation, and per client a personal adapter and mixing weight trained on the mixture's loss."""

    name = "apfl"

    def __init__(self, alpha_lr: float, scale: float, merge_rank: int) -> None:
        self.alpha_lr, self.scale, self.merge_rank = alpha_lr, scale, merge_rank

    def personal_start(self, initial: AdapterState) -> AdapterState:
        return apfl_start(initial)

    def personal_step(
        self, model: PeftModel, kept: AdapterState, received: AdapterState, trained: AdapterState, data: Encoded,
        budget: Budget, seed: int,
    ) -> AdapterState:
        return apfl_step(model, kept, trained, data, budget, seed, self.alpha_lr, self.scale, self.merge_rank)


FEDIT = FedIT()
FFA_LORA = FFALoRA()
FEDSA_LORA = FedSALoRA()
