"""Client-level DP: the config's boundary checks, DP-FedAvg's math against Flower's, and the ε of the accountant."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from flwr.supercore.differential_privacy import compute_clip_model_update, compute_stdv

from potara import config
from potara.config import ConfigError, PrivacyConfig, RunConfig
from potara.federation.privacy import DPFedAvg, EqualWeightFedAvg, adaptive_noise_multiplier, privatized
from potara.federation.rounds import screening
from potara.federation.strategies import FedAvg
from potara.reporting.outputs import summary, table
from potara.reporting.privacy import default_delta, epsilon, privacy_summary
from potara.reporting.results import RunResult


def state(*values: float) -> dict[str, torch.Tensor]:
    """A two-tensor adapter: ``q.lora_A.weight`` (1 × 2) and a one-weight head."""
    return {"q.lora_A.weight": torch.tensor([list(values[:2])]), "head.weight": torch.tensor([values[2]])}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["privacy.noise_multiplier=-0.5"], "privacy.noise_multiplier must be >= 0"),
        (["privacy.noise_multiplier=1", "privacy.clip_norm=0"], "privacy.clip_norm must be > 0"),
        (["privacy.clip_norm=0"], "privacy.clip_norm must be > 0"),
        (["privacy.delta=1"], "privacy.delta must be in (0, 1)"),
        (["privacy.delta=0"], "privacy.delta must be in (0, 1)"),
        (["privacy.noise_multiplier=1", "fed.aggregation=product"], "needs fed.aggregation=factors"),
        (["privacy.noise_multiplier=1", "privacy.adaptive=true"], "too large for privacy.adaptive with 6 sampled"),
    ],
)
def test_bad_privacy_settings_are_one_line_errors_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        config.load(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_privacy_off_leaves_the_stored_config_as_it_was():
    """Stored configs (bench cells, checkpoints) of runs before the section existed still equal a default run's."""
    assert "privacy" not in RunConfig().to_dict()
    assert config.load(None, ["privacy.noise_multiplier=1"]).to_dict()["privacy"]["noise_multiplier"] == 1.0


def test_privacy_off_keeps_the_plain_strategy():
    plain = FedAvg()
    assert privatized(plain, PrivacyConfig(), 6) is plain


def test_clipping_and_noise_match_flowers_server_side_fixed_clipping():
    """Flower's ``compute_clip_model_update`` per upload, FedAvg with equal weights, noise std ``compute_stdv``."""
    current = state(1.0, 1.0, 0.0)
    uploads = [state(4.0, 5.0, 0.0), state(1.0, 1.5, 0.0), state(-2.0, 1.0, 4.0)]
    settings = PrivacyConfig(noise_multiplier=0.0, clip_norm=2.0)
    dp = DPFedAvg(settings, sampled=3)
    ours = dp.aggregate([(u, n) for u, n in zip(uploads, (1, 100, 7))], current)  # n must not matter
    expected = []
    for upload in uploads:
        arrays = [v.numpy().copy() for v in upload.values()]
        compute_clip_model_update(arrays, [v.numpy() for v in current.values()], clipping_norm=2.0)
        expected.append(arrays)
    for i, key in enumerate(current):
        assert ours[key].numpy() == pytest.approx(np.mean([e[i] for e in expected], axis=0), abs=1e-6)
    noisy = DPFedAvg(PrivacyConfig(noise_multiplier=1.5, clip_norm=2.0), sampled=3)
    assert noisy.noise_std() == pytest.approx(compute_stdv(1.5, 2.0, 3))


def test_a_rejected_upload_adds_zero_the_mean_stays_over_the_sampled_clients():
    """McMahan et al.'s fixed denominator: with 2 of 3 sampled uploads accepted the update is (Δ₁ + Δ₂)/3, not /2,
    so one client moves it by at most C/3 whoever else is rejected (the noise is z·C/3); Flower's path (the equal-
    weight sum beneath its wrapper) and its SecAgg+ path (each survivor's reply is the survivors' mean) agree."""
    current, first, second = state(1.0, 1.0, 0.0), state(2.0, 1.0, 1.0), state(1.0, 3.0, -1.0)
    dp = DPFedAvg(PrivacyConfig(noise_multiplier=0.0, clip_norm=100.0), sampled=3)
    ours = dp.aggregate([(first, 5), (second, 9)], current)
    expected = {k: current[k] + (first[k] - current[k] + second[k] - current[k]) / 3 for k in current}
    beneath_flower = EqualWeightFedAvg(3)
    survivors_mean = {k: (first[k] + second[k]) / 2 for k in current}
    for got in (ours, beneath_flower.aggregate([(first, 1), (second, 1)], current),
                beneath_flower.aggregate([(survivors_mean, 1), (survivors_mean, 1)], current)):
        for key in current:
            torch.testing.assert_close(got[key], expected[key])


def test_under_dp_no_upload_is_screened_against_the_others(caplog):
    limits = config.ValidationConfig()
    assert limits.max_norm_ratio == 10.0
    private = DPFedAvg(PrivacyConfig(noise_multiplier=1.0), sampled=3)
    with caplog.at_level("INFO"):
        assert screening(limits, private, "fp32", say=True).max_norm_ratio is None
    assert "validation.max_norm_ratio is off" in caplog.text
    assert screening(limits, FedAvg(), "int8").max_norm_ratio == 10.0
    assert screening(limits, EqualWeightFedAvg(3), "fp32").max_norm_ratio is None  # Flower's DP path


def test_noise_has_std_z_c_over_m_and_is_seeded_by_the_run_seed_and_release():
    settings, current = PrivacyConfig(noise_multiplier=2.0, clip_norm=0.5), {"w": torch.zeros(200_000)}
    dp, twin, other = DPFedAvg(settings, 4, seed=3), DPFedAvg(settings, 4, seed=3), DPFedAvg(settings, 4, seed=4)
    first = dp.aggregate([(current, 1)], current)["w"]
    assert torch.equal(first, twin.aggregate([(current, 1)], current)["w"])
    assert not torch.equal(first, other.aggregate([(current, 1)], current)["w"])
    assert not torch.equal(first, dp.aggregate([(current, 1)], current)["w"])  # the next release draws anew
    assert float(first.std()) == pytest.approx(2.0 * 0.5 / 4, rel=0.01)


def test_adaptive_clipping_moves_the_norm_toward_the_target_quantile_and_raises_the_noise():
    """Every update clipped (none within C): C grows by exp(0.2 · 0.5), up to the count's noise (std 1/20), as in
    Andrew et al. (Flower's wrapper would shrink it)."""
    settings = PrivacyConfig(noise_multiplier=0.5, clip_norm=0.1, adaptive=True)
    dp = DPFedAvg(settings, sampled=20)
    current = state(0.0, 0.0, 0.0)
    dp.aggregate([(state(5.0, 5.0, 5.0), 1) for _ in range(20)], current)
    assert 0.1 * np.exp(0.2 * 0.35) < dp.clip_norm < 0.1 * np.exp(0.2 * 0.65)
    assert dp.noise_multiplier == pytest.approx(adaptive_noise_multiplier(0.5, 1.0)) and dp.noise_multiplier > 0.5


def test_epsilon_matches_dp_accountings_own_gaussian_reference():
    """dp-accounting's rdp_privacy_accountant_test.test_compute_epsilon_delta_gaussian: z = 4.530877117 is exactly
    (1, 1e-6)-DP for one unsampled Gaussian release (there on a fine grid of orders; within 1e-3 on the default one)."""
    assert epsilon(4.530877117, 1.0, 1, 1e-6) == pytest.approx(1.0, abs=1e-3)


def test_epsilon_is_within_abadi_et_al_for_their_mnist_setting():
    """Abadi et al. 2016 ("Deep Learning with Differential Privacy", §5): q = 0.01, σ = 4, 10,000 steps, δ = 1e-5
    gives ε ≈ 1.26 with the moments accountant; RDP with the tighter conversion of dp-accounting gives 1.035."""
    eps = epsilon(4.0, 0.01, 10_000, 1e-5)
    assert eps == pytest.approx(1.035, abs=0.01) and eps < 1.26


def test_the_default_delta_sits_well_below_one_over_the_clients():
    """At δ ≥ 1/N publishing one random client's data would qualify: the default is min(1e-5, 1/N²)."""
    assert default_delta(6) == default_delta(316) == 1e-5 and default_delta(1000) == pytest.approx(1e-6)
    assert all(default_delta(n) <= 1 / n**2 for n in (1, 10, 100, 10_000))


def test_the_accountant_missing_is_a_clear_error_before_training(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "dp_accounting" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'potara\[privacy\]'"):
        config.load(None, ["privacy.noise_multiplier=1"])
    config.load(None, [])  # no DP: no accountant needed


def test_epsilon_is_accounted_at_the_rate_the_engines_sample():
    """6 clients at fed.fraction 0.1: one a round, a rate of 1/6 (ε 6.4 at z 1, 20 rounds), not 0.1 (ε 4.2)."""
    cfg = config.load(None, ["privacy.noise_multiplier=1", "fed.rounds=20", "fed.fraction=0.1"]).to_dict()
    block = privacy_summary(cfg)
    assert block["sampling_fraction"] == pytest.approx(1 / 6)
    assert block["epsilon"] == pytest.approx(epsilon(1.0, 1 / 6, 20, 1e-5)) and block["epsilon"] > epsilon(1.0, 0.1, 20, 1e-5)


def test_summary_has_epsilon_and_delta_and_the_table_shows_them():
    cfg = config.load(None, ["privacy.noise_multiplier=1", "fed.rounds=6"]).to_dict()
    block = privacy_summary(cfg)
    assert block["delta"] == 1e-5 and block["epsilon"] == pytest.approx(epsilon(1.0, 1.0, 6, 1e-5))
    timing = {"local_epoch_s": 0.0, "fisher_s": 0.0}
    out = summary(cfg, RunResult({}, [], timing))
    assert out["privacy"]["epsilon"] == block["epsilon"]
    assert f"ε = {block['epsilon']:.3g} at δ = 1e-05" in table(out)
    assert "privacy" not in summary(RunConfig().to_dict(), RunResult({}, [], timing))


def test_a_run_with_dp_reports_its_epsilon(tmp_path, tiny_overrides):
    """The embedded engine end to end with noise: the privacy block lands in summary.json."""
    from potara.cli.main import main

    out = tmp_path / "o"
    sets = [*tiny_overrides, "methods=fedit,potara", "fed.rounds=1", "privacy.noise_multiplier=0.8", "privacy.clip_norm=0.5"]
    assert main(["run", "--out", str(out), *[a for s in sets for a in ("--set", s)]]) == 0
    private = json.loads((out / "summary.json").read_text())["privacy"]
    assert private["epsilon"] == pytest.approx(epsilon(0.8, 1.0, 1, 1e-5)) and private["delta"] == 1e-5
