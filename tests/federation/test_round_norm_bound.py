"""``validation.max_norm_ratio`` bounds an upload by the median norm of its round's uploads (it is on by default):
honest peers at a large learning rate pass it, an inflated upload among honest ones does not."""

from __future__ import annotations

from potara import config, engine
from potara.federation import rounds as fed_rounds
from potara.federation.update import ClientUpdate
from potara.models.adapters import deserialize, serialize

PEERS_AT_LR_SCALE_8 = ["peers.ffa_lora_lr_scale=8", "peers.fedsa_lora_lr_scale=8"]


def tiny_cfg(tiny_model_dir, synthetic_csv, *extra: str) -> config.RunConfig:
    return config.load(None, [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=10", "fed.rounds=2",
        "local.epochs=1", "model.max_length=16", "lora.r=2", "lora.alpha=4", "threads=1", "fed.eval_rounds=false",
        *extra,
    ])


def rejections(result) -> dict[str, dict]:
    """Every federation's rejected uploads by round (FedIT's under ``fedit``)."""
    found = {}
    for record in result.rounds:
        for name, entry in [("fedit", record), *((k, v) for k, v in record.items() if isinstance(v, dict))]:
            if entry.get("rejected"):
                found[f"{name} round {record['round']}"] = entry["rejected"]
    return found


def test_honest_peers_at_eight_times_their_lr_are_never_rejected(tiny_model_dir, synthetic_csv):
    cfg = tiny_cfg(tiny_model_dir, synthetic_csv, "methods=[fedit,ffa_lora,fedsa_lora,ditto]", *PEERS_AT_LR_SCALE_8)
    assert cfg.validation.max_norm_ratio == 10.0  # the default, on
    assert rejections(engine.run(cfg)) == {}


def test_one_inflated_upload_among_honest_ones_is_rejected(tiny_model_dir, synthetic_csv, monkeypatch):
    honest_step = fed_rounds.client_step

    def one_inflated(model, client, *args, **kwargs):
        update = honest_step(model, client, *args, **kwargs)
        if client != "client_01":
            return update
        inflated = {k: 30 * v for k, v in deserialize(update.payload, "test").items()}
        return ClientUpdate(client, serialize(inflated), update.n, update.train_loss, update.kept)

    monkeypatch.setattr(fed_rounds, "client_step", one_inflated)
    cfg = tiny_cfg(tiny_model_dir, synthetic_csv, "methods=[fedit,ffa_lora]", *PEERS_AT_LR_SCALE_8)
    found = rejections(engine.run(cfg))
    assert set(found) == {f"{name} round {r}" for name in ("fedit", "ffa_lora") for r in (1, 2)}
    for rejected in found.values():
        assert list(rejected) == ["client_01"] and "median norm" in rejected["client_01"]
