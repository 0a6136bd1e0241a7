"""What a round carries besides the adapters — an adaptive clipping norm, int8 error feedback — survives a resume."""

from __future__ import annotations

import pytest
import torch
from conftest import straight_and_resumed, without_seconds

from potara import config
from potara.config import PrivacyConfig
from potara.federation import checkpoint
from potara.federation.privacy import DPFedAvg


def test_a_checkpoint_round_trips_residuals_and_the_aggregations_state(tmp_path):
    residual = {"q.lora_A.weight": torch.tensor([[0.25, -0.5]])}
    state = checkpoint.RoundState(
        3, {"head.weight": torch.ones(2)}, [], {"up": 1, "down": 2}, {"seed": 0},
        residuals={"client_01": residual}, strategy={"clip_norm": 0.37},
    )
    checkpoint.save(tmp_path, state)
    loaded = checkpoint.load(tmp_path)
    assert loaded.strategy == {"clip_norm": 0.37}
    assert loaded.residuals["client_01"]["q.lora_A.weight"].equal(residual["q.lora_A.weight"])


def test_dp_fedavg_restores_its_adaptive_clipping_norm():
    settings = PrivacyConfig(noise_multiplier=0.1, clip_norm=1.0, adaptive=True)
    moved, current = DPFedAvg(settings, sampled=3), {"w": torch.zeros(4)}
    moved.aggregate([(current, 1)], current)
    fresh = DPFedAvg(settings, sampled=3)
    fresh.restore(moved.state())
    assert moved.clip_norm != 1.0 and fresh.noise_std() == moved.noise_std()
    assert torch.equal(fresh.aggregate([(current, 1)], current)["w"], moved.aggregate([(current, 1)], current)["w"])


@pytest.mark.parametrize(
    "extra",
    [
        ["fed.payload_dtype=int8"],
        ["privacy.noise_multiplier=0.1", "privacy.adaptive=true", "privacy.clip_norm=0.05"],
    ],
    ids=["int8-error-feedback", "adaptive-clipping"],
)
def test_a_run_interrupted_after_round_1_resumes_to_the_uninterrupted_result(
    tiny_overrides, tmp_path, monkeypatch, extra
):
    cfg = config.load(None, [*tiny_overrides, "fed.rounds=3", "threads=1", "methods=[fedit,fedit_ft]", *extra])
    straight, resumed = straight_and_resumed(cfg, tmp_path, monkeypatch)
    for name in ("fedit", "fedit_ft"):
        assert without_seconds(resumed.methods[name].per_client) == without_seconds(straight.methods[name].per_client)
    assert without_seconds(resumed.rounds) == without_seconds(straight.rounds)
    final = checkpoint.load(tmp_path)
    assert final.round == 3
    assert bool(final.residuals) == ("fed.payload_dtype=int8" in extra)
