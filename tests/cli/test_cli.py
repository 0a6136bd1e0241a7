"""Bad input gets one clear line, a non-zero exit, and nothing half-written; merge writes a PEFT adapter."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from potara import config
from potara.cli.main import main


def run_cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["nope=1"], "unknown config key 'nope'"),
        (["fed.nope=1"], "unknown config key 'fed.nope'"),
        (["methods=potara,magic"], "unknown method 'magic'"),
        (["data.partition=weird"], "data.partition must be one of"),
        (["potara.estimator=magic"], "potara.estimator must be one of heldout, crossfit, fisher, folds, cautious, paper"),
        (["fed.fraction=0"], "fed.fraction"),
        (["model.name=/does/not/exist"], "model path '/does/not/exist' does not exist"),
        (["data.source=/no/such/file.csv"], "/no/such/file.csv"),
    ],
)
def test_bad_input_is_one_clear_line_and_nothing_written(overrides, message, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--out", str(out)] + [x for o in overrides for x in ("--set", o)]
    code, err = run_cli(args, capsys)
    assert code != 0
    assert message in err
    assert err.startswith("potara: error:") and err.count("\n") == 1
    assert not out.exists()
    assert [p for p in tmp_path.iterdir()] == []


def test_missing_config_file(tmp_path, capsys):
    code, err = run_cli(["run", "--config", str(tmp_path / "none.yaml")], capsys)
    assert code == 2 and "does not exist" in err


def test_client_with_no_examples_is_named(tiny_overrides, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["run", "--out", str(out)] + [x for o in tiny_overrides + ["data.num_clients=400"] for x in ("--set", o)]
    code, err = run_cli(args, capsys)
    assert code == 2 and "client" in err
    assert not out.exists()


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\nfed:\n  rounds: 4\n")
    cfg = config.load(path, ["fed.fraction=0.5", "methods=fedit,potara"])
    assert (cfg.seed, cfg.fed.rounds, cfg.fed.fraction, cfg.methods) == (3, 4, 0.5, ["fedit", "potara"])


def test_run_then_merge_saved_adapters(tiny_overrides, synthetic_csv, tmp_path, capsys):
    out = tmp_path / "run"
    sets = tiny_overrides + ["methods=fedit,potara"]
    code, err = run_cli(["run", "--out", str(out)] + [x for o in sets for x in ("--set", o)], capsys)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"fedit", "potara"}
    assert set(summary["paired"]["potara"]) == set()  # no fedit_ft, and fedit is no peer: not personalized
    assert summary["paired"]["fedit"] == {} and not summary["methods"]["potara"]["bound"]
    adapter = out / "adapters" / "client_00"
    merged = tmp_path / "merged"
    code, err = run_cli(
        ["merge", "--federated", str(adapter), "--local", str(out / "adapters" / "client_01"),
         "--data", str(synthetic_csv), "--out", str(merged), "--max-length", "16"], capsys,
    )
    assert code == 0, err
    lam = json.loads((merged / "lambda.json").read_text())["lambda"]
    assert 0.0 <= lam <= 1.0
    assert_reloads_as_the_interpolation(merged / "adapter", adapter, out / "adapters" / "client_01", lam)
    other = tmp_path / "other_alpha"
    shutil.copytree(out / "adapters" / "client_01", other)
    adapter_config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**adapter_config, "lora_alpha": 2 * adapter_config["lora_alpha"]}))
    code, err = run_cli(["merge", "--federated", str(adapter), "--local", str(other), "--data", str(synthetic_csv),
                         "--out", str(tmp_path / "wrong")], capsys)
    assert code == 2 and "differ in lora_alpha" in err and not (tmp_path / "wrong").exists()


def assert_reloads_as_the_interpolation(merged: Path, federated: Path, local: Path, lam: float) -> None:
    """The merged adapter, loaded by plain ``PeftModel.from_pretrained``, gives the logits of the base model whose
    weights are ``λ W_F + (1−λ) W_L``, with ``W_F`` and ``W_L`` the two input adapters folded into the base."""
    base_dir = json.loads((merged / "adapter_config.json").read_text())["base_model_name_or_path"]
    tensors = load_file(str(federated / "adapter_model.safetensors"))
    labels = next(v.shape[0] for k, v in tensors.items() if k.endswith("classifier.weight"))

    def base():
        return AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=labels)

    folded = [PeftModel.from_pretrained(base(), d).merge_and_unload().state_dict() for d in (federated, local)]
    by_hand = base()
    by_hand.load_state_dict({k: lam * v + (1 - lam) * folded[1][k] if v.is_floating_point() else v
                             for k, v in folded[0].items()})
    reloaded = PeftModel.from_pretrained(base(), merged)
    inputs = AutoTokenizer.from_pretrained(base_dir)(["violin piano drum", "tiger lion wolf bear"], return_tensors="pt",
                                                     padding=True)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**inputs).logits, by_hand.eval()(**inputs).logits,
                                   atol=1e-5, rtol=1e-5)


def test_merge_rejects_a_folder_that_is_not_an_adapter(tmp_path, synthetic_csv, capsys):
    code, err = run_cli(
        ["merge", "--federated", str(tmp_path), "--local", str(tmp_path), "--data", str(synthetic_csv),
         "--out", str(tmp_path / "m")], capsys,
    )
    assert code == 2 and "not a PEFT adapter directory" in err
    assert not (tmp_path / "m").exists()


def test_a_lone_method_is_a_one_item_list():
    assert config.load(None, ["methods=potara"]).methods == ["potara"]
    assert config.load(None, ["methods=potara,fedit"]).methods == ["potara", "fedit"]


def test_the_shipped_default_config_is_the_embedded_default():
    shipped = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    assert config.load(shipped, []).to_dict() == config.RunConfig().to_dict()


def test_the_default_runs_note_points_to_the_report_and_claims_no_number():
    from potara.cli.main import one_seed_note

    note = one_seed_note(config.RunConfig())
    assert note.count("\n") == 0 and "make bench" in note and "docs/benchmarks.md#results" in note
    assert not re.search(r"[+-]0\.\d", note)  # a number belongs to the committed report, not to the code
    other = one_seed_note(config.load(None, ["data.num_clients=4"]))
    assert "make bench" not in other and "potara bench" in other
