"""A sweep suite's report: each method's change against the base setting, Potara's change beyond each method's
(a difference of differences, Holm-corrected), Potara's λ along the sweep, the figures, and the same numbers
regenerated from the committed CSVs alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from potara.bench import report as bench_report
from potara.bench import suite as bench_suite
from potara.config import ConfigError

SEEDS = list(range(10))
CLIENTS = [f"client_{k}" for k in range(4)]
DROP = {"potara": 0.01, "fedit_ft_es": 0.05, "fedit_ft": 0.05, "local": 0.0}  # what the noise costs each method, on average


def fake_cell(setting: str, seed: int, noisy: bool, config: dict) -> dict:
    """A cell whose methods lose ``DROP`` (plus a little seeded noise) under DP, Potara's λ falling by 0.3."""
    rng = np.random.default_rng(seed)
    methods = {}
    for name, drop in DROP.items():
        base = 0.5 + 0.1 * rng.random(len(CLIENTS))
        noise = 0.004 * rng.standard_normal(len(CLIENTS))  # drawn in every setting: the bases stay paired
        accs = base - (drop + noise if noisy and drop else 0.0)
        lam = 0.6 - 0.3 * noisy if name == "potara" else None
        methods[name] = {
            "mean_acc": float(accs.mean()), "worst_acc": float(accs.min()), "bytes_up": 1000.0 * (name != "local"),
            "bytes_down": 1000.0 * (name != "local"), "rounds": 2, "compute": {"train_passes": 10.0},
            "per_client": [{"client": c, "acc": float(a), "val_acc": 0.5, "n_test": 100, "correct": round(100 * a),
                            "n_train": 20, "lambda": lam, "cost": {"seconds": 0.1, "train_passes": 4}}
                           for c, a in zip(CLIENTS, accs)],
        }
    summary = {"config": config, "methods": methods,
               "timing": {"wall_s": 1.0, "federation_s": 0.5, "local_epoch_s": 0.1, "method_s": dict.fromkeys(DROP, 0.1)}}
    return {**summary, "privacy": {"epsilon": 4.1}} if noisy else summary


def write_sweep(out) -> bench_suite.Suite:
    suite = bench_suite.parse_suite({"seeds": SEEDS, "methods": list(DROP), "settings": {"z0": {}, "z1": {}},
                                     "compare": {"z1": "z0"}, "sweep": True}, "fake-privacy")
    for setting, noisy in (("z0", False), ("z1", True)):
        for seed in SEEDS:
            where = bench_suite.cell_dir(out, setting, seed)
            where.mkdir(parents=True)
            config = bench_suite.cell_config(suite, setting, seed).to_dict()
            (where / "summary.json").write_text(json.dumps(fake_cell(setting, seed, noisy, config)))
            (where / "rounds.jsonl").write_text("")
    return suite


def test_potara_losing_less_to_noise_is_a_corrected_win_and_its_lambda_falls(tmp_path):
    suite = write_sweep(tmp_path)
    report = bench_report.write_report(tmp_path, suite)
    numbers = json.loads((tmp_path / "report.json").read_text())["sweep"]["z1"]
    assert numbers["base"] == "z0"
    assert numbers["change"]["potara"]["mean"] == pytest.approx(-0.01, abs=0.003)
    assert numbers["change"]["fedit_ft_es"]["mean"] == pytest.approx(-0.05, abs=0.003)
    assert numbers["change"]["local"]["mean"] == 0 and numbers["change"]["local"]["clusters"] == 10
    beyond = numbers["potara_beyond"]
    assert beyond["fedit_ft_es"]["mean"] == pytest.approx(0.04, abs=0.003) and beyond["fedit_ft_es"]["verdict"] == "win"
    assert beyond["local"]["verdict"] == "loss"  # the noise costs Potara something, local nothing
    assert all(d["p_holm"] is not None for d in beyond.values())  # one Holm family: the other methods
    assert numbers["potara_lambda_change"]["mean"] == pytest.approx(-0.3)
    assert set(numbers["vs_reference_at_base"]) == set(DROP)  # each method at z1 against fedit_ft at z0
    assert numbers["bytes_up_ratio"] == {"potara": 1.0, "fedit_ft_es": 1.0, "fedit_ft": 1.0, "local": None}
    assert "## The sweep: each setting against its base" in report and "### `z1` − `z0`" in report
    assert "| z1 | 4.1 |" in report and "| z0 | – |" in report
    assert (tmp_path / "plots" / "sweep.accuracy.png").is_file() and (tmp_path / "plots" / "sweep.lambda.png").is_file()


def test_a_sweep_regenerates_from_its_csv_records_alone_epsilon_included(tmp_path):
    suite = write_sweep(tmp_path / "run")
    original = bench_report.write_report(tmp_path / "run", suite)
    again = bench_report.report_from_units(tmp_path / "run" / "fake-privacy-units.csv", suite, tmp_path / "again")
    assert again == original
    assert json.loads((tmp_path / "again" / "report.json").read_text())["sweep"] == json.loads(
        (tmp_path / "run" / "report.json").read_text())["sweep"]


def test_without_dp_the_sweep_plots_accuracy_against_bytes(tmp_path, monkeypatch):
    suite = write_sweep(tmp_path)
    for seed in SEEDS:  # no privacy block, a quarter of the upload bytes: a compression-like sweep
        path = bench_suite.cell_dir(tmp_path, "z1", seed) / "summary.json"
        cell = {k: v for k, v in json.loads(path.read_text()).items() if k != "privacy"}
        for row in cell["methods"].values():
            row["bytes_up"] *= 0.26
        path.write_text(json.dumps(cell))
    axes = []
    monkeypatch.setattr("potara.bench.sweep.save_png", lambda fig, path: axes.append((path.name, fig.axes[0])))
    bench_report.write_report(tmp_path, suite)
    (name, ax), _ = axes
    assert name == "sweep.accuracy.png" and ax.get_xscale() == "log" and "MB" in ax.get_xlabel()
    assert set(ax.get_legend_handles_labels()[1]) == {"potara", "fedit_ft_es", "fedit_ft"}  # local sends nothing
    numbers = json.loads((tmp_path / "report.json").read_text())["sweep"]["z1"]
    assert numbers["bytes_up_ratio"]["potara"] == pytest.approx(0.26) and numbers["bytes_up_ratio"]["local"] is None
    reference = numbers["vs_reference_at_base"]
    assert reference["fedit_ft"] == numbers["change"]["fedit_ft"]  # its own base is the reference


def test_sweep_needs_compare():
    with pytest.raises(ConfigError, match="'sweep' must be true or false, and true only with 'compare'"):
        bench_suite.parse_suite({"seeds": [0], "methods": ["potara"], "settings": {"a": {}}, "sweep": True}, "x")
