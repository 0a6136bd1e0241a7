"""The Flower app with client-level DP (Flower's wrappers) and SecAgg+ (Flower's workflow and mods), in one
process: the same numbers as the embedded engine's DP-FedAvg, the SecAgg+ aggregate equal to the plain one within
SecAgg's quantization, dropouts, and the settings Flower cannot combine."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from flwr.app import Array, Context, Message
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
)
from test_flower_apps import NODE0, embedded, nodrop_model, overrides, run_local  # noqa: F401 (fixtures)

from potara.config import ConfigError
from potara.flower.privacy import privatized
from potara.flower.settings import from_run_config
from potara.flower.strategy import FederationError
from potara.models.adapters import deserialize
from potara.reporting.privacy import default_delta, epsilon

CLIP = 0.05  # below every update's norm on this federation: clipping is active
TINY = 1e-9  # a noise multiplier whose noise (std TINY·CLIP/3) is far below float32 resolution


@pytest.fixture(scope="module")
def one_round(overrides) -> list[str]:  # noqa: F811
    """One round of FedIT alone: the federation, without the personalization that does not touch it."""
    return [*overrides[:-1], "methods=[fedit]", "fed.rounds=1"]


def final_state(out: Path) -> dict[str, torch.Tensor]:
    return deserialize((out / "federated.safetensors").read_bytes())


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def quantization_bound(settings: dict, n_train: list[int]) -> float:
    """SecAgg+'s worst per-element error of a weighted mean: each client's value is stochastically rounded to a
    step of ``2c/T`` (clipping range c, quantization range T) after scaling by ``n_k / max n``; the unmasked sum
    is divided by ``Σ n_k / max n``, so the error is at most ``(2c/T)·m·max n / Σ n`` (plus float32 rounding)."""
    step = 2 * settings.get("secagg-clipping-range", 8.0) / settings.get("secagg-quantization-range", 2**22)
    return step * len(n_train) * max(n_train) / sum(n_train) + 1e-7


def dp(z: float, clip: float = CLIP) -> list[str]:
    return [f"privacy.noise_multiplier={z}", f"privacy.clip_norm={clip}"]


@pytest.fixture(scope="module")
def embedded_dp(one_round) -> dict[str, torch.Tensor]:
    """The embedded engine's DP-FedAvg on the same round, with negligible noise."""
    return embedded([*one_round, *dp(TINY)])[1]


def test_flower_dp_clips_and_averages_as_the_embedded_dp_fedavg(one_round, embedded_dp, tmp_path):
    """Flower's DifferentialPrivacyServerSideFixedClipping around PotaraFedAvg (equal weights) and the embedded
    DPFedAvg clip the same updates to ``C`` and take the same equal-weight mean: with negligible noise, the
    same global adapter to float tolerance; the ε in summary.json is the accountant's. No update spread: DP covers
    only the noised mean."""
    summary, _ = run_local([*one_round, *dp(TINY)], tmp_path)
    flower = final_state(tmp_path)
    assert max_difference(flower, embedded_dp) < 1e-6
    plain = embedded(one_round)[1]
    assert max_difference(plain, embedded_dp) > 1e-3  # clipping changed the mean: the check has teeth
    assert summary["flower"]["dp_clipping"] == "server"
    assert summary["privacy"]["epsilon"] == epsilon(TINY, 1.0, 1, default_delta(3))
    [round_] = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    assert round_["update_spread"] is None and round_["update_count"] == 3


def test_flower_dp_noise_has_std_z_c_over_m(one_round, embedded_dp, tmp_path):
    """The noise Flower adds (NumPy's, so not bitwise the embedded engine's torch noise) has std ``z·C/m``: the
    difference to the noise-free clipped mean, over every element of the adapter."""
    z = 2.0
    summary, _ = run_local([*one_round, *dp(z)], tmp_path)
    noise = torch.cat([(final_state(tmp_path)[k] - embedded_dp[k]).flatten() for k in embedded_dp])
    expected = z * CLIP / 3
    assert float(noise.std()) == pytest.approx(expected, rel=6 / math.sqrt(2 * noise.numel()))
    assert float(noise.mean()) == pytest.approx(0.0, abs=6 * expected / math.sqrt(noise.numel()))
    assert summary["privacy"]["epsilon"] == pytest.approx(epsilon(z, 1.0, 1, default_delta(3)))


@pytest.mark.parametrize(
    ("settings", "wrapper"),
    [
        ({}, DifferentialPrivacyServerSideFixedClipping),
        ({"dp-clipping": "server"}, DifferentialPrivacyServerSideFixedClipping),
        ({"secagg": True}, DifferentialPrivacyClientSideFixedClipping),
    ],
)
def test_the_dp_wrapper_follows_the_settings(settings, wrapper):
    flower = from_run_config({"overrides": "methods=[fedit] privacy.noise_multiplier=0.5 privacy.clip_norm=0.3", **settings})
    strategy = privatized(object(), flower)
    assert isinstance(strategy, wrapper)
    assert (strategy.noise_multiplier, strategy.clipping_norm, strategy.num_sampled_clients) == (0.5, 0.3, 6)


def test_adaptive_dp_uses_flowers_adaptive_wrapper_with_the_configured_quantile_and_rate():
    sets = "methods=[fedit] data.num_clients=20 privacy.noise_multiplier=0.5 privacy.adaptive=true privacy.clip_lr=0.1"
    strategy = privatized(object(), from_run_config({"overrides": sets}))
    assert isinstance(strategy, DifferentialPrivacyServerSideAdaptiveClipping)
    assert (strategy.clipping_norm, strategy.target_clipped_quantile, strategy.clip_norm_lr) == (1.0, 0.5, 0.1)
    assert strategy.clipped_count_stddev == 20 / 20


def test_secagg_aggregate_equals_the_plain_one_within_quantization(one_round, tmp_path):
    """Three clients, one round through Flower's SecAggPlusWorkflow and secaggplus_mod: the server's train
    replies carry no adapter (only SecAgg+'s records), and the aggregate equals plain FedAvg's (weighted by
    n_k) within SecAgg's quantization. The server sees no single update, so it records no update spread."""
    plain, _ = run_local(one_round, tmp_path / "plain")
    summary, _ = run_local(one_round, tmp_path / "secagg", secagg=True)
    n_train = [c["n_train"] for c in summary["flower"]["clients"].values()]
    difference = max_difference(final_state(tmp_path / "secagg"), final_state(tmp_path / "plain"))
    assert 0 < difference <= quantization_bound({}, n_train)
    messages = [json.loads(line) for line in (tmp_path / "secagg" / "messages.jsonl").read_text().splitlines()]
    up = [m for m in messages if m["phase"] == "train" and m["direction"] == "up"]
    assert len(up) == 4 * 3  # four SecAgg+ stages, three clients
    assert all(m["records"]["arrays"] == {} or set(m["records"]["arrays"]) == {"fitres.parameters"} for m in up)
    assert all(m["records"]["arrays"].get("fitres.parameters", []) == [] for m in up)  # emptied by secaggplus_mod
    [round_] = [json.loads(line) for line in (tmp_path / "secagg" / "rounds.jsonl").read_text().splitlines()]
    assert round_["aggregated"] == ["client_00", "client_01", "client_02"] and round_["bytes_up"] > 0
    assert round_["update_spread"] is None
    [plain_round] = [json.loads(line) for line in (tmp_path / "plain" / "rounds.jsonl").read_text().splitlines()]
    assert plain_round["update_spread"] > 0


def test_secagg_with_dp_clips_on_the_clients_as_the_embedded_dp_fedavg(one_round, embedded_dp, tmp_path):
    """SecAgg+ and DP: Flower's fixedclipping_mod clips each update on its client, the workflow sums them with
    equal weights, the client-side wrapper adds the noise: the embedded DPFedAvg's adapter within quantization."""
    summary, _ = run_local([*one_round, *dp(TINY)], tmp_path, secagg=True)
    assert summary["flower"]["dp_clipping"] == "client"
    assert max_difference(final_state(tmp_path), embedded_dp) <= quantization_bound({}, [1, 1, 1])


def test_secagg_round_completes_when_a_client_drops_mid_round(one_round, tmp_path):
    """Node 2 answers SecAgg+'s setup and share-keys stages, then is gone before it uploads its masked vector:
    its masks are rebuilt from the two others' shares (threshold 2), and the aggregate equals plain FedAvg of
    the two survivors (node 2 gone from the start) within quantization."""
    summary, _ = run_local(one_round, tmp_path / "secagg", lost={NODE0 + 2: 3}, secagg=True)
    [round_] = [json.loads(line) for line in (tmp_path / "secagg" / "rounds.jsonl").read_text().splitlines()]
    assert round_["clients"] == ["client_00", "client_01", "client_02"]
    assert round_["aggregated"] == ["client_00", "client_01"] and round_["missing"] == ["client_02"]
    run_local(one_round, tmp_path / "plain", lost={NODE0 + 2: 1})
    n_train = [summary["flower"]["clients"][c]["n_train"] for c in ("client_00", "client_01")]
    difference = max_difference(final_state(tmp_path / "secagg"), final_state(tmp_path / "plain"))
    assert difference <= quantization_bound({}, n_train)


def test_fewer_clients_than_the_threshold_stop_the_round_with_an_error_naming_the_key(one_round, tmp_path):
    with pytest.raises(FederationError, match=r"round 1: SecAgg\+ halted: .*secagg-reconstruction-threshold=3"):
        run_local(one_round, tmp_path, lost={NODE0 + 2: 3}, secagg=True, **{"secagg-reconstruction-threshold": 3})


@pytest.mark.parametrize(
    ("extra", "settings", "key"),
    [
        ([], {"secagg-reconstruction-threshold": 4}, "secagg-reconstruction-threshold=4 exceeds the 3 clients"),
        (["fed.payload_dtype=int8"], {}, "fed.payload_dtype=int8 cannot combine with secagg"),
        (["fed.aggregation=product"], {}, "fed.aggregation=product cannot combine with secagg"),
        ([*dp(1.0), "data.num_clients=30"], {"dp-clipping": "server"}, "dp-clipping=server cannot combine with secagg"),
        ([*dp(1.0), "privacy.adaptive=true", "data.num_clients=30"], {}, "privacy.adaptive=true cannot combine"),
        (["data.num_clients=2"], {}, "secagg needs at least 3 sampled clients"),
        ([], {"secagg-num-shares": 2}, "secagg-num-shares must be an integer > 2"),
        ([], {"secagg-clipping-range": 0.0}, "secagg-clipping-range must be a finite number > 0"),
    ],
)
def test_settings_flower_cannot_combine_are_one_line_errors_and_nothing_is_written(
    one_round, tmp_path, extra, settings, key
):
    with pytest.raises(ConfigError, match=key) as err:
        run_local([*one_round, *extra], tmp_path / "out", secagg=True, **settings)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_client_side_clipping_without_secagg_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="dp-clipping=client needs secagg=true"):
        from_run_config({"overrides": "methods=[fedit] privacy.noise_multiplier=1", "dp-clipping": "client"})


def test_a_malformed_upload_under_server_side_dp_is_rejected_before_flowers_clipping(one_round, tmp_path):
    """Flower's server-side DP wrapper clips each reply against the global adapter before the strategy's checks:
    an upload of the wrong shape must be screened out first (named, as without DP), not crash the server."""

    def wrong_shape(msg: Message, context: Context, call_next: Callable) -> Message:
        reply = call_next(msg, context)
        if msg.metadata.message_type == "train" and context.node_config["partition-id"] == 2:
            first = next(iter(reply.content["fed"]))
            reply.content["fed"][first] = Array(torch.zeros((2, 2)))
        return reply

    summary, _ = run_local([*one_round, *dp(TINY)], tmp_path, mods=[wrong_shape], **{"min-train-nodes": 2})
    [round_] = [json.loads(line) for line in (tmp_path / "rounds.jsonl").read_text().splitlines()]
    [rejected] = round_["errors"]
    assert rejected["client"] == "client_02" and "shape" in rejected["reason"]
    assert round_["aggregated"] == ["client_00", "client_01"]
    assert summary["privacy"]["epsilon"] == pytest.approx(epsilon(TINY, 1.0, 1, 1e-5))  # 3 of 3 sampled, 1 round
