"""benchmarks/choose.py on tiny fake dev cells: tuning compute per family, knobs without effect, and the same
choices from the committed CSV records as from the cells."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from potara.bench import suite as bench_suite
from potara.bench.records import write_records
from potara.bench.report import load_cells

POTARA = ["potara_heldout", "potara_folds"]
DITTO = ["ditto@peers.ditto_mu=0.1", "ditto@peers.ditto_mu=1.0"]
FIXED = ["fixed@peers.fixed_lambda=0.1", "fixed@peers.fixed_lambda=0.3"]
SEEDS = [0, 1, 2]
# per method: own training passes, forward passes, seconds per client; its federation's passes and seconds
OWN = {"potara_heldout": (10, 40, 1.0), "potara_folds": (10, 80, 1.5), DITTO[0]: (20, 0, 0.5),
       DITTO[1]: (20, 0, 0.5), FIXED[0]: (10, 0, 0.2), FIXED[1]: (10, 0, 0.2)}
FEDIT_SHARE, DITTO_SHARE = (100, 2.0), (100, 3.0)


def fake_method(name: str, seed: int) -> dict:
    """Two clients; validation accuracy by method and seed, the fixed λ candidates alike on every unit."""
    tp, fwd, s = OWN[name]
    share = DITTO_SHARE if name in DITTO else FEDIT_SHARE
    val = {"potara_heldout": 0.5, "potara_folds": 0.6, DITTO[0]: 0.7, DITTO[1]: 0.4}.get(name, 0.3)
    rows = [{"client": f"client_{k}", "n_train": 10, "acc": 0.5, "val_acc": val + 0.05 * k + 0.01 * seed,
             "n_test": 4, "correct": 2, "lambda": 0.5, "cost": {"train_passes": tp, "forward_passes": fwd, "seconds": s}}
            for k in range(2)]
    return {"mean_acc": 0.5, "worst_acc": 0.5, "bytes_up": 100, "bytes_down": 100, "rounds": 2, "per_client": rows,
            "compute": {"train_passes": share[0] + tp, "forward_passes": fwd, "seconds": share[1] + s}}


def write_dev(out: Path) -> Path:
    """Fake dev cells (one setting, three seeds) with Ditto's candidates in federations of their own; the suite."""
    methods = POTARA + DITTO + FIXED
    raw = {"seeds": SEEDS, "methods": methods, "settings": {"s": {}}}
    suite = bench_suite.parse_suite(raw, "dev")
    for seed in SEEDS:
        where = bench_suite.cell_dir(out, "s", seed)
        where.mkdir(parents=True)
        summary = {"config": bench_suite.cell_config(suite, "s", seed).to_dict(),
                   "methods": {m: fake_method(m, seed) for m in methods},
                   "timing": {"wall_s": 1.0, "federation_s": 0.5, "local_epoch_s": 0.1, "method_s": {}}}
        (where / "summary.json").write_text(json.dumps(summary))
        peer = {"cum_bytes_up": 1, "cum_bytes_down": 1, "broadcast_bytes": 1, "mean_acc": None}
        rounds = [{"round": r, "cum_bytes_up": r, "cum_bytes_down": r, "broadcast_bytes": 1, "fedit_mean_acc": 0.1,
                   **dict.fromkeys(DITTO, peer)} for r in (1, 2)]
        (where / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    path = out / "dev.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_tuning_compute_per_family_counts_own_federations_not_the_shared_one(choose, tmp_path):
    suite, cells, missing, totals = choose.suite_cells(str(write_dev(tmp_path)), [str(tmp_path)])
    results = {name: choose.choose(cells, family, totals) for name, family in choose.candidates(suite.methods).items()}
    assert not missing
    potara, ditto = results["potara: potara.estimator"], results["ditto: peers.ditto_mu"]
    assert potara["tuning_compute"] == pytest.approx(
        {"candidates": 2, "train_passes": 20, "forward_passes": 120, "seconds": 2.5, "own_federations": 0})
    assert ditto["tuning_compute"] == pytest.approx(
        {"candidates": 2, "train_passes": 240, "forward_passes": 0, "seconds": 7.0, "own_federations": 2})
    assert potara["candidates"][1]["compute"] == pytest.approx(
        {"train_passes": 10, "forward_passes": 80, "seconds": 1.5, "own_federation": False})
    assert choose.shared_federation(totals) == pytest.approx({"train_passes": 100, "seconds": 2.0})
    side = choose.compute_table(results, choose.shared_federation(totals))
    assert "| potara: potara.estimator | 2 | 20 | 120 | 2.5 | 0 |" in side
    assert "| ditto: peers.ditto_mu | 2 | 240 | 0 | 7.0 | 2 |" in side
    assert "(100 training passes, 2.0 s per client)" in side
    text = choose.table("ditto", ditto)
    assert "tuning compute (sum over 2 candidates, per client): 240 training passes, 0 forward passes, 7.0 s" in text
    assert "| 1.0 | 0.4350 | 0.4350 | 120 | 0 | 3.5 |" in text


def test_a_knob_whose_candidates_are_indistinguishable_is_flagged(choose, tmp_path):
    suite, cells, _, totals = choose.suite_cells(str(write_dev(tmp_path)), [str(tmp_path)])
    results = {name: choose.choose(cells, family, totals) for name, family in choose.candidates(suite.methods).items()}
    assert results["fixed: peers.fixed_lambda"]["no_effect"] == [FIXED]
    assert results["ditto: peers.ditto_mu"]["no_effect"] == [] and results["potara: potara.estimator"]["no_effect"] == []
    text = choose.table("fixed", results["fixed: peers.fixed_lambda"])
    assert f"**no effect**: candidates {FIXED[0]} and {FIXED[1]} are indistinguishable" in text


def test_choices_are_the_same_from_the_units_csv_as_from_the_cells(choose, tmp_path, monkeypatch, capsys):
    path = write_dev(tmp_path / "run")
    suite = bench_suite.load_suite(str(path))
    write_records(tmp_path / "records", suite.name, load_cells(tmp_path / "run", suite))
    printed = {}
    for source in (tmp_path / "run", tmp_path / "records" / "dev-units.csv", tmp_path / "records"):
        monkeypatch.setattr(sys, "argv", ["choose.py", "--suite", str(path), "--out", str(source)])
        choose.main()
        printed[source] = capsys.readouterr().out
    first, *others = printed.values()
    assert "### Tuning compute per method, side by side" in first and "chosen: potara.estimator=folds" in first
    assert all(other == first for other in others)
    with pytest.raises(SystemExit, match="has neither cells nor a units CSV"):
        choose.read_part(tmp_path, suite)
