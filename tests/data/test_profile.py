"""The federation's profile before training: client sizes and label skew (total-variation distance to the
federation's label distribution), from the library and from ``potara profile``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from potara.cli.main import main
from potara.data.profile import RULE_SKEW, label_skew, profile_counts, profile_table, rule_pick


def test_label_skew_is_the_total_variation_distance():
    assert label_skew({0: 5, 1: 5}, {0: 10, 1: 10}) == 0
    assert label_skew({0: 4}, {0: 4, 1: 4}) == pytest.approx(0.5)  # ½(|1 − ½| + |0 − ½|)
    assert label_skew({2: 3}, {0: 9, 1: 9, 2: 3}) == pytest.approx(1 - 3 / 21)
    assert label_skew({}, {0: 1}) == 0


@given(st.dictionaries(st.integers(0, 5), st.integers(1, 30), min_size=1),
       st.dictionaries(st.integers(0, 5), st.integers(1, 30), min_size=1))
def test_label_skew_is_a_distance_in_the_unit_interval(a, b):
    assert 0 <= label_skew(a, b) <= 1 + 1e-12
    assert label_skew(a, b) == pytest.approx(label_skew(b, a))


def test_disjoint_clients_are_far_and_identical_clients_near():
    disjoint = profile_counts({"a": [0, 0, 1], "b": [2, 3, 3]})
    same = profile_counts({"a": [0, 1, 2], "b": [2, 1, 0]})
    assert disjoint["clients"]["a"] == {"n_train": 3, "classes": 2, "label_skew": pytest.approx(0.5)}
    assert disjoint["mean_label_skew"] == pytest.approx(0.5) and disjoint["pooled_classes"] == 4
    assert same["max_label_skew"] == 0 and same["median_n_train"] == 3 and same["min_n_train"] == 3


def test_potara_profile_prints_the_federation_a_config_makes_without_a_model(synthetic_csv, capsys):
    sets = [f"data.source={synthetic_csv}", "data.num_clients=3", "data.classes_per_client=2",
            "data.train_sizes=[12,40]", "data.test_size=20", "model.name=/nowhere"]  # no model is loaded
    assert main(["profile", *[x for s in sets for x in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "| client_00 |" in out and "| client_02 |" in out and "3 clients, " in out
    assert "label skew: mean" in out and "the rule (label skew < 0.6" in out


def test_the_rule_picks_potara_below_the_skew_threshold_and_fine_tuning_above():
    assert rule_pick(RULE_SKEW - 1e-9) == "potara@potara.granularity=head_lora"
    assert rule_pick(RULE_SKEW) == "fedit_ft_es"
    table = profile_table(profile_counts({"near": [0, 1, 2, 3], "far": [5, 5], "mid": [0, 1, 2, 4]}))
    assert "| near | 4 | 4 | 0.300 | `potara@potara.granularity=head_lora` |" in table
    assert "| far | 2 | 1 | 0.800 | `fedit_ft_es` |" in table
    assert "picks Potara for 2 of 3 clients" in table


def test_data_without_class_labels_has_no_profile():
    import datasets

    from potara.data.federated import ClientTask, FederatedData
    from potara.data.profile import profile

    rows = datasets.Dataset.from_dict({"prompt": ["a", "b"], "target": ["x", "y"]})
    data = FederatedData([ClientTask("client_00", rows, rows, rows)], [], "prompt")
    assert profile(data) == {}
