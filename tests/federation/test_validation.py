"""Bad client updates are rejected with a reason naming the client; the rest are aggregated."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save as st_save

from potara.config import ValidationConfig
from potara.federation.rounds import aggregate_round, server_step
from potara.federation.strategies import FedAvg
from potara.federation.update import ClientUpdate
from potara.models.adapters import serialize

KEYS = {"q.lora_A.weight": (2, 8), "q.lora_B.weight": (8, 2), "classifier.weight": (3, 8)}


def state(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(shape, generator=gen) for k, shape in KEYS.items()}


def honest(name: str, seed: int, n: int = 10) -> ClientUpdate:
    """An update a small step away from the global state of seed 0."""
    step = {k: v + 0.01 * d for (k, v), d in zip(state(0).items(), state(seed).values())}
    return ClientUpdate(name, serialize(step), n, 0.5)


def bad(kind: str) -> ClientUpdate:
    good = state(0)
    if kind == "nan":
        good["q.lora_A.weight"][0, 0] = float("nan")
    elif kind == "shape":
        good["q.lora_B.weight"] = torch.zeros(8, 3)
    elif kind == "missing":
        del good["classifier.weight"]
    elif kind == "norm":
        good = {k: 100 * v for k, v in good.items()}
    elif kind == "dtype":
        return ClientUpdate(f"bad_{kind}", st_save({k: v.double() for k, v in good.items()}), 10, 0.5)
    elif kind == "oversized":
        good["padding"] = torch.zeros(10_000)
    elif kind == "garbage":
        return ClientUpdate(f"bad_{kind}", b"\x00" * 64, 10, 0.5)
    return ClientUpdate(f"bad_{kind}", serialize(good), 10, 0.5)


REASONS = {
    "nan": "non-finite", "shape": "has shape (8, 3), expected (8, 2)", "missing": "missing, e.g. 'classifier.weight'",
    "norm": "validation.max_norm_ratio", "dtype": "dtype torch.float64", "oversized": "exceeds the limit",
    "garbage": "not a valid safetensors blob",
}


@pytest.mark.parametrize("kind", sorted(REASONS))
def test_bad_update_is_rejected_naming_the_client_and_the_rest_aggregated(kind, caplog):
    updates = [honest("c1", 1), bad(kind), honest("c2", 2, n=30)]
    with caplog.at_level(logging.WARNING, logger="potara.federation.validation"):
        outcome = aggregate_round(FedAvg(), state(0), updates, where="round 3")
    assert outcome.accepted == ["c1", "c2"] and not outcome.kept_previous
    assert REASONS[kind] in outcome.rejected[f"bad_{kind}"]
    assert f"round 3: update from client bad_{kind} rejected: " in caplog.text and REASONS[kind] in caplog.text
    clean = aggregate_round(FedAvg(), state(0), [updates[0], updates[2]])
    assert all(torch.equal(outcome.state[k], clean.state[k]) for k in KEYS)


def test_too_few_valid_updates_keep_the_previous_global(caplog):
    current = state(0)
    updates = [bad("nan"), honest("c1", 1)]
    with caplog.at_level(logging.WARNING):
        outcome = aggregate_round(FedAvg(), current, updates, ValidationConfig(min_updates=2), "round 5")
    assert outcome.kept_previous and outcome.state is current
    assert "round 5: 1 of 2 updates valid, 2 needed" in caplog.text and "keeping the previous global" in caplog.text


def test_absolute_norm_bound_and_payload_limit_are_configurable():
    limits = ValidationConfig(max_norm=1.0, max_norm_ratio=None)
    outcome = aggregate_round(FedAvg(), state(0), [honest("c1", 1)], limits)
    assert "exceeds validation.max_norm=1" in outcome.rejected["c1"]
    tight = ValidationConfig(max_payload_bytes=100)
    assert "exceeds the limit of 100 bytes" in aggregate_round(FedAvg(), state(0), [honest("c1", 1)], tight).rejected["c1"]


def test_non_positive_example_count_is_rejected():
    update = honest("c9", 1)
    update.n = 0
    assert "example count must be an integer from 1" in aggregate_round(FedAvg(), state(0), [update]).rejected["c9"]


def test_server_step_with_only_honest_updates_weights_them_by_example_counts():
    """Steps 0.01·d₁ (10 examples) and 0.01·d₂ (30): the new global is the current one + 0.01·(¼ d₁ + ¾ d₂)."""
    out = server_step(FedAvg(), state(0), [honest("c1", 1, n=10), honest("c2", 2, n=30)])
    expected = {k: v + 0.01 * (0.25 * d1 + 0.75 * d2) for (k, v), d1, d2 in zip(state(0).items(), state(1).values(),
                                                                              state(2).values())}
    assert all(torch.allclose(out[k], expected[k]) for k in KEYS)
