"""summary.json marks the oracles as bounds and pairs every method with FedIT + FT and its best peer."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from potara.reporting import outputs
from potara.reporting.results import MethodResult, RunResult
from potara.reporting.styles import colour_marker

ACCS = {
    "local": [0.25, 0.25, 0.5, 0.25],
    "fedit": [0.25, 0.25, 0.25, 0.25],
    "fedit_ft": [0.5, 0.5, 0.5, 0.5],
    "oracle_val": [1.0, 1.0, 1.0, 1.0],
    "oracle_test": [1.0, 1.0, 1.0, 1.0],
    "potara": [0.75, 0.5, 0.75, 0.5],
    "potara_folds": [1.0, 1.0, 0.75, 1.0],  # a Potara variant is never a peer, however good
    "apfl": [0.5, 0.75, 0.5, 0.5],
}
TIMING = {"local_epoch_s": 0.1, "fisher_s": 0.0, "mixing_s": 0.0, "federation_s": 1.0}


def git_head() -> str:
    root = Path(outputs.__file__).resolve().parents[3]
    return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


def fake_result() -> RunResult:
    methods = {
        name: MethodResult([{"client": k, "n_train": 10 * (k + 1), "acc": acc, "lambda": None}
                            for k, acc in enumerate(accs)])
        for name, accs in ACCS.items()
    }
    return RunResult(methods, rounds=[], timing=TIMING)


def test_summary_marks_bounds_and_keeps_the_existing_keys():
    summary = outputs.summary({"seed": 0}, fake_result())
    assert set(summary) == {"config", "methods", "timing", "paired", "code"}
    assert summary["code"]["commit"].startswith(git_head()[:12])  # the checkout the tests run in
    for name, m in summary["methods"].items():
        assert set(m) == {"mean_acc", "worst_acc", "bytes_up", "bytes_down", "rounds", "compute", "per_client", "bound",
                          "federation"}
        assert m["bound"] is (name in ("oracle_val", "oracle_test"))
    table = outputs.table(summary)
    assert "| oracle_test (bound) | 1.0000 |" in table and "| potara | 0.6250 |" in table


def test_summary_pairs_each_method_with_fedit_ft_and_its_best_peer():
    paired = outputs.summary({"seed": 0}, fake_result())["paired"]
    assert set(paired) == set(ACCS) - {"oracle_val", "oracle_test"}
    vs_ft = paired["potara"]["vs_fedit_ft"]
    assert vs_ft["against"] == "fedit_ft" and vs_ft["mean"] == pytest.approx(0.125)
    assert (vs_ft["wins"], vs_ft["ties"], vs_ft["losses"], vs_ft["units"]) == (2, 2, 0, 4)
    assert vs_ft["clusters"] == 1 and vs_ft["verdict"] == "too few clusters"  # one run is one federation
    vs_peer = paired["potara"]["vs_best_peer"]
    assert vs_peer["against"] == "apfl" and vs_peer["mean"] == pytest.approx(0.0625)
    assert (vs_peer["wins"], vs_peer["ties"], vs_peer["losses"]) == (2, 1, 1)
    assert paired["apfl"]["vs_best_peer"]["against"] == "fedit_ft"  # a peer meets the best *other* peer
    assert set(paired["fedit_ft"]) == {"vs_best_peer"} and paired["fedit_ft"]["vs_best_peer"]["against"] == "apfl"
    assert paired["potara_folds"]["vs_fedit_ft"]["verdict"] == "too few clusters"


def test_fedit_and_ffa_lora_are_never_the_best_peer():
    """They give every client the same adapter: non-personalized baselines, however good."""
    result = fake_result()
    for name in ("fedit", "ffa_lora"):
        result.methods[name] = MethodResult([{"client": k, "n_train": 10, "acc": 0.9, "lambda": None} for k in range(4)])
    summary = outputs.summary({"seed": 0}, result)
    assert summary["paired"]["potara"]["vs_best_peer"]["against"] == "apfl"
    assert not outputs.is_peer("ffa_lora") and not outputs.is_peer("fedit@fed.lr=0.1") and outputs.is_peer("ditto")
    assert "| ffa_lora (not personalized) | 0.9000 |" in outputs.table(summary)


def test_written_summary_and_plots(tmp_path, monkeypatch):
    summary = outputs.summary({"seed": 0}, fake_result())
    rounds = [{"round": 1, "cum_bytes_up": 10, "cum_bytes_down": 10, "fedit_mean_acc": 0.25}]
    outputs.write_outputs(tmp_path, summary, rounds)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["paired"]["potara"]["vs_fedit_ft"]["wins"] == 2 and written["methods"]["oracle_val"]["bound"]
    assert (tmp_path / "accuracy_vs_bytes.png").stat().st_size > 1000

    drawn = {}
    monkeypatch.setattr(outputs, "save_png", lambda fig, path: drawn.update(lines(fig)))
    outputs.plot_accuracy_vs_bytes(summary, rounds, tmp_path / "again.png")
    assert drawn["oracle_test (bound)"] == (colour_marker("oracle_test")[0], "none")
    assert drawn["potara"] == (colour_marker("potara")[0], colour_marker("potara")[0])  # filled, in its colour
    assert drawn["fedit (per round)"][0] == colour_marker("fedit")[0]


def lines(fig) -> dict[str, tuple[str, str]]:
    """Each labelled line of a figure: its colour and marker face colour."""
    return {line.get_label(): (line.get_color(), line.get_markerfacecolor())
            for ax in fig.axes for line in ax.get_lines()}


def test_table_puts_the_bounds_below_a_rule():
    table = outputs.table(outputs.summary({"seed": 0}, fake_result())).splitlines()
    names = [row.split("|")[1].strip() for row in table[2:] if row.startswith("|")]
    rule = names.index(next(n for n in names if n.startswith("*bounds")))
    assert names[rule + 1:] == ["oracle_val (bound)", "oracle_test (bound)"]
    assert not any("(bound)" in n for n in names[:rule])


def test_lambda_plot_sets_each_method_against_the_oracle(tmp_path, monkeypatch):
    summary = outputs.summary({"seed": 0}, fake_result())
    for name, lam in (("oracle_test", 0.2), ("potara", 0.1), ("fedit", 1.0), ("potara_folds", {"a": 0.2, "b": 0.4})):
        for k, row in enumerate(summary["methods"][name]["per_client"]):
            row["lambda"] = {key: v * k for key, v in lam.items()} if isinstance(lam, dict) else lam * k
    panels = {}
    monkeypatch.setattr(outputs, "save_png", lambda fig, path: panels.update(scatters(fig)))
    outputs.plot_lambda_vs_oracle(summary, tmp_path / "lambda.png")
    assert set(panels) == {"potara", "potara_folds"}  # fedit's λ is no choice; the oracle is the x axis
    assert panels["potara"] == (colour_marker("potara")[0], [(0.0, 0.0), (0.2, 0.1), (0.4, 0.2), (0.6, 0.3)])
    assert panels["potara_folds"][1][3] == (0.6, 0.9)  # one λ per module: their mean

    monkeypatch.undo()
    del summary["methods"]["oracle_test"], summary["methods"]["oracle_val"]
    outputs.write_outputs(tmp_path / "no_oracle", summary, [])
    assert sorted(p.name for p in (tmp_path / "no_oracle").iterdir()) == [
        "accuracy_vs_bytes.png", "rounds.jsonl", "summary.json"]


def scatters(fig) -> dict[str, tuple[str, list[tuple[float, float]]]]:
    """Each panel's method (its title's first line): the colour of its points and the points."""
    from matplotlib.colors import to_hex

    out = {}
    for ax in fig.axes:
        if ax.collections:
            points = ax.collections[0]
            xy = [tuple(round(float(v), 6) for v in p) for p in points.get_offsets()]
            out[ax.get_title().splitlines()[0]] = (to_hex(points.get_edgecolor()[0]), xy)
    return out
