"""benchmarks/rule.py: a written rule's picks (Potara where it holds, FedIT + FT early-stopped elsewhere) scored
against always fine-tuning, from a units CSV with the clients' profiles."""

from __future__ import annotations

import json

import pytest

from potara.bench import suite as bench_suite
from potara.bench.records import write_records
from potara.bench.report import load_cells

SEEDS = list(range(10))
# client -> (label skew, Potara's edge over fedit_ft_es): Potara helps the skewed clients, hurts the others
CLIENTS = {"client_0": (0.8, 0.05), "client_1": (0.7, 0.03), "client_2": (0.1, -0.02), "client_3": (0.2, -0.01)}
VARIANT = "potara@potara.prior_correction=counts"
SIGN = {"potara": 1, VARIANT: -1, "fedit_ft_es": 0}  # the variant reverses Potara's edge


def write_units(out) -> str:
    """Fake cells of one setting, written and read back as the committed units CSV."""
    names = ("potara", VARIANT, "fedit_ft_es")
    suite = bench_suite.Suite("fake", SEEDS, list(names), {"new": {}})
    for seed in SEEDS:
        where = bench_suite.cell_dir(out, "new", seed)
        where.mkdir(parents=True)
        base = 0.5 + 0.01 * seed
        methods = {name: {"mean_acc": 0.5, "worst_acc": 0.4, "bytes_up": 0, "bytes_down": 0, "rounds": 0,
                          "per_client": [{"client": c, "acc": base + edge * SIGN[name], "n_train": 32}
                                         for c, (_, edge) in CLIENTS.items()]}
                   for name in names}
        federation = {"clients": {c: {"n_train": 32, "classes": 3, "label_skew": skew}
                                  for c, (skew, _) in CLIENTS.items()}}
        config = bench_suite.cell_config(suite, "new", seed).to_dict()
        (where / "summary.json").write_text(json.dumps({"config": config, "methods": methods, "federation": federation,
                                                        "timing": {"method_s": {}}}))
        (where / "rounds.jsonl").write_text("")
    write_records(out, "fake", load_cells(out, suite))
    return str(out / "fake-units.csv")


def test_a_rule_that_picks_potara_for_skewed_clients_beats_always_fine_tuning(rule, tmp_path):
    rows = rule.client_table(rule.cells_from_units(write_units(tmp_path)), ["new"])
    good = rule.score(rule.parse_rule("label_skew>=0.5"), rows)
    assert good["clients"] == 40 and good["potara_picked"] == 20
    assert good["rule_right"] == 1.0 and good["always_fine_tune_right"] == 0.5
    assert good["value"]["mean"] == pytest.approx((0.05 + 0.03) / 4) and good["value"]["verdict"] == "win"
    always_potara = rule.score(rule.parse_rule("n_train>=0"), rows)
    assert always_potara["rule_right"] == 0.5 and always_potara["value"]["mean"] == pytest.approx(0.05 / 4)
    assert "right (the better pick on test): rule 1.000, always fine-tune 0.500" in rule.report("x", ["new"], good)


def test_the_rule_scores_the_potara_variant_it_is_given(rule, tmp_path):
    rows = rule.client_table(rule.cells_from_units(write_units(tmp_path)), ["new"], VARIANT)
    scored = rule.score(rule.parse_rule("label_skew>=0.5"), rows)
    assert scored["rule_right"] == 0.0 and scored["value"]["mean"] == pytest.approx(-(0.05 + 0.03) / 4)
    with pytest.raises(SystemExit, match="lacks potara@potara.granularity=head_lora"):
        rule.client_table(rule.cells_from_units(write_units(tmp_path / "b")), ["new"], "potara@potara.granularity=head_lora")


@pytest.mark.parametrize("text", ["skew>=0.5", "label_skew>0.5", "label_skew>=high"])
def test_a_malformed_rule_is_a_clear_error(rule, text):
    with pytest.raises(SystemExit, match="is not KEY>=VALUE or KEY<VALUE with KEY in n_train, label_skew"):
        rule.parse_rule(text)


def test_fit_finds_the_skew_threshold_that_separates_the_clients_potara_helps(rule, tmp_path):
    rows = rule.client_table(rule.cells_from_units(write_units(tmp_path)), ["new"])
    (best, result), *rest = rule.fit(rows, top=3)
    assert best.startswith("label_skew>=") and 0.2 < float(best.split(">=")[1]) <= 0.7
    assert result["rule_right"] == 1.0 and result["value"]["mean"] == pytest.approx((0.05 + 0.03) / 4)
    assert all(r["value"]["mean"] <= result["value"]["mean"] for _, r in rest)
    assert rule.parse_rule("always") == [] and rule.rule_text([]) == "always"
