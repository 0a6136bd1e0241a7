"""The federated rounds: the client step and the server step that the embedded engine and Flower share."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from peft import PeftModel

from .adapters import deserialize, get_state, serialize, set_state
from .encoding import Encoded
from .strategies import FedAvg
from .taskvec import AdapterState
from .training import Budget, train


@dataclass
class ClientUpdate:
    client: str
    payload: bytes
    n: int
    train_loss: float


def client_step(
    model: PeftModel, client: str, payload: bytes, data: Encoded, budget: Budget, seed: int
) -> ClientUpdate:
    """Receive the global adapter, train it on local data, return the serialized update."""
    set_state(model, deserialize(payload, "server"))
    loss = train(model, data, budget, torch.Generator().manual_seed(seed))
    return ClientUpdate(client, serialize(get_state(model)), len(data), loss)


def server_step(strategy: FedAvg, current: AdapterState, updates: Sequence[ClientUpdate]) -> AdapterState:
    """Deserialize (validating) the uploads and aggregate them weighted by n_k."""
    states = [(deserialize(u.payload, u.client), u.n) for u in updates]
    return strategy.aggregate(states, current)


def sample_clients(names: Sequence[str], fraction: float, seed: int, round_idx: int) -> list[str]:
    k = max(1, round(fraction * len(names)))
    return sorted(random.Random(seed * 100_003 + round_idx).sample(list(names), k))


@dataclass
class RoundLog:
    round: int
    clients: list[str]
    bytes_up: int
    bytes_down: int
    train_loss: float
    extra: dict = field(default_factory=dict)


def run_rounds(
    model: PeftModel,
    clients: dict[str, Encoded],
    initial: AdapterState,
    strategy: FedAvg,
    *,
    rounds: int,
    fraction: float,
    budget: Budget,
    seed: int,
    on_round: Callable[[RoundLog, AdapterState], None] | None = None,
    progress: Callable | None = None,
) -> AdapterState:
    """FedAvg rounds; bytes are the lengths of the serialized payloads that cross the wire."""
    state = initial
    for r in range(1, rounds + 1):
        chosen = sample_clients(list(clients), fraction, seed, r)
        down = serialize(state)
        updates = []
        for i, name in enumerate(progress(chosen, desc=f"round {r}/{rounds}") if progress else chosen):
            updates.append(client_step(model, name, down, clients[name], budget, seed * 7919 + r * 131 + i))
        state = server_step(strategy, state, updates)
        log = RoundLog(
            r, chosen, sum(len(u.payload) for u in updates), len(down) * len(chosen),
            sum(u.train_loss * u.n for u in updates) / max(1, sum(u.n for u in updates)),
        )
        if on_round:
            on_round(log, state)
    return state
