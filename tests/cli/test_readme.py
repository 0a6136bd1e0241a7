"""The README's quick start and own-data commands, and its PEFT snippet, run as written (on a tiny model and CSV)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import synthetic_rows
from test_labels import write_named

from potara.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
TINY = ["data.classes_per_client=2", "data.train_sizes=[12,40]", "data.test_size=20", "fed.rounds=2",
        "local.epochs=2", "model.max_length=16", "lora.r=2", "lora.alpha=4"]


def section(title: str) -> str:
    start = README.index(f"## {title}")
    return README[start : README.index("\n## ", start + 1)]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def commands(text: str) -> list[list[str]]:
    """The bash blocks' commands, continuation lines joined and comments dropped."""
    lines = [line.split(" #")[0].strip() for block in blocks(text, "bash") for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.split(line) for line in lines if line]


@pytest.mark.parametrize("title", ["Quick start", "Your own model and data"])
def test_the_sections_have_commands(title):
    assert commands(section(title))


def test_quick_start_make_targets_exist():
    for command in commands(section("Quick start")):
        assert command[0] == "make"
        done = subprocess.run(["make", "-n", *command[1:]], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_own_data_commands_and_the_peft_snippet_run_as_written(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_named(tmp_path / "mydata.csv", synthetic_rows(30))
    write_named(tmp_path / "heldout.csv", [r for r in synthetic_rows(8, seed=1) if r[1] in (2, 3)])
    for command in commands(section("Your own model and data")):
        assert command[0] == "potara"
        extra = [x for s in [f"model.name={tiny_model_dir}", *TINY] for x in ("--set", s)] if command[1] == "run" else []
        assert main(command[1:] + extra) == 0, capsys.readouterr().err
    assert capsys.readouterr().out
    (snippet,) = blocks(section("Outputs"), "python")
    exec(compile(snippet, "README.md", "exec"), {})
    assert capsys.readouterr().out.strip() in {"fruit", "car", "music", "water", "code", "animal"}
