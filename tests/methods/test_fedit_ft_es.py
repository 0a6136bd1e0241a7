"""``fedit_ft_es``: fine-tuning from the federated adapter, the best epoch by validation kept (epoch 0 included)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from potara import config, engine
from potara.methods import fedit_ft_es
from potara.models.adapters import get_state, set_state
from potara.models.loading import load_peft_classifier
from potara.personalize.session import ClientSession, Timers, evaluate_split


@pytest.fixture(scope="module")
def tiny(tiny_model_dir, synthetic_csv):
    cfg = config.load(None, [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=2",
        "data.classes_per_client=2", "data.train_sizes=[12,20]", "data.test_size=10", "local.epochs=2",
        "local.lr=0.02", "model.max_length=16", "lora.r=2", "lora.alpha=4", "threads=1",
    ])
    torch.set_num_threads(1)
    fed_data = engine.load_federated_data(cfg)
    model = load_peft_classifier(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    return SimpleNamespace(cfg=cfg, model=model, clients=engine.encode_clients(cfg, fed_data), start=get_state(model))


def session_of(tiny, splits) -> ClientSession:
    return ClientSession(tiny.model, splits, tiny.start, tiny.start, engine.session_settings(tiny.cfg), Timers())


def test_the_kept_epoch_is_the_best_by_validation_from_epoch_zero(tiny):
    session = session_of(tiny, tiny.clients[1])
    budget = dataclasses.replace(session.settings.local_budget, epochs=4)
    stopped = fedit_ft_es.early_stopped(session, budget)
    assert len(stopped.scores) == 5  # epoch 0 (the federated adapter) and every epoch after
    best = max(range(5), key=lambda e: (stopped.scores[e][0], -stopped.scores[e][1]))
    assert stopped.epoch == best
    set_state(tiny.model, stopped.state)
    val = evaluate_split(tiny.model, session.split("val"), 64)
    assert (val.acc, val.loss) == pytest.approx(stopped.scores[best])


def test_an_empty_validation_split_falls_back_to_plain_fedit_ft(tiny):
    client = tiny.clients[0]
    splits = dataclasses.replace(client, val=client.val.subset(torch.arange(0)))
    session = session_of(tiny, splits)
    choice = fedit_ft_es.build(tiny.cfg).personalize(session)
    assert choice.note == "empty validation split: plain fedit_ft"
    assert choice.states[0] is session.local("federated")
