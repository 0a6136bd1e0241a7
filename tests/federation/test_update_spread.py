"""The spread of a round's accepted updates: the core's function, the round records, the final broadcast, DP."""

from __future__ import annotations

import pytest
import torch
from conftest import straight_and_resumed, without_seconds

from potara import config, engine
from potara.federation import rounds
from potara.federation.privacy import DPFedAvg
from potara.federation.rounds import aggregate_round
from potara.federation.strategies import FedAvg
from potara.federation.update import ClientUpdate
from potara.merge.spread import SPREAD_BYTES, update_spread
from potara.merge.taskvec import task_vector
from potara.models.adapters import deserialize, serialize


def test_the_spread_is_the_mean_squared_deviation_over_all_tensors_together():
    """Updates 0, 3, 6 of ``w`` and 1, 1, 4 of ``v`` (against 100 and −2): deviations (−3, 0, 3) and (−1, −1, 2),
    so (9 + 0 + 9 + 1 + 1 + 4) / 3 = 8; fewer than two updates: 0."""
    current = {"w": torch.tensor([100.0]), "v": torch.tensor([-2.0])}
    states = [{"w": torch.tensor([100.0 + w]), "v": torch.tensor([-2.0 + v])} for w, v in ((0, 1), (3, 1), (6, 4))]
    assert update_spread(states, current, 2.0) == pytest.approx(8.0)
    assert update_spread(states[:1], current, 2.0) == 0.0 and update_spread([], current, 2.0) == 0.0


def test_a_lora_modules_spread_is_that_of_its_task_vectors_not_of_its_factors():
    """ΔW = scale · B A, as the client's distance ‖τ_F − τ_L‖² is measured: three clients' random factors, the
    spread equals the one of the dense ΔW (formed here, never in the code), and differs from the factors' own."""
    gen = torch.Generator().manual_seed(0)
    factors = [(torch.randn(5, 2, generator=gen), torch.randn(2, 4, generator=gen)) for _ in range(3)]
    states = [{"q.lora_B.weight": b, "q.lora_A.weight": a, "head": torch.tensor([float(i)])}
              for i, (b, a) in enumerate(factors)]
    current = {k: torch.zeros_like(v) for k, v in states[0].items()}
    dense = torch.stack([(1.5 * b.double() @ a.double()).flatten() for b, a in factors])
    expected = (float((dense - dense.mean(0)).pow(2).sum()) + 2.0) / 3  # heads 0, 1, 2: deviations −1, 0, 1
    assert update_spread(states, current, 1.5) == pytest.approx(expected, rel=1e-12)
    raw = torch.stack([torch.cat([b.flatten(), a.flatten()]).double() for b, a in factors])
    assert abs(float((raw - raw.mean(0)).pow(2).sum() + 2.0) / 3 - expected) > 0.1


def test_aggregate_round_gives_the_spread_of_the_accepted_updates_alone():
    """A NaN upload is rejected and left out of the spread; DP releases none."""
    current = {"w": torch.zeros(3)}
    ups = [ClientUpdate(f"c{i}", serialize({"w": torch.full((3,), float(i))}), 10, 0.5) for i in (1, 3)]
    nan = ClientUpdate("bad", serialize({"w": torch.tensor([float("nan"), 0.0, 0.0])}), 10, 0.5)
    outcome = aggregate_round(FedAvg(), current, [ups[0], nan, ups[1]], lora_scale=2.0)
    assert outcome.spread.count == 2 and outcome.spread.spread == pytest.approx(3.0)  # 3 × 1² per update
    assert aggregate_round(FedAvg(), current, ups, secure=True, lora_scale=2.0).spread is None
    dp = DPFedAvg(config.PrivacyConfig(noise_multiplier=1.0), sampled=2)
    assert aggregate_round(dp, current, ups, lora_scale=2.0).spread is None


@pytest.fixture(scope="module")
def captured(tiny_model_dir, synthetic_csv):
    """A tiny run with ``potara_spread``, and every client step's received global adapter and upload, in order."""
    sets = [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2",
        "local.epochs=1", "model.max_length=16", "lora.r=2", "lora.alpha=4", "methods=[fedit,potara_spread]",
    ]
    steps, original = [], rounds.client_step

    def capture(model, client, payload, *args, **kwargs):
        update = original(model, client, payload, *args, **kwargs)
        steps.append((deserialize(payload), deserialize(update.payload)))
        return update

    rounds.client_step = capture
    try:
        result = engine.run(config.load(None, sets))
    finally:
        rounds.client_step = original
    return result, steps


def test_each_round_records_the_spread_of_the_clients_uploads(captured):
    result, steps = captured
    assert len(steps) == 6 and len(result.rounds) == 2
    for r, record in enumerate(result.rounds):
        received, uploads = steps[3 * r][0], [up for _, up in steps[3 * r : 3 * r + 3]]
        vectors = [task_vector(up, 4 / 2, received) for up in uploads]  # lora.alpha / lora.r
        flat = torch.stack([torch.cat([v[k].double().flatten() for k in sorted(v)]) for v in vectors])
        expected = float((flat - flat.mean(0)).pow(2).sum(1).mean())
        assert record["update_count"] == 3 and expected > 0
        assert record["update_spread"] == pytest.approx(expected, rel=1e-6)  # ΔW formed in float32 here


def test_the_final_broadcast_carries_the_spread_when_a_method_reads_it(captured):
    """16 bytes (s², m) per client on top of the global adapter, counted in every federated method's bytes down."""
    result, steps = captured
    last, adapter = result.rounds[-1], len(serialize(steps[0][0]))  # every round's global adapter has this size
    assert last["broadcast_bytes"] == 3 * (adapter + SPREAD_BYTES)
    assert result.methods["potara_spread"].bytes_down == last["cum_bytes_down"] + last["broadcast_bytes"]
    assert all("used heldout" not in row.get("note", "") for row in result.methods["potara_spread"].per_client)


def test_under_dp_the_spread_is_null_and_the_estimator_falls_back_to_heldout(tiny_overrides):
    sets = [*tiny_overrides, "fed.rounds=1", "local.epochs=1", "methods=[potara_spread,potara_heldout]",
            "privacy.noise_multiplier=0.5", "privacy.clip_norm=0.5"]
    result = engine.run(config.load(None, sets))
    assert result.rounds[-1]["update_spread"] is None and result.rounds[-1]["update_count"] == 3
    rows, heldout = result.methods["potara_spread"].per_client, result.methods["potara_heldout"].per_client
    assert [r["lambda"] for r in rows] == pytest.approx([r["lambda"] for r in heldout])
    assert all(r["note"].startswith("no update spread: used heldout") for r in rows)


def test_a_run_resumed_after_its_last_round_sends_the_spread_its_checkpoint_recorded(tiny_overrides, tmp_path,
                                                                                     monkeypatch):
    """Interrupted once the last round's checkpoint is written: the resumed run runs no round, and its clients still
    get that round's spread (from the checkpoint's records), so λ and bytes are the uninterrupted run's."""
    cfg = config.load(None, [*tiny_overrides, "fed.rounds=1", "local.epochs=1", "threads=1", "methods=[potara_spread]"])
    straight, resumed = straight_and_resumed(cfg, tmp_path, monkeypatch)
    rows = without_seconds(resumed.methods["potara_spread"].per_client)
    assert rows == without_seconds(straight.methods["potara_spread"].per_client)
    assert all("used heldout" not in row.get("note", "") for row in rows)
    assert resumed.methods["potara_spread"].bytes_down == straight.methods["potara_spread"].bytes_down
