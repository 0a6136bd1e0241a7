"""Issue 21's opt-in mechanisms: label-prior correction, a λ for the head and one for the LoRA, a safety rule."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from potara import config, engine
from potara.methods import build
from potara.models.adapters import get_state
from potara.personalize.prior import log_prior_shift, prior_corrected
from potara.personalize.session import ClientSession, ClientSplits, Timers

HEAD_WEIGHT, HEAD_BIAS = "base_model.model.classifier.weight", "base_model.model.classifier.bias"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, synthetic_csv):
    """The tiny model, one client's splits (2 of 6 classes), and two random adapters standing in for τ_F and τ_L."""
    cfg = config.load(None, [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "model.max_length=16",
        "lora.r=2", "lora.alpha=4",
    ])
    fed_data = engine.load_federated_data(cfg)
    model = engine.load_peft_model(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    pretrained = get_state(model)
    g = torch.Generator().manual_seed(0)
    fed, local = ({k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in pretrained.items()} for _ in range(2))
    return SimpleNamespace(cfg=cfg, model=model, clients=engine.encode_clients(cfg, fed_data), fed=fed, local=local,
                           pretrained=pretrained)


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


def test_the_run_wide_setting_corrects_every_method_and_a_bad_value_is_a_config_error(tiny):
    cfg = config.load(None, ["potara.prior_correction=counts", "methods=[fedit,oracle_split]"])
    session = session_of(tiny)
    for spec in ("fedit", "oracle_split", "local"):
        assert build(spec, cfg).personalize(session).logits is not None, spec
    with pytest.raises(config.ConfigError, match="potara.prior_correction"):
        config.load(None, ["potara.prior_correction=yes"])
