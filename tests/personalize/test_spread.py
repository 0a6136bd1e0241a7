"""Issue 21's `spread` estimator: v_F from the spread of the clients' last-round updates, v_L by moments."""

from __future__ import annotations

import pytest

from potara import config, engine
from potara.merge.spread import UpdateSpread
from potara.merge.taskvec import extra_keys, lora_modules
from potara.methods import build
from potara.personalize.estimators import heldout, spread
from potara.personalize.session import ClientSession, Timers


@pytest.fixture(scope="module")
def tiny(random_pair):
    """The tiny model, its clients' splits, and two random adapters standing in for τ_F and τ_L."""
    return random_pair


def session_of(tiny, sent: UpdateSpread | None) -> ClientSession:
    return ClientSession(tiny.model, tiny.clients[0], tiny.fed, tiny.pretrained, engine.session_settings(tiny.cfg),
                         Timers(), local=tiny.local, spread=sent)


def distance(tiny) -> float:
    """``‖τ_F − τ_L‖²`` by hand: ``scale·(B_F A_F − B_L A_L)`` per LoRA module, the plain difference elsewhere."""
    fed, loc, scale = tiny.fed, tiny.local, tiny.cfg.lora.alpha / tiny.cfg.lora.r
    total = sum(float((scale * (fed[m + ".lora_B.weight"] @ fed[m + ".lora_A.weight"]
                                - loc[m + ".lora_B.weight"] @ loc[m + ".lora_A.weight"])).pow(2).sum())
                for m in lora_modules(fed))
    return total + sum(float((fed[k] - loc[k]).pow(2).sum()) for k in extra_keys(fed))


def test_mean_scale_takes_v_fed_as_the_spread_over_m(tiny):
    """s² = m·d/3 ⇒ v_F = d/3, v_L = d − d/3 ⇒ λ = 2/3."""
    d, m = distance(tiny), 4
    est = spread(session_of(tiny, UpdateSpread(m * d / 3, m)), scale="mean")
    assert est.v_fed == pytest.approx(d / 3, rel=1e-6) and est.v_local == pytest.approx(2 * d / 3, rel=1e-6)
    assert est.lam == pytest.approx(2 / 3, rel=1e-6) and est.note == ""


def test_client_scale_takes_v_fed_as_the_spread_itself(tiny):
    """s² = d/4 ⇒ v_F = d/4, v_L = 3d/4 ⇒ λ = 3/4, whatever m."""
    d = distance(tiny)
    est = spread(session_of(tiny, UpdateSpread(d / 4, 5)), scale="client")
    assert est.lam == pytest.approx(0.75, rel=1e-6)


def test_a_spread_beyond_the_distance_leaves_v_local_at_epsilon(tiny):
    est = spread(session_of(tiny, UpdateSpread(2 * distance(tiny), 2)), scale="client")
    assert est.v_local == pytest.approx(1e-12) and est.lam == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("sent, why", [(None, "no update spread"), (UpdateSpread(0.0, 1), "update spread of 1 update")])
def test_without_a_usable_spread_it_is_heldout_with_a_note(tiny, sent, why):
    est, fallback = spread(session_of(tiny, sent)), heldout(session_of(tiny, None))
    assert est.lam == pytest.approx(fallback.lam) and est.v_fed == pytest.approx(fallback.v_fed)
    assert est.note.startswith(f"{why}") and "used heldout" in est.note


def test_it_costs_no_training_and_no_forward_pass(tiny):
    """The method's lambda_cost, as the engine charges it: zero example passes (heldout, beside it, has some)."""
    session = session_of(tiny, UpdateSpread(distance(tiny), 3))
    with session.meter.attached(tiny.model):
        session.begin()
        build("potara_spread", tiny.cfg).personalize(session)
        spent = session.charge()
        session.begin()
        build("potara_heldout", tiny.cfg).personalize(session)
        spent_heldout = session.charge()
    assert (spent.train_passes, spent.forward_passes) == (0, 0)
    assert spent_heldout.forward_passes > 0


def test_the_client_scale_works_as_a_variant_and_the_method_reads_the_spread(tiny):
    d = distance(tiny)
    session = session_of(tiny, UpdateSpread(d / 4, 5))
    variant = build("potara_spread@potara.spread_scale=client", tiny.cfg)
    plain = build("potara_spread", tiny.cfg)
    assert variant.personalize(session).lam == pytest.approx(0.75, rel=1e-6)
    assert plain.personalize(session).lam == pytest.approx((d - d / 20) / d, rel=1e-6)  # mean: v_F = d/20
    assert variant.needs_spread and plain.needs_spread and not build("potara_folds", tiny.cfg).needs_spread


def test_a_bad_spread_scale_is_a_one_line_config_error():
    with pytest.raises(config.ConfigError, match=r"^potara.spread_scale must be one of mean, client, got 'median'$"):
        config.load(None, ["potara.spread_scale=median"])
    assert config.load(None, ["potara.estimator=spread"]).potara.spread_scale == "mean"
