"""Method names and variants: ``name@key=value`` sets method-only keys for one method of a sweep."""

from __future__ import annotations

import pytest

from potara import config
from potara.config import ConfigError
from potara.federation.recipes import FEDIT
from potara.methods import resolve


def methods(*names: str):
    return resolve(config.load(None, [f"methods=[{','.join(names)}]"]))


def test_a_variant_is_named_by_its_spec_and_sets_its_key_for_itself_alone():
    plain, low, ditto, ditto_strong = methods(
        "fixed", "fixed@peers.fixed_lambda=0.3", "ditto", "ditto@peers.ditto_mu=5.0"
    )
    assert (plain.name, low.name) == ("fixed", "fixed@peers.fixed_lambda=0.3")
    assert plain.federation is FEDIT and low.federation is FEDIT  # the sweep shares FedIT's federation
    assert (ditto.federation.mu, ditto_strong.federation.mu) == (config.PeersConfig().ditto_mu, 5.0)
    assert ditto.federation.name == "ditto" and ditto_strong.federation.name == "ditto@peers.ditto_mu=5.0"


def test_a_fedit_variant_shares_fedits_federation():
    """Its keys are personalization keys (the label-prior correction): FedIT's rounds do not depend on them."""
    plain, corrected = methods("fedit", "fedit@potara.prior_correction=counts")
    assert plain.federation is FEDIT and corrected.federation is FEDIT and corrected.name != plain.name


def test_a_peers_post_hoc_variant_shares_its_federation_a_tuning_variant_has_its_own():
    """The label-prior correction changes the chosen model's logits, not what Ditto's rounds train: one federation
    for both; μ changes the rounds: a federation of its own."""
    plain, corrected, strong, fedsa, fedsa_corrected = methods(
        "ditto", "ditto@potara.prior_correction=counts", "ditto@peers.ditto_mu=5.0", "fedsa_lora",
        "fedsa_lora@potara.prior_correction=counts",
    )
    assert corrected.federation is plain.federation and fedsa_corrected.federation is fedsa.federation
    assert strong.federation is not plain.federation and strong.federation.name == "ditto@peers.ditto_mu=5.0"
    alone, = methods("ditto@potara.prior_correction=counts")
    assert alone.federation.name == "ditto"
    tuned, tuned_corrected = methods("ditto@peers.ditto_mu=5.0", "ditto@peers.ditto_mu=5.0@potara.prior_correction=counts")
    assert tuned_corrected.federation is tuned.federation and tuned.federation.name == "ditto@peers.ditto_mu=5.0"


def test_a_potara_variant_takes_its_estimator_and_exports_nothing(monkeypatch):
    import potara.methods.potara as potara_method

    built = []
    real = potara_method.configured
    monkeypatch.setattr(potara_method, "configured", lambda name, cfg: built.append(name) or real(name, cfg))
    plain, variant = methods("potara", "potara@potara.estimator=folds")
    assert built == [config.PotaraSettings().estimator, "folds"] and "folds" != config.PotaraSettings().estimator
    assert variant.estimates_lambda and variant.name == "potara@potara.estimator=folds"
    assert plain.exports and not variant.exports  # adapters/<client>/ is the plain method's merge alone


def test_a_method_named_twice_is_a_clear_error():
    with pytest.raises(ConfigError, match="names 'potara' more than once"):
        methods("potara", "fedit", "potara")


@pytest.mark.parametrize("spec,message", [
    ("fixed@fed.rounds=3", "not a method-only key"),
    ("fixed@local.lr=0.1", "not a method-only key"),
    ("fixed@peers.fixed_lambda=2", "peers.fixed_lambda must be in [0, 1]"),
    ("nosuch@peers.ditto_mu=1", "unknown method 'nosuch@peers.ditto_mu=1'"),
])
def test_bad_variants_are_clear_errors(spec, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        methods(spec)
