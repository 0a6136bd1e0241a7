"""A hand-made data file's mistakes are answered before torch loads, in potara's words."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

from potara.config import DataConfig
from potara.data.federated import make_clients
from potara.data.precheck import DataFileError, check_source

TOPICS = ("sports", "tech", "food", "music")


def rows(n: int = 20) -> list[tuple[str, str]]:
    return [(f"a sentence about {t}, number {i}", t) for i in range(n) for t in TOPICS]


def write_csv(path: Path, header: list[str], body: list[tuple]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(body)
    return path


def check(path: Path, **keys) -> str:
    with pytest.raises(DataFileError) as err:
        check_source(DataConfig(source=str(path), **keys))
    return str(err.value)


def test_a_good_file_passes(tmp_path):
    check_source(DataConfig(source=str(write_csv(tmp_path / "ok.csv", ["text", "label"], rows()))))


def test_header_only(tmp_path):
    assert "has a header but no rows" in check(write_csv(tmp_path / "h.csv", ["text", "label"], []))


def test_not_utf8_says_resave(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncafé au lait,food\ncafé noir,food\n".encode("latin1"))
    assert "is not UTF-8" in (message := check(path)) and "re-save it as UTF-8" in message


def test_whitespace_only_text_in_jsonl(tmp_path):
    path = tmp_path / "blank.jsonl"
    lines = [{"text": t, "label": y} for t, y in rows()] + [{"text": "  \t ", "label": "food"}]
    path.write_text("\n".join(json.dumps(x) for x in lines))
    assert "1 row(s) have an empty or whitespace-only 'text' (first: row 81)" in check(path)


def test_missing_label_column_points_to_the_likely_one(tmp_path):
    path = write_csv(tmp_path / "topic.csv", ["text", "topic"], rows())
    assert "no label column 'label'" in (message := check(path)) and "--set data.label_column=topic" in message


def test_a_label_with_one_example_is_named_with_the_keys_that_fix_it(tmp_path):
    path = write_csv(tmp_path / "rare.csv", ["text", "label"], rows() + [("one lonely poem", "poetry")])
    message = check(path)
    assert "label 'poetry' has only 1 example" in message
    assert "data.num_clients" in message and "data.classes_per_client" in message


def test_a_label_too_rare_for_its_clients_is_named_at_the_split():
    texts, labels = zip(*(rows() + [(f"poem {i}", "poetry") for i in range(3)]))
    ds = datasets.Dataset.from_dict({"text": list(texts), "label": list(labels)}).class_encode_column("label")
    with pytest.raises(ValueError, match=r"label 'poetry' has 3 example\(s\).*data.num_clients \(10\)"):
        make_clients(ds, num_clients=10, scheme="classes", seed=0, classes_per_client=5, train_sizes=None)


@pytest.mark.parametrize("override", ["fed.roundz=3", "data.source={bad}"])
def test_bad_input_is_answered_before_torch_is_imported(tmp_path, override):
    bad = write_csv(tmp_path / "h.csv", ["text", "label"], [])
    code = (
        "import sys\nfrom potara.cli.main import main\n"
        f"assert main(['run', '--out', {str(tmp_path / 'o')!r}, '--set', {override.format(bad=bad)!r}]) == 2\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy imports before the checks'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("potara: error:") and done.stderr.count("\n") == 1


def test_another_text_column_is_taken_as_the_loader_takes_it(tmp_path):
    check_source(DataConfig(source=str(write_csv(tmp_path / "s.csv", ["sentence", "label"], rows()))))
    with pytest.raises(DataFileError, match="no text column 'body'; set data.text_column to one of: sentence"):
        check_source(DataConfig(source=str(tmp_path / "s.csv"), text_column="body"))


def test_the_loader_refuses_whitespace_only_texts_too(tmp_path):
    from potara.data.federated import load_local_files

    path = tmp_path / "blank.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in [*rows(2), ("   ", "food")]))
    with pytest.raises(ValueError, match="1 row\\(s\\) have an empty or whitespace-only 'text'"):
        load_local_files(path)
