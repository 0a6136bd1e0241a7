"""Issue 21's opt-in mechanisms: label-prior correction, a λ for the head and one for the LoRA, a safety rule."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from potara import config, engine
from potara.merge.mixing import complement, fit_three_points
from potara.merge.taskvec import lora_modules
from potara.methods import build
from potara.personalize.estimators import Estimate, heldout
from potara.personalize.prior import log_prior_shift, prior_corrected
from potara.personalize.safety import safe, unsure
from potara.personalize.session import ClientSession, ClientSplits, Timers

HEAD_WEIGHT, HEAD_BIAS = "base_model.model.classifier.weight", "base_model.model.classifier.bias"


@pytest.fixture(scope="module")
def tiny(random_pair):
    """The tiny model, one client's splits (2 of 6 classes), and two random adapters standing in for τ_F and τ_L."""
    return random_pair


def session_of(tiny, fed=None, splits: ClientSplits | None = None) -> ClientSession:
    return ClientSession(tiny.model, splits or tiny.clients[0], tiny.fed if fed is None else fed, tiny.pretrained,
                         engine.session_settings(tiny.cfg), Timers(), local=tiny.local)


def test_the_shift_is_the_log_ratio_of_add_one_counts_to_a_uniform_prior():
    shift = log_prior_shift(torch.tensor([0, 0, 0, 1]), 3)  # counts + 1 = 4, 2, 1 of 7
    expected = [math.log(4 / 7 * 3), math.log(2 / 7 * 3), math.log(1 / 7 * 3)]
    assert shift.tolist() == pytest.approx(expected)


def test_a_head_biased_toward_a_class_the_client_lacks_stops_predicting_it():
    """Hand case: three classes, the head leans 1.0 toward class 2, the client only has classes 0 and 1."""
    logits = torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.6, 1.0], [0.2, 0.1, 1.0]])
    train = SimpleNamespace(tensors={"labels": torch.tensor([0] * 5 + [1] * 5)})  # π_client = 6/13, 6/13, 1/13
    assert logits.argmax(-1).tolist() == [2, 2, 2]
    corrected = prior_corrected(lambda _: logits, train)(None)
    assert corrected.argmax(-1).tolist() == [0, 1, 0]  # log 6 − log 1 ≈ 1.79 outweighs the 1.0 lean


def test_a_corrected_method_shifts_its_own_logits_and_leaves_the_plain_one_alone(tiny):
    """``fedit@potara.prior_correction=counts``: FedIT's logits plus the client's shift; a federated head with a large
    bias toward a class the client lacks predicts it everywhere, corrected it predicts it nowhere."""
    split = tiny.clients[0]
    present = set(split.train.tensors["labels"].tolist())
    absent = next(c for c in range(6) if c not in present)
    fed = {k: v.clone() for k, v in tiny.fed.items()}
    fed[HEAD_WEIGHT] *= 0.01  # a head whose bias decides: +1 toward the absent class
    fed[HEAD_BIAS].zero_()[absent] = 1.0
    session = session_of(tiny, fed=fed)
    plain, corrected = (build(spec, tiny.cfg) for spec in ("fedit", "fedit@potara.prior_correction=counts"))
    assert plain.personalize(session).logits is None
    raw = session.predict_merged([fed], [1.0], split.test)
    assert (raw.argmax(-1) == absent).all()
    choice = corrected.personalize(session)
    shifted = choice.logits(split.test)
    assert torch.allclose(shifted, raw + log_prior_shift(split.train.tensors["labels"], raw.shape[-1]))
    assert not (shifted.argmax(-1) == absent).any() and "prior-corrected" in choice.note


def engine_order(session: ClientSession, method):
    """A method's choice and charge as the engine makes them: ``begin``, the choice (kept per name), ``charge``."""
    session.begin(method.local_init, method.merge_space)
    choice = session.choice(method.name, lambda: method.personalize(session))
    return choice, session.charge()


def test_a_corrected_variant_reuses_its_plain_methods_choice_and_is_charged_its_cost(tiny):
    """``ditto_posthoc`` then its corrected variant on one client: fine-tuned once (a fine-tuning no session
    cache keeps), the variant's logits are the plain model's shifted, and it is charged the training it reused."""
    session = session_of(tiny)
    plain, corrected = (build(spec, tiny.cfg) for spec in ("ditto_posthoc", "ditto_posthoc@potara.prior_correction=counts"))
    with session.meter.attached(tiny.model):
        first, plain_cost = engine_order(session, plain)
        trained = session.meter.train
        second, corrected_cost = engine_order(session, corrected)
        assert session.meter.train == trained > 0  # no second fine-tuning
    assert second.states is first.states and corrected_cost.train_passes == plain_cost.train_passes
    split = tiny.clients[0]
    raw = session.predict_merged(first.states, first.weights, split.test)
    shift = log_prior_shift(split.train.tensors["labels"], raw.shape[-1])
    assert torch.allclose(second.logits(split.test), raw + shift, atol=1e-5)


def test_under_the_run_wide_correction_a_corrected_variant_does_not_correct_twice(tiny):
    """Run-wide, the plain method is corrected already: its variant makes its own choice, corrected once."""
    cfg = config.load(None, ["potara.prior_correction=counts"])
    session = session_of(tiny)
    plain, variant = (build(spec, cfg) for spec in ("fedit", "fedit@potara.prior_correction=counts"))
    split = tiny.clients[0]
    (a, _), (b, _) = engine_order(session, plain), engine_order(session, variant)
    assert torch.allclose(a.logits(split.test), b.logits(split.test))


def test_the_run_wide_setting_corrects_every_method_and_a_bad_value_is_a_config_error(tiny):
    cfg = config.load(None, ["potara.prior_correction=counts", "methods=[fedit,oracle_split]"])
    session = session_of(tiny)
    for spec in ("fedit", "oracle_split", "local"):
        assert build(spec, cfg).personalize(session).logits is not None, spec
    with pytest.raises(config.ConfigError, match="potara.prior_correction"):
        config.load(None, ["potara.prior_correction=yes"])


def test_head_lora_fits_the_head_at_the_joint_lambda_then_the_lora_at_the_head_lambda(tiny):
    """The two coordinate fits, recomputed by hand from the validation losses of the merges they name; the federated
    head is the local one plus large noise, so the head leans local where the LoRA modules lean federated."""
    g = torch.Generator().manual_seed(3)
    fed = {k: (tiny.local[k] + 2.0 * torch.randn(v.shape, generator=g)) if "classifier" in k else v
           for k, v in tiny.fed.items()}
    session = session_of(tiny, fed=fed)
    val = session.split("val")
    head = ["base_model.model.classifier"]
    lora = lora_modules(fed)

    def loss(lam_head: float, lam_lora: float) -> float:
        return session.fed_local_eval({**dict.fromkeys(lora, lam_lora), **dict.fromkeys(head, lam_head)}, val).loss

    joint = heldout(session).lam
    lam_head = fit_three_points(*(loss(x, joint) for x in (0.0, 0.5, 1.0))).lam
    lam_lora = fit_three_points(*(loss(lam_head, x) for x in (0.0, 0.5, 1.0))).lam
    est = heldout(session, granularity="head_lora")
    assert est.lam == {**dict.fromkeys(lora, lam_lora), **dict.fromkeys(head, lam_head)}
    assert lam_head != lam_lora  # the two parts did get their own weights on this client
    merged = session.merged([fed, tiny.local], [est.lam, complement(est.lam)])
    bias = "base_model.model.classifier.bias"
    assert torch.allclose(merged[bias], lam_head * fed[bias] + (1 - lam_head) * tiny.local[bias])


def test_head_lora_is_a_variant_of_potara_and_the_default_is_one_lambda(tiny):
    session = session_of(tiny)
    plain = build("potara", tiny.cfg).personalize(session)
    split = build("potara@potara.granularity=head_lora", tiny.cfg).personalize(session)
    assert isinstance(plain.lam, float) and isinstance(split.lam, dict) and "head λ" in split.note


@pytest.mark.parametrize("losses,n_val,reason", [
    ((1.0, 0.5, 0.8), 20, ""),  # curvature 4(1 − 1 + 0.8) = 3.2 > 0 and enough examples: the estimate stands
    ((1.0, 0.9, 0.7), 20, "curvature"),  # 4(1 − 1.8 + 0.7) = −0.4
    ((1.0, 0.5, 0.8), 5, "5 validation examples < 10"),
])
def test_unsure_by_hand(losses, n_val, reason):
    found = unsure(*losses, n_val, 10)
    assert (reason in found and bool(found)) if reason else found == ""


def test_the_safety_rule_takes_the_parent_with_the_lower_validation_loss(tiny):
    """Three validation examples (< 10): whatever the estimate, the parent whose loss on them is lower, computed
    here from the two parents alone; with the rule off (the default) potara's λ is the estimator's."""
    split = tiny.clients[0]
    small = ClientSplits(split.name, split.train, split.val.subset(torch.arange(3)), split.test)
    session = session_of(tiny, splits=small)
    f_local, f_fed = (session.evaluate([state], [1.0], small.val).loss for state in (tiny.local, tiny.fed))
    expected = 1.0 if f_fed < f_local else 0.0
    guarded = safe(session, Estimate(0.42), min_val=10)
    assert guarded.lam == expected and "safety: 3 validation examples < 10" in guarded.note
    f = [session.fed_local_eval(lam, small.val).loss for lam in (0.0, 0.5, 1.0)]
    curved = not unsure(*f, 3, 3)  # enough examples: only the curvature decides
    assert safe(session, Estimate(0.42), min_val=3).lam == (0.42 if curved else expected)
    plain = build("potara", tiny.cfg).personalize(session)
    variant = build("potara@potara.safety=val_loss", tiny.cfg).personalize(session)
    assert variant.lam == expected and plain.lam == heldout(session).lam


def test_the_mechanisms_run_as_variants_beside_methods_they_leave_unchanged(tiny_overrides):
    """One tiny run with every mechanism as a variant: the plain methods' rows are those of a run without them."""
    base = [*tiny_overrides, "threads=1", "potara.estimator=heldout"]
    variants = ["potara@potara.granularity=head_lora", "potara@potara.safety=val_loss",
                "fedit_ft@potara.prior_correction=counts", "potara@potara.prior_correction=counts"]
    mixed = engine.run(config.load(None, [*base, f"methods=potara,fedit_ft,{','.join(variants)}"])).methods
    alone = engine.run(config.load(None, [*base, "methods=potara,fedit_ft"])).methods
    for name in ("potara", "fedit_ft"):
        assert [(r["lambda"], r["acc"]) for r in mixed[name].per_client] == \
            [(r["lambda"], r["acc"]) for r in alone[name].per_client]
    assert all(isinstance(r["lambda"], dict) for r in mixed[variants[0]].per_client)
    assert [r["lambda"] for r in mixed[variants[3]].per_client] == [r["lambda"] for r in alone["potara"].per_client]
    assert all("prior-corrected" in r["note"] for r in mixed[variants[2]].per_client)
