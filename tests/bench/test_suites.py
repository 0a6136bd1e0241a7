"""The packaged dev and report suites: choices are made on dev, claims read on report, never the same seeds, and every
peer is tuned with at least Potara's care on every dev setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from potara import config
from potara.bench import suite as bench_suite
from potara.reporting.stats import MIN_CLUSTERS

READ_BEFORE = set(range(100, 105))  # report seeds already read (twice: docs/benchmarks.md#results)
PERSONALIZED_PEERS = ("ditto", "ditto_posthoc", "apfl", "feddpa", "fedsa_lora")
REFERENCES = ("local", "fedit", "fedit_ft", "fedit_ft_es", "fedit_ft_matched", "fixed", "ffa_lora")
BOUNDS = ("oracle_val", "oracle_split", "oracle_test")
# tuned peers that train something of their own: their family must include a learning-rate candidate
TRAINS = {"ditto": "peers.ditto_lr_scale", "ditto_posthoc": "peers.ditto_lr_scale", "apfl": "peers.apfl_lr_scale",
          "feddpa": "peers.feddpa_lr_scale", "ffa_lora": "peers.ffa_lora_lr_scale",
          "fedsa_lora": "peers.fedsa_lora_lr_scale"}


def base(method: str) -> str:
    return method.split("@")[0]


def test_report_seeds_are_new_and_enough():
    dev, report = bench_suite.load_suite("dev"), bench_suite.load_suite("report")
    assert not set(dev.seeds) & set(report.seeds)
    assert not READ_BEFORE & set(report.seeds), "a new report needs seeds never read before"
    assert len(report.seeds) >= 10


def test_report_has_a_setting_dev_does_not_have():
    dev, report = bench_suite.load_suite("dev"), bench_suite.load_suite("report")

    def regime(suite, setting):
        cfg = bench_suite.cell_config(suite, setting, suite.seeds[0])
        return (cfg.data.partition, cfg.data.alpha if cfg.data.partition == "dirichlet" else None,
                cfg.data.num_clients, tuple(cfg.data.train_sizes or ()), cfg.local.init, cfg.fed.rounds)
    dev_regimes = {regime(dev, s) for s in dev.settings}
    assert any(regime(report, s) not in dev_regimes for s in report.settings)


def test_every_cell_of_the_suites_is_a_valid_config():
    for name in ("dev", "report", "dev-defaults", "map", "map-check", "dev-mechanisms", "compression", "privacy",
                 "privacy-init"):
        bench_suite.check_cells(bench_suite.load_suite(name))


MAP_METHODS = {"local", "fedit", "fedit_ft", "fedit_ft_es", "fixed", "potara", "ditto_posthoc", "feddpa",
               "oracle_split", "oracle_test"}  # the report's two strongest peers: ditto_posthoc (μ 0.01) and FedDPA


def test_the_map_has_its_own_seeds_and_crosses_heterogeneity_with_client_size():
    dev, report, mapped = (bench_suite.load_suite(name) for name in ("dev", "report", "map"))
    assert len(mapped.seeds) >= MIN_CLUSTERS  # a cell's verdict needs 10 federations (issue 21 asks ≥ 8)
    assert not set(mapped.seeds) & (set(dev.seeds) | set(report.seeds) | READ_BEFORE)
    cells = set()
    for setting in mapped.settings:
        cfg = bench_suite.cell_config(mapped, setting, mapped.seeds[0])
        assert {base(m) for m in mapped.methods_of(setting)} == MAP_METHODS, setting
        assert cfg.data.train_sizes[0] == cfg.data.train_sizes[1], "one client size per cell"
        heterogeneity = (cfg.data.partition, cfg.data.alpha if cfg.data.partition != "iid" else None)
        cells.add((heterogeneity, round(cfg.data.train_sizes[0] * (1 - cfg.data.val_fraction))))
    expected = {(h, n) for h in (("dirichlet", 0.1), ("dirichlet", 1.0), ("iid", None), ("mixed", 0.1))
                for n in (16, 128)}
    assert cells == expected


def test_every_tuned_family_has_five_candidates_and_potara_no_more_than_any_peer(choose):
    knobs = choose.candidates(bench_suite.load_suite("dev").methods)
    sizes = {name.split(":")[0]: len(family) for name, family in knobs.items()}
    ours = sizes.pop("potara")
    assert ours >= 5 and all(n >= ours for n in sizes.values()), sizes  # a peer may get more care, never less
    assert set(PERSONALIZED_PEERS) <= set(sizes), "every personalized peer is tuned"


def test_every_peer_that_trains_has_its_learning_rate_among_its_candidates(choose):
    knobs = choose.candidates(bench_suite.load_suite("dev").methods)
    for name, family in knobs.items():
        method = name.split(":")[0]
        if method in TRAINS:
            assert TRAINS[method] in family[0].knob, f"{method}'s dev candidates never move its learning rate"


def test_every_dev_setting_runs_every_method():
    dev = bench_suite.load_suite("dev")
    assert len(dev.settings) >= 2 and len(dev.seeds) >= 3
    for setting in dev.settings:
        assert dev.methods_of(setting) == dev.methods, f"dev setting {setting} runs a subset of the methods"


def test_the_report_runs_every_personalized_peer_reference_and_bound_on_every_setting_it_compares():
    report = bench_suite.load_suite("report")
    compared = [s for s in report.settings if s not in report.compare]
    for setting in compared:
        names = {base(m) for m in report.methods_of(setting)}
        missing = set(PERSONALIZED_PEERS + REFERENCES + BOUNDS) - names
        assert not missing, f"report setting {setting} lacks {sorted(missing)}"


def test_report_clients_have_at_least_300_test_examples_and_no_honest_update_is_screened_off():
    report = bench_suite.load_suite("report")
    for setting in report.settings:
        cfg = bench_suite.cell_config(report, setting, report.seeds[0])
        assert cfg.data.test_size >= 300, setting
        assert cfg.validation.max_norm_ratio is not None, "the upload check stays on: it must pass honest updates"


def test_dev_and_report_share_the_pinned_training_defaults():
    """The keys a choice is made under on dev are those the report runs with."""
    dev, report = bench_suite.load_suite("dev"), bench_suite.load_suite("report")
    a = bench_suite.cell_config(dev, "classes", dev.seeds[0])
    b = bench_suite.cell_config(report, "classes", report.seeds[0])
    for part in ("lora", "fed", "local"):
        left, right = getattr(a, part).__dict__, getattr(b, part).__dict__
        keys = {"r", "alpha", "head_lr_scale", "lr", "batch_size", "local_epochs", "epochs", "init", "rounds"}
        assert {k: left[k] for k in keys & set(left)} == {k: right[k] for k in keys & set(right)}, part


def test_dev_mechanisms_runs_on_devs_own_federations_and_offers_each_mechanism_against_its_absence(choose):
    """Same seeds, settings and cell configs as dev (so its choices are dev's), and every family has the mechanism
    off among its candidates (a family without its baseline would choose among corrected variants only)."""
    dev, mech = bench_suite.load_suite("dev"), bench_suite.load_suite("dev-mechanisms")
    assert mech.seeds == dev.seeds and set(mech.settings) == set(dev.settings)
    for setting in dev.settings:
        ours, theirs = (bench_suite.cell_config(s, setting, dev.seeds[0]) for s in (mech, dev))
        assert ours.to_dict() | {"methods": None} == theirs.to_dict() | {"methods": None}, setting
    for family in choose.candidates(mech.methods).values():
        values = [c.method for c in family]
        against_heldout = values[0].startswith("potara_spread") and "potara_heldout@potara.prior_correction=none" in mech.methods
        assert any(v.endswith("=none") for v in values) or against_heldout, values


# each reads test accuracy on seeds of its own
CLAIM_SUITES = ("report", "map", "map-check", "compression", "privacy", "privacy-init")
# the claim suites beside the report: each runs with the report's frozen values, ten seeds a setting
BESIDE_REPORT = tuple(name for name in CLAIM_SUITES if name != "report")


def test_every_suite_that_reads_test_has_seeds_of_its_own_and_ten_per_setting_where_it_claims():
    dev = set(bench_suite.load_suite("dev").seeds)
    seen: set[int] = set(READ_BEFORE) | dev
    for name in CLAIM_SUITES:
        suite = bench_suite.load_suite(name)
        assert not set(suite.seeds) & seen, f"{name} reuses seeds already read"
        seen |= set(suite.seeds)
    for name in BESIDE_REPORT:
        assert len(bench_suite.load_suite(name).seeds) >= MIN_CLUSTERS, name


def test_the_map_compression_and_privacy_run_with_the_reports_frozen_values():
    """Their keys that the report freezes on dev (training, estimator, peers) are the report's."""
    report = bench_suite.cell_config(bench_suite.load_suite("report"), "classes", 200)
    for name in BESIDE_REPORT:
        suite = bench_suite.load_suite(name)
        cfg = bench_suite.cell_config(suite, next(iter(suite.settings)), suite.seeds[0])
        assert cfg.potara.estimator == report.potara.estimator, name
        peers = ("ditto_mu", "ditto_lr_scale", "fedsa_lora_lr_scale")
        peers += ("feddpa_weight_cap", "feddpa_lr_scale") if name.startswith("map") else ()
        assert [getattr(cfg.peers, k) for k in peers] == [getattr(report.peers, k) for k in peers], name
        for part in ("lora", "local"):
            assert getattr(cfg, part).__dict__ == getattr(report, part).__dict__, (name, part)
        assert (cfg.fed.lr, cfg.fed.local_epochs, cfg.fed.batch_size) == (
            report.fed.lr, report.fed.local_epochs, report.fed.batch_size), name


def test_the_map_check_differs_from_the_map_only_in_seeds_and_regimes():
    mapped, check = bench_suite.load_suite("map"), bench_suite.load_suite("map-check")
    assert check.methods == mapped.methods and check.overrides == mapped.overrides
    assert not set(check.settings) & set(mapped.settings) and set(check.grid) == set(check.settings)


def test_privacy_init_is_the_privacy_suites_z1_cell_with_a_pretrained_init_potara_beside_plain_potara():
    privacy, init = bench_suite.load_suite("privacy"), bench_suite.load_suite("privacy-init")
    assert init.overrides == privacy.overrides and init.settings["z1"] == {"privacy.noise_multiplier": 1.0}
    assert {"potara", "potara@local.init=pretrained", "local", "fedit_ft_es"} <= set(init.methods)


def test_the_privacy_suite_has_a_setting_at_epsilon_8_or_less_and_the_compression_suite_has_int8():
    from potara.reporting.privacy import epsilon, privacy_summary

    suite = bench_suite.load_suite("privacy")
    eps = {s: (privacy_summary(bench_suite.cell_config(suite, s, suite.seeds[0]).to_dict()) or {}).get("epsilon")
           for s in suite.settings}
    assert eps["z0"] is None and any(e is not None and e <= 8 for e in eps.values()), eps
    assert eps["z1"] == pytest.approx(epsilon(1.0, 0.3, 10, 1e-5)) and 7.75 < eps["z1"] < 7.85  # 30 of 100 a round
    assert bench_suite.cell_config(suite, "z0", 600).data.num_clients >= 100
    dtypes = {bench_suite.cell_config(bench_suite.load_suite("compression"), s, 500).fed.payload_dtype
              for s in ("fp32", "bf16", "fp16", "int8")}
    assert dtypes == {"fp32", "bf16", "fp16", "int8"}


CHOICES = Path(__file__).parents[2] / "benchmarks" / "results" / "dev-choices.json"


def effective(suite: bench_suite.Suite, setting: str, spec: str):
    """The config a method ``spec`` (``name`` or ``name@key=value…``) runs under in a suite's cell."""
    values = bench_suite.cell_config(suite, setting, suite.seeds[0]).to_dict()
    for item in spec.split("@")[1:]:
        config.apply_override(values, item)
    return config.from_dict(values)


def report_method(report: bench_suite.Suite, chosen: str) -> str:
    """The report's method for a dev family's winner: ``potara`` for an estimator, else the one of the same base
    (the plain one when there are two)."""
    if chosen.startswith("potara_"):
        return "potara"
    specs = [m for m in report.methods if base(m) == base(chosen)]
    return base(chosen) if base(chosen) in specs else specs[0]  # `fixed`, not the midpoint `fixed@…=0.5` beside it


def test_the_report_runs_every_peer_and_potara_with_the_values_dev_chose():
    """Each family's keys, as the dev winner ran them, are those the report's method runs with (in every setting
    that has it): the report is frozen on the complete dev suite (benchmarks/results/dev-choices.json)."""
    record = json.loads(CHOICES.read_text())
    assert record["suite"] == "dev" and not record["missing_cells"]
    dev, report = bench_suite.load_suite("dev"), bench_suite.load_suite("report")
    for family, choice in record["choices"].items():
        keys = choice["knob"].split(" + ")
        won = effective(dev, next(iter(dev.settings)), choice["method"])
        mine = report_method(report, choice["method"])
        for setting in (s for s in report.settings if mine in report.methods_of(s)):
            ran = effective(report, setting, mine)
            for key in keys:
                section, name = key.split(".")
                assert getattr(getattr(ran, section), name) == getattr(getattr(won, section), name), (family, key)
