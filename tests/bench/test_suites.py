"""The packaged dev and report suites: choices are made on dev, claims read on report, never the same seeds."""

from __future__ import annotations

from potara.bench import suite as bench_suite


def test_report_seeds_never_appear_in_dev():
    dev, report = bench_suite.load_suite("dev"), bench_suite.load_suite("report")
    assert not set(dev.seeds) & set(report.seeds)
    assert len(report.seeds) >= 5


def test_report_has_a_setting_dev_does_not_have():
    dev, report = bench_suite.load_suite("dev"), bench_suite.load_suite("report")
    def regime(suite, setting):
        cfg = bench_suite.cell_config(suite, setting, suite.seeds[0])
        return (cfg.data.partition, cfg.data.alpha if cfg.data.partition == "dirichlet" else None,
                cfg.data.num_clients, tuple(cfg.data.train_sizes or ()), cfg.local.init, cfg.fed.rounds)
    dev_regimes = {regime(dev, s) for s in dev.settings}
    assert any(regime(report, s) not in dev_regimes for s in report.settings)


def test_every_cell_of_both_suites_is_a_valid_config():
    for name in ("dev", "report"):
        bench_suite.check_cells(bench_suite.load_suite(name))


def test_every_tuned_peer_gets_at_least_as_many_dev_candidates_as_potaras_estimator():
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("choose", Path(__file__).parents[2] / "benchmarks" / "choose.py")
    choose = importlib.util.module_from_spec(spec)
    sys.modules["choose"] = choose  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(choose)
    knobs = choose.candidates(bench_suite.load_suite("dev").methods)
    sizes = {name: len(family) for name, family in knobs.items()}
    ours = sizes.pop("potara: potara.estimator")
    assert ours >= 5 and all(n >= ours for n in sizes.values()), sizes  # a peer may get more care, never less
