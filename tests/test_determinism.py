"""Same config and seed, same federated adapter bytes and same summary; a bad client cannot stop a run."""

from __future__ import annotations

import math

import pytest
from conftest import without_seconds

from potara import config, engine
from potara.federation import checkpoint
from potara.federation import rounds as fed_rounds
from potara.models.adapters import deserialize, serialize
from potara.reporting import outputs

EXTRA = ["fed.rounds=3", "methods=local,fedit,potara", "threads=1"]


@pytest.fixture
def cfg(tiny_overrides) -> config.RunConfig:
    return config.load(None, tiny_overrides + EXTRA)


def run_once(cfg: config.RunConfig, folder) -> tuple[bytes, dict, list[dict]]:
    """The final global adapter as bytes, the summary's numbers and the rounds log of one run."""
    result = engine.run(cfg, export_dir=folder / "adapters", checkpoint_dir=folder / "checkpoint")
    final = checkpoint.load(folder / "checkpoint")
    summary = outputs.summary(cfg.to_dict(), result)
    return serialize(final.adapter), without_seconds(summary["methods"]), result.rounds


def test_same_seed_same_adapter_bytes_and_summary_another_seed_another_adapter(cfg, tiny_overrides, tmp_path):
    first, second = run_once(cfg, tmp_path / "a"), run_once(cfg, tmp_path / "b")
    assert first[0] == second[0]
    assert first[1] == second[1] and first[2] == second[2]
    exported = [sorted((tmp_path / x / "adapters").rglob("*.safetensors")) for x in "ab"]
    assert [p.read_bytes() for p in exported[0]] == [p.read_bytes() for p in exported[1]] and exported[0]
    other = config.load(None, tiny_overrides + EXTRA + ["seed=1", "methods=fedit,local"])
    assert run_once(other, tmp_path / "c")[0] != first[0]


def test_a_client_sending_nan_is_rejected_every_round_and_the_run_completes(cfg, tmp_path, monkeypatch):
    honest_step = fed_rounds.client_step

    def poisoned_step(model, client, payload, data, budget, seed, dtype="fp32", **recipe_and_kept):
        update = honest_step(model, client, payload, data, budget, seed, dtype, **recipe_and_kept)
        if client == "client_01":
            state = deserialize(update.payload, client)
            state = {k: v * math.nan for k, v in state.items()}
            update.payload = _unchecked(state)
        return update

    monkeypatch.setattr(fed_rounds, "client_step", poisoned_step)
    _, methods, rounds = run_once(cfg, tmp_path)
    assert all("non-finite" in r["rejected"]["client_01"] and not r.get("kept_previous") for r in rounds)
    assert math.isfinite(methods["fedit"]["mean_acc"])


def _unchecked(state) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in state.items()})
