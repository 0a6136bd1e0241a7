"""Labels travel with adapters: ``labels.json`` beside each, ``merge`` maps held-out labels by name, ``predict``
answers with names, and stock transformers + PEFT load an exported adapter."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import WORDS, synthetic_rows
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from potara.cli.main import main
from potara.cli.merge import untrusted
from potara.data.federated import load_local_files

NAMES = dict(zip(WORDS, ("fruit", "car", "music", "water", "code", "animal")))
SORTED = sorted(NAMES.values())  # a run's label ids: the names in alphabetical order


def write_named(path: Path, rows: list[tuple[str, int]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((text, NAMES[y]) for text, y in rows)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A tiny run on a corpus with named labels, exporting every client's federated and local adapters."""
    root = tmp_path_factory.mktemp("labels")
    data = write_named(root / "named.csv", synthetic_rows(40))
    sets = [f"model.name={tiny_model_dir}", f"data.source={data}", "data.num_clients=3",
            "data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2",
            "local.epochs=2", "model.max_length=16", "lora.r=2", "lora.alpha=4", "methods=fedit,potara"]
    out = root / "run"
    assert main(["run", "--out", str(out), "--export", "all"] + [x for s in sets for x in ("--set", s)]) == 0
    return out


def test_every_exported_adapter_carries_its_labels(run_dir):
    client = run_dir / "adapters" / "client_00"
    for adapter in (client, client / "federated", client / "local"):
        labels = json.loads((adapter / "labels.json").read_text())
        assert labels["num_labels"] == 6 and list(labels["id2label"].values()) == SORTED
        assert labels["label2id"] == {name: i for i, name in enumerate(SORTED)}
        assert labels["max_length"] == 16  # the run's model.max_length: predict and merge truncate alike


def test_stock_transformers_and_peft_load_an_exported_adapter(run_dir):
    adapter = run_dir / "adapters" / "client_00"
    base_name = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    labels = json.loads((adapter / "labels.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(base_name, num_labels=labels["num_labels"])
    model = PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        logits = model(**AutoTokenizer.from_pretrained(base_name)(["violin piano"], return_tensors="pt")).logits
    assert labels["id2label"][str(logits.argmax(-1).item())] in SORTED


def test_held_out_labels_are_mapped_by_name_not_renumbered(tmp_path):
    subset = write_named(tmp_path / "two.csv", [r for r in synthetic_rows(5) if r[1] in (2, 3)])
    ids = load_local_files(subset, label_names=SORTED)["label"]
    assert set(ids) == {SORTED.index("music"), SORTED.index("water")}


def test_merge_on_a_held_out_subset_of_the_labels(run_dir, tmp_path, capsys):
    client = run_dir / "adapters" / "client_00"
    subset = write_named(tmp_path / "two.csv", [r for r in synthetic_rows(15, seed=1) if r[1] in (2, 3)])
    out = tmp_path / "merged"
    code = main(["merge", "--federated", str(client / "federated"), "--local", str(client / "local"),
                 "--data", str(subset), "--out", str(out)])  # no --max-length: the adapters' recorded 16
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "lambda.json").read_text())["n_heldout"] == 30
    labels = json.loads((out / "adapter" / "labels.json").read_text())
    assert list(labels["id2label"].values()) == SORTED and labels["max_length"] == 16


def test_merge_refuses_a_label_the_adapters_do_not_know(run_dir, tmp_path, capsys):
    client = run_dir / "adapters" / "client_00"
    bad = tmp_path / "poetry.csv"
    bad.write_text("text,label\nviolin piano drum,music\nroses are red,poetry\n")
    code = main(["merge", "--federated", str(client / "federated"), "--local", str(client / "local"),
                 "--data", str(bad), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "'poetry' are not among the model's labels" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()


def test_predict_answers_with_label_names(run_dir, tmp_path, capsys):
    adapter = str(run_dir / "adapters" / "client_00")
    assert main(["predict", "--adapter", adapter, "--text", "violin piano drum", "tiger lion wolf"]) == 0
    answers = capsys.readouterr().out.split()
    assert len(answers) == 2 and set(answers) <= set(SORTED)
    data = write_named(tmp_path / "d.csv", synthetic_rows(2))
    assert main(["predict", "--adapter", adapter, "--data", str(data)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 12 and captured.err.startswith("accuracy ")


def test_predict_truncates_at_the_length_the_adapter_was_trained_at(run_dir, monkeypatch):
    import potara.cli.predict as predict_mod

    lengths = []
    real = predict_mod.load_classifier

    def spying(adapter):
        model, tokenizer, names = real(adapter)
        return model, lambda *a, **k: lengths.append(k["max_length"]) or tokenizer(*a, **k), names

    monkeypatch.setattr(predict_mod, "load_classifier", spying)
    adapter = run_dir / "adapters" / "client_00"
    predict_mod.predict(adapter, ["violin " * 40])
    predict_mod.predict(adapter, ["violin"], max_length=8)
    assert lengths == [16, 8]


def test_an_estimate_it_cannot_trust_is_a_warning_with_the_reason():
    reasons = untrusted({"v_fed": 0.4, "v_local": -3.2, "note": "", "n_heldout": 8})
    assert any("v_local = -3.2" in r and "negative" in r for r in reasons)
    assert any("only 8 held-out examples" in r for r in reasons)
    assert untrusted({"v_fed": 0.4, "v_local": 0.2, "note": "", "n_heldout": 100}) == []


def test_merge_refuses_label_names_it_cannot_map(run_dir, tmp_path, capsys):
    import shutil

    client = run_dir / "adapters" / "client_00"
    for part in ("federated", "local"):
        shutil.copytree(client / part, tmp_path / part)
        (tmp_path / part / "labels.json").unlink()
    held_out = write_named(tmp_path / "two.csv", [r for r in synthetic_rows(5) if r[1] in (2, 3)])
    code = main(["merge", "--federated", str(tmp_path / "federated"), "--local", str(tmp_path / "local"),
                 "--data", str(held_out), "--out", str(tmp_path / "m")])
    assert code == 2 and "no labels.json to map them" in capsys.readouterr().err
