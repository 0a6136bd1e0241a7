"""Measured client compute: the pass meter, and each method charged for the work it used, shared or not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from potara import config, engine
from potara.training.cost import Cost, PassMeter


class Echo(nn.Module):
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return input_ids.float()


def test_meter_counts_training_and_forward_passes_and_not_when_paused_or_detached():
    model, meter = Echo(), PassMeter()
    with meter.attached(model):
        model(input_ids=torch.zeros(5, 3))
        with torch.no_grad():
            model(input_ids=torch.zeros(4, 3))
        with meter.paused():
            model(input_ids=torch.zeros(7, 3))
    model(input_ids=torch.zeros(9, 3))
    assert (meter.train, meter.forward) == (5, 4)


def test_paused_time_does_not_count():
    meter = PassMeter()
    before = meter.now()
    with meter.paused():
        torch.randn(400, 400) @ torch.randn(400, 400)
    assert (meter.now() - before).seconds < 0.05


def test_costs_add_and_subtract():
    total = Cost(1.0, 10, 3) + Cost(0.5, 2, 1) - Cost(0.5, 2, 1)
    assert total == Cost(1.0, 10, 3)


@pytest.fixture(scope="module")
def charged(tiny_model_dir, synthetic_csv):
    cfg = config.load(None, [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=2",
        "data.classes_per_client=2", "data.train_sizes=[12,20]", "data.test_size=10", "fed.rounds=1",
        "local.epochs=2", "local.batch_size=4", "model.max_length=16", "lora.r=2", "lora.alpha=4",
        "potara.fisher_max_examples=4", "potara.estimator=heldout", "threads=1",
        "methods=[fixed,fedit_ft,fedit_ft_matched,fedit_ft_matched@potara.estimator=crossfit,potara,potara_crossfit,"
        "local,fedit]",
    ])
    return cfg, engine.run(cfg)


def rows(result, name):
    return result.methods[name].per_client


def test_shared_local_adapter_is_charged_to_every_method_that_uses_it(charged):
    cfg, result = charged
    for fixed, ft in zip(rows(result, "fixed"), rows(result, "fedit_ft")):
        n = fixed["n_train"]
        assert ft["cost"]["train_passes"] == cfg.local.epochs * n  # trained once, by whichever ran first
        assert fixed["cost"]["train_passes"] == cfg.local.epochs * n
    assert all(r["cost"]["train_passes"] == 0 for r in rows(result, "fedit"))


@pytest.mark.parametrize("matched,potara", [
    ("fedit_ft_matched", "potara"), ("fedit_ft_matched@potara.estimator=crossfit", "potara_crossfit"),
])
def test_compute_matched_fedit_ft_trains_what_the_estimator_measurably_spent(charged, matched, potara):
    """Its training beyond fedit_ft's is the estimator's measured λ cost, a training pass = 3 forward passes,
    overshooting by less than one batch (nonzero for heldout: three forward passes over validation)."""
    cfg, result = charged
    for ft, tuned, chose in zip(rows(result, "fedit_ft"), rows(result, matched), rows(result, potara)):
        spent = chose["lambda_cost"]
        expected = spent["train_passes"] + round(spent["forward_passes"] / 3)
        extra = tuned["cost"]["train_passes"] - ft["cost"]["train_passes"]
        assert expected > 0 and 0 <= extra - expected < cfg.local.batch_size
        assert "lambda_cost" not in tuned


def test_every_row_has_validation_accuracy_and_methods_report_their_compute(charged):
    cfg, result = charged
    for name, m in result.methods.items():
        assert all(0.0 <= r["val_acc"] <= 1.0 for r in m.per_client)
        assert m.compute["train_passes"] >= 0
    fed_share = result.methods["fedit"].compute["train_passes"]
    assert fed_share == sum(r["n_train"] for r in rows(result, "fedit")) * cfg.fed.rounds / 2  # one epoch a round
    assert result.methods["local"].compute["train_passes"] == sum(
        cfg.local.epochs * r["n_train"] for r in rows(result, "local")) / 2
    assert set(result.timing["lambda_s"]) == {"potara", "potara_crossfit"}
