"""A grid suite's map: per cell Potara − the best other method and − FedIT + FT early-stopped, from the cell's Holm
family, a corrected win or loss marked; the worst clients' percentile; the heatmap."""

from __future__ import annotations

import json

import numpy as np
import pytest

from potara.bench import report as bench_report
from potara.bench import suite as bench_suite
from potara.config import ConfigError

SEEDS = list(range(10))
CLIENTS = [f"client_{k}" for k in range(5)]
# per cell, each method's edge over a common base: Potara wins clearly in "far", ties in "near"
EDGE = {"far": {"potara": 0.10, "potara@potara.safety=val_loss": 0.04, "fedit_ft_es": 0.02, "ditto": 0.04,
                "oracle_test": 0.2},
        "near": {"potara": 0.03, "potara@potara.safety=val_loss": 0.03, "fedit_ft_es": 0.03, "ditto": 0.03,
                 "oracle_test": 0.2}}


def fake_cell(setting: str, seed: int, config: dict) -> dict:
    rng = np.random.default_rng([seed, len(setting)])
    base = 0.4 + 0.2 * rng.random(len(CLIENTS))
    methods = {}
    for name, edge in EDGE[setting].items():
        accs = base + edge + 0.01 * rng.standard_normal(len(CLIENTS))
        methods[name] = {"mean_acc": float(accs.mean()), "worst_acc": float(accs.min()), "bytes_up": 0.0,
                         "bytes_down": 0.0, "rounds": 0, "compute": {"train_passes": 1.0},
                         "per_client": [{"client": c, "acc": float(a), "n_train": 16} for c, a in zip(CLIENTS, accs)]}
    skew = 0.7 if setting == "far" else 0.2
    federation = {"clients": {c: {"n_train": 16, "classes": 4, "label_skew": skew} for c in CLIENTS}}
    return {"config": config, "methods": methods, "federation": federation,
            "timing": {"wall_s": 1.0, "federation_s": 0.5, "local_epoch_s": 0.1, "method_s": {}}}


def write_map(out, raw_grid=None) -> bench_suite.Suite:
    grid = raw_grid or {"far": ["Dirichlet 0.1", 16], "near": ["IID", 16]}
    suite = bench_suite.parse_suite({"seeds": SEEDS, "methods": list(EDGE["far"]), "settings": dict.fromkeys(EDGE),
                                     "grid": grid}, "fake-map")
    for setting in EDGE:
        for seed in SEEDS:
            where = bench_suite.cell_dir(out, setting, seed)
            where.mkdir(parents=True)
            config = bench_suite.cell_config(suite, setting, seed).to_dict()
            (where / "summary.json").write_text(json.dumps(fake_cell(setting, seed, config)))
            (where / "rounds.jsonl").write_text("")
    return suite


def test_the_map_marks_a_corrected_win_against_the_best_other_method_and_ties_elsewhere(tmp_path):
    report = bench_report.write_report(tmp_path, write_map(tmp_path))
    numbers = json.loads((tmp_path / "report.json").read_text())["map"]
    far, near = numbers["far"], numbers["near"]
    assert far["best"] == "ditto" and far["row"] == "Dirichlet 0.1" and far["column"] == "16"
    potara, safe = far["potara"]["potara"], far["potara"]["potara@potara.safety=val_loss"]
    assert potara["vs_best"]["mean"] == pytest.approx(0.06, abs=0.01) and potara["vs_best"]["verdict"] == "win"
    assert potara["vs_best"]["p_holm"] is not None  # read from the variant's Holm family in the cell
    assert potara["vs_early_stopped"]["verdict"] == "win"
    assert safe["vs_best"]["mean"] == pytest.approx(0.0, abs=0.01) and safe["vs_early_stopped"]["verdict"] == "win"
    plain_near = near["potara"]["potara"]
    assert plain_near["vs_best"]["verdict"] == "tie" and plain_near["vs_early_stopped"]["verdict"] == "tie"
    assert potara["worst_clients"] > far["worst_clients"]["fedit_ft_es"]
    assert far["mean_label_skew"] == pytest.approx(0.7) and near["median_n_train"] == 16
    assert "## The map: where Potara wins" in report and "| far | Dirichlet 0.1 × 16 | 10 | 16 | 0.700 | potara | ditto |" in report
    assert "| **win** |" in report and (tmp_path / "plots" / "map.heatmap.png").is_file()


def test_the_map_regenerates_from_its_units_csv_label_skew_included(tmp_path):
    suite = write_map(tmp_path / "run")
    bench_report.write_report(tmp_path / "run", suite)
    bench_report.report_from_units(tmp_path / "run" / "fake-map-units.csv", suite, tmp_path / "again")
    maps = [json.loads((tmp_path / d / "report.json").read_text())["map"] for d in ("run", "again")]
    assert maps[0] == maps[1] and maps[1]["far"]["mean_label_skew"] == pytest.approx(0.7)


def test_a_grid_naming_an_unknown_setting_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="'grid' must map settings of the suite to \\[row, column\\]"):
        write_map(tmp_path, {"nowhere": ["IID", 16]})
