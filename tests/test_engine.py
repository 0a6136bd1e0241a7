"""A whole run on a tiny model: outputs, bytes, methods side by side, determinism."""

from __future__ import annotations

import json

import pytest

from potara import config, engine
from potara.methods import available
from potara.reporting import outputs

TINY_METHODS = ("methods=local,fedit,fedit_ft,fedit_ft_matched,fixed,oracle_val,oracle_test,oracle_split,potara,"
                "potara_module,potara_heldout,potara_folds,potara_cautious,potara_paper,fedit_ft_es")


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, synthetic_csv, tmp_path_factory):
    overrides = [
        f"model.name={tiny_model_dir}", f"data.source={synthetic_csv}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2",
        "local.epochs=2", "model.max_length=16", "lora.r=2", "lora.alpha=4", "potara.fisher_max_examples=8",
        "fed.eval_every=1", TINY_METHODS,
    ]
    cfg = config.load(None, overrides)
    out = tmp_path_factory.mktemp("run")
    result = engine.run(cfg, export_dir=out / "adapters")
    summary = outputs.summary(cfg.to_dict(), result)
    outputs.write_outputs(out, summary, result.rounds)
    return cfg, result, summary, out


def test_every_method_reports_in_the_documented_schema(tiny_run):
    cfg, _, summary, _ = tiny_run
    assert list(summary["methods"]) == cfg.methods
    for name, m in summary["methods"].items():
        assert 0.0 <= m["mean_acc"] <= 1.0 and m["worst_acc"] <= m["mean_acc"]
        assert len(m["per_client"]) == 3
        for row in m["per_client"]:
            assert set(row) >= {"client", "n_train", "acc", "lambda"}
    assert set(summary["timing"]) >= {"local_epoch_s", "fisher_s", "train_s", "method_s", "lambda_s"}


def test_bytes_are_measured_and_potara_adds_none(tiny_run):
    _, result, summary, _ = tiny_run
    m = summary["methods"]
    assert m["potara"]["bytes_up"] == m["fedit"]["bytes_up"] > 0
    assert m["potara"]["bytes_down"] == m["fedit"]["bytes_down"] > 0
    assert m["local"]["bytes_up"] == 0 and m["local"]["rounds"] == 0
    assert sum(r["bytes_up"] for r in result.rounds) == m["fedit"]["bytes_up"]


def test_oracle_test_bounds_every_grid_point_on_every_client(tiny_run):
    """Per client, ``oracle_test`` is the best test accuracy over ``potara.grid``; ``fixed`` (λ = ½), ``fedit_ft``
    (λ = 0, local.init federated) and ``fedit`` (λ = 1) are grid points scored on the same split, so none beats it.
    ``potara``'s λ can fall between grid points: no bound holds for it."""
    cfg, _, summary, _ = tiny_run
    m, grid = summary["methods"], cfg.potara.grid
    rows = zip(*(m[name]["per_client"] for name in ("oracle_test", "fixed", "fedit_ft", "fedit")))
    for oracle, *on_grid in rows:
        assert all(r["lambda"] in grid and oracle["acc"] >= r["acc"] for r in on_grid)
    assert all(r["lambda"] in grid for name in ("oracle_test", "oracle_val") for r in m[name]["per_client"])


def test_oracle_split_never_beats_oracle_test(tiny_run):
    """Each half scored by the λ picked on the other half: at most the accuracy of the λ picked on the first half
    over the whole split, which ``oracle_test`` bounds."""
    _, _, summary, _ = tiny_run
    m = summary["methods"]
    for split, test in zip(m["oracle_split"]["per_client"], m["oracle_test"]["per_client"]):
        assert split["acc"] <= test["acc"] + 1e-9
    assert m["oracle_split"]["bound"]


def test_outputs_on_disk(tiny_run):
    _, _, summary, out = tiny_run
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["methods"]["potara"]["mean_acc"] == pytest.approx(summary["methods"]["potara"]["mean_acc"])
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2]
    assert "methods" in rounds[0]  # personalized at an intermediate round (eval_every=1)
    assert (out / "accuracy_vs_bytes.png").stat().st_size > 1000
    assert (out / "lambda_vs_oracle.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "adapters").iterdir()) == ["client_00", "client_01", "client_02"]
    assert (out / "adapters" / "client_00" / "adapter_config.json").is_file()


def test_same_seed_same_numbers(tiny_run):
    cfg, result, _, _ = tiny_run
    again = engine.run(config.load(None, _overrides_of(cfg)))
    for name in ("fedit", "potara", "local"):
        assert [r["acc"] for r in again.methods[name].per_client] == [r["acc"] for r in result.methods[name].per_client]


def _overrides_of(cfg) -> list[str]:
    d = cfg.to_dict()
    return [
        f"model.name={d['model']['name']}", f"data.source={d['data']['source']}", "data.num_clients=3",
        "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2",
        "local.epochs=2", "model.max_length=16", "lora.r=2", "lora.alpha=4", "potara.fisher_max_examples=8",
        "fed.eval_every=1", TINY_METHODS,
    ]


def test_method_names_cover_every_estimator():
    names = set(available(config.RunConfig()))
    assert {"potara", "potara_module", "potara_heldout", "potara_crossfit", "potara_fisher", "potara_folds",
            "potara_cautious"} <= names


def test_potara_cautious_takes_the_more_local_of_folds_and_heldout(tiny_run):
    _, _, summary, _ = tiny_run
    rows = [summary["methods"][name]["per_client"] for name in ("potara_cautious", "potara_folds", "potara_heldout")]
    for cautious, fold, held in zip(*rows):
        assert cautious["lambda"] == min(fold["lambda"], held["lambda"])


def test_potara_module_gives_each_module_its_own_lambda_at_the_pooled_estimates_scale(tiny_run):
    """Per client: one λ per LoRA module; where the pooled (heldout) λ is an endpoint every module takes it,
    elsewhere the modules differ (the shape) and stay in [0, 1]."""
    _, result, _, _ = tiny_run
    pooled = {r["client"]: r["lambda"] for r in result.methods["potara"].per_client}
    spread = []
    for row in result.methods["potara_module"].per_client:
        lams = row["lambda"]
        assert isinstance(lams, dict) and lams and all(0.0 <= v <= 1.0 for v in lams.values())
        if pooled[row["client"]] in (0.0, 1.0):
            assert set(lams.values()) == {pooled[row["client"]]}
        else:
            spread.append(max(lams.values()) - min(lams.values()))
    assert spread and max(spread) > 0


def test_potara_module_refuses_an_estimate_that_is_already_per_module(monkeypatch):
    import potara.methods.potara as potara_method

    class Session:
        fed = local = None

        def split(self, name):
            return [0] * 5

    monkeypatch.setattr(potara_method, "configured", lambda name, cfg: lambda session: type(
        "Estimate", (), {"lam": {"a": 0.3}})())
    method = potara_method.build_module(config.load(None, []))
    with pytest.raises(ValueError, match="potara_module scales a pooled λ"):
        method.personalize(Session())


def test_a_peer_and_its_post_hoc_variant_are_personalized_from_one_federation(tiny_overrides):
    """Ditto's rounds run once for ``ditto`` and ``ditto@potara.prior_correction=counts`` (its logits alone change)."""
    cfg = config.load(None, [*tiny_overrides, "fed.rounds=1", "methods=[ditto,ditto@potara.prior_correction=counts]"])
    result = engine.run(cfg)
    plain, corrected = result.methods["ditto"], result.methods["ditto@potara.prior_correction=counts"]
    assert plain.federation == corrected.federation == "ditto" and plain.bytes_up == corrected.bytes_up > 0
    [record] = result.rounds
    assert "ditto" in record and not any(key.startswith("ditto@") for key in record)
    assert [r["acc"] for r in plain.per_client] != [r["acc"] for r in corrected.per_client]


def test_eval_clients_scores_a_seeded_subset_the_same_in_every_setting_of_a_seed(tiny_overrides):
    """``data.eval_clients``: the federation trains on every client, a seeded subset is personalized and scored,
    the same subset whatever else the setting changes (here the noise-free upload dtype)."""
    picked = []
    for dtype in ("fp32", "bf16"):
        cfg = config.load(None, [*tiny_overrides, "data.num_clients=4", "data.eval_clients=2",
                                 "methods=[local,fedit,potara]", f"fed.payload_dtype={dtype}"])
        result = engine.run(cfg)
        assert {len(m.per_client) for m in result.methods.values()} == {2}
        assert len(result.rounds[0]["clients"]) == 4  # every client still trains
        picked.append([row["client"] for row in result.methods["potara"].per_client])
    assert picked[0] == picked[1]
    assert engine.evaluated_clients(list(range(4)), None, 0) == [0, 1, 2, 3]


def test_eval_clients_above_the_federation_is_a_config_error():
    with pytest.raises(config.ConfigError, match=r"data.eval_clients \(7\) must be at most data.num_clients \(6\)"):
        config.load(None, ["data.eval_clients=7"])
