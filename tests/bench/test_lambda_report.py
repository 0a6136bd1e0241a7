"""benchmarks/lambda_report.py on two hand-made cells: test accuracy, λ gap to oracle_test, cost ratio."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from potara.bench.report import Cell

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import lambda_report
    finally:
        sys.path.remove(str(BENCHMARKS))
    return lambda_report


def row(client: str, acc: float, lam: float, seconds: float | None = None) -> dict:
    out = {"client": client, "acc": acc, "val_acc": acc, "lambda": lam}
    if seconds is not None:
        out["lambda_cost"] = {"seconds": seconds}
    return out


def cell(seed: int, train_s: float, potara: list[dict], oracle: list[dict]) -> Cell:
    return Cell(seed, {"timing": {"train_s": train_s}, "methods": {
        "potara": {"per_client": potara}, "oracle_test": {"per_client": oracle}}}, [])


@pytest.fixture
def cells() -> dict:
    return {"classes": [
        cell(0, 10.0, [row("a", 0.5, 0.2, 1.0), row("b", 0.7, 0.6, 3.0)], [row("a", 0.6, 0.4), row("b", 0.7, 0.6)]),
        cell(1, 20.0, [row("a", 0.4, 1.0, 2.0)], [row("a", 0.6, 0.5)]),
    ]}


def test_cost_ratio_is_the_mean_per_client_of_lambda_seconds_over_the_cells_training_seconds(report, cells):
    assert report.cost_ratio(cells, "potara") == pytest.approx((1 / 10 + 3 / 10 + 2 / 20) / 3)


def test_rows_give_test_accuracy_the_oracle_test_gap_and_the_paired_difference(report, cells):
    (potara,) = report.rows(cells, ["oracle_test"])
    assert potara["method"] == "potara"
    assert potara["test_acc"] == pytest.approx((0.5 + 0.7 + 0.4) / 3)
    assert potara["lambda_gap_to_oracle_test"] == pytest.approx((0.2 + 0.0 + 0.5) / 3)
    assert potara["vs"]["oracle_test"]["mean"] == pytest.approx(((-0.1 + 0.0) / 2 - 0.2) / 2)  # mean of cell means


def test_the_pooled_scope_holds_the_settings_where_every_reference_ran(report, cells):
    assert list(report.scopes(cells)) == ["classes"]
    every = Cell(0, {"methods": dict.fromkeys(report.REFERENCES, {})}, [])
    assert list(report.scopes({"paper": [every], "classes": [every], "short": cells["classes"]})) == [
        "pooled: paper + classes", "paper", "classes", "short"]
