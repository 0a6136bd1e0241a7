"""Settings no other test would miss: one tiny run with each changed, and what the run did read back by spies."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import torch

from potara import config, engine
from potara.federation import rounds as fed_rounds
from potara.federation.strategies import RunningProduct
from potara.merge.taskvec import LORA_B
from potara.models.adapters import get_state
from potara.personalize import session as session_module

CLIENTS, ROUNDS, STEPS = 4, 2, 3


class Counted:
    """A client's training data that counts the batches training draws from it."""

    def __init__(self, data) -> None:
        self.data, self.drawn = data, 0

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[dict]:
        for batch in self.data.batches(batch_size, generator):
            self.drawn += 1
            yield batch


@pytest.fixture(scope="module")
def spied(tiny_model_dir, synthetic_csv):
    """A run with ``fed.fraction=0.5`` of 4 clients, ``fed.aggregation=product``, ``fed.local_steps=3``,
    ``local.init=pretrained``, ``potara.fisher=kfac`` and ``potara.estimator=folds``, and what its client steps,
    aggregations, federated trainings, local trainings and Fisher passes saw."""
    seen = SimpleNamespace(clients=[], uploads=[], aggregations=0, fed_steps=[], local_starts=[], fishers=[])
    client_step, fed_train, aggregate = fed_rounds.client_step, fed_rounds.train, RunningProduct.result
    local_train, model_fisher = session_module.train, session_module.model_fisher

    def spy_client_step(model, client, *args, **kwargs):
        update = client_step(model, client, *args, **kwargs)
        seen.clients.append(client)
        seen.uploads.append(len(update.payload))
        return update

    def spy_fed_train(model, data, *args, **kwargs):
        counted = Counted(data)
        loss = fed_train(model, counted, *args, **kwargs)
        seen.fed_steps.append(counted.drawn)
        return loss

    def spy_aggregate(self):
        seen.aggregations += 1
        return aggregate(self)

    def spy_local_train(model, *args, **kwargs):
        seen.local_starts.append(get_state(model))
        return local_train(model, *args, **kwargs)

    def spy_fisher(*args, **kwargs):
        seen.fishers.append(model_fisher(*args, **kwargs))
        return seen.fishers[-1]

    cfg = config.load(None, [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", f"data.num_clients={CLIENTS}",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", f"fed.rounds={ROUNDS}",
        "local.epochs=1", "model.max_length=16", "lora.r=2", "lora.alpha=4", "potara.fisher_max_examples=8",
        "threads=1", "methods=fedit,potara,potara_folds", "potara.estimator=folds", "fed.fraction=0.5", "fed.aggregation=product",
        f"fed.local_steps={STEPS}", "local.init=pretrained", "potara.fisher=kfac",
    ])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fed_rounds, "client_step", spy_client_step)
        mp.setattr(fed_rounds, "train", spy_fed_train)
        mp.setattr(RunningProduct, "result", spy_aggregate)
        mp.setattr(session_module, "train", spy_local_train)
        mp.setattr(session_module, "model_fisher", spy_fisher)
        return cfg, engine.run(cfg), seen


def test_a_fraction_of_the_clients_trains_in_each_round(spied):
    """round(0.5 · 4) = 2 clients a round, the seeded sample, and only they train, upload and are recorded."""
    cfg, result, seen = spied
    names = [f"client_{i:02d}" for i in range(CLIENTS)]
    chosen = [fed_rounds.sample_clients(names, 0.5, cfg.seed, r) for r in range(1, ROUNDS + 1)]
    assert all(len(c) == 2 for c in chosen) and chosen[0] != chosen[1]
    assert seen.clients == [name for c in chosen for name in c]
    assert [r["clients"] for r in result.rounds] == chosen
    assert result.methods["fedit"].bytes_up == ROUNDS * 2 * seen.uploads[0]


def test_product_aggregation_aggregates_every_round(spied):
    _, _, seen = spied
    assert seen.aggregations == ROUNDS


def test_local_steps_bound_every_federated_training(spied):
    """3 optimizer steps per client and round, however many batches an epoch has (a 9-example client needs 3 epochs
    of one batch, a 32-example one stops inside its second epoch of two)."""
    _, _, seen = spied
    assert seen.fed_steps == [STEPS] * (ROUNDS * 2)


def test_local_adapters_start_from_the_pretrained_adapter(spied):
    """Every local training (the adapter on all data, and the two halves) starts with LoRA B = 0 (PEFT's init),
    not from the federated adapter, whose B trained."""
    _, _, seen = spied
    assert len(seen.local_starts) == 3 * CLIENTS
    assert all(not start[k].any() for start in seen.local_starts for k in start if k.endswith(LORA_B))


def test_kfac_fisher_is_factored_on_every_lora_module(spied):
    """Kronecker-factored: a pair (g, x) per LoRA module; the head stays dense. ``auto`` would be dense here."""
    _, _, seen = spied
    assert len(seen.fishers) == CLIENTS
    for metric in seen.fishers:
        lora = [v for k, v in metric.items() if "classifier" not in k]
        assert lora and all(isinstance(v, tuple) and len(v) == 2 for v in lora)
        assert all(isinstance(v, torch.Tensor) for k, v in metric.items() if "classifier" in k)


def test_potara_uses_the_configured_estimator(spied):
    _, result, _ = spied
    lams = [[r["lambda"] for r in result.methods[name].per_client] for name in ("potara", "potara_folds")]
    assert lams[0] == lams[1]
