"""Checkpoints round-trip exactly; truncated or altered files give one error naming the file; failed writes change nothing."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from potara import config
from potara.federation import checkpoint
from potara.federation.checkpoint import CheckpointError, RoundState


def round_state(r: int, clients: bool = True) -> RoundState:
    gen = torch.Generator().manual_seed(r)
    adapter = {"q.lora_A.weight": torch.randn(2, 8, generator=gen), "q.lora_B.weight": torch.randn(8, 2, generator=gen)}
    locals_ = {"client_00": {"w": torch.randn(3, generator=gen)}} if clients else {}
    records = [{"round": i, "train_loss": 0.1 * i} for i in range(1, r + 1)]
    return RoundState(r, adapter, records, {"up": 10 * r, "down": 20 * r}, {"seed": 0}, locals_)


def test_round_trip_is_exact_and_restores_rng(tmp_path):
    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    saved = round_state(2)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    checkpoint.save(tmp_path, saved)
    back = checkpoint.resume(tmp_path, {"seed": 0})
    assert (back.round, back.records, back.totals, back.config) == (2, saved.records, saved.totals, {"seed": 0})
    assert all(back.adapter[k].equal(v) for k, v in saved.adapter.items())
    assert back.clients["client_00"]["w"].equal(saved.clients["client_00"]["w"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_only_the_newest_rounds_are_kept(tmp_path):
    for r in range(1, 5):
        checkpoint.save(tmp_path, round_state(r), keep=2)
    assert [p.name for p in checkpoint.rounds(tmp_path)] == ["round-000003", "round-000004"]
    assert checkpoint.load(tmp_path).round == 4
    assert checkpoint.load(tmp_path / "empty") is None


def test_resume_with_another_config_names_the_key(tmp_path):
    checkpoint.save(tmp_path, round_state(1))
    with pytest.raises(CheckpointError, match=r"written with seed=0, this run has seed=1"):
        checkpoint.resume(tmp_path, {"seed": 1})


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "target,damage,message",
    [
        ("adapter.safetensors", _truncate, "truncated"),
        ("adapter.safetensors", _flip_byte, "does not match its sha256"),
        ("state.json", _flip_byte, "does not match its sha256"),
        ("clients/client_00.safetensors", _truncate, "truncated"),
        ("manifest.json", _truncate, "is not valid JSON"),
        ("adapter.safetensors", lambda p: p.unlink(), "is missing"),
    ],
)
def test_damaged_checkpoint_gives_one_error_naming_the_file(tmp_path, target, damage, message):
    folder = checkpoint.save(tmp_path, round_state(1))
    damage(folder / target)
    with pytest.raises(CheckpointError, match=message) as err:
        checkpoint.load(tmp_path)
    assert str(folder / target) in str(err.value)


def test_a_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, round_state(1))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    calls = []

    def failing_write(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(checkpoint, "_write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(tmp_path, round_state(2))
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert checkpoint.load(tmp_path).round == 1


def test_rewriting_a_round_replaces_it_whole(tmp_path):
    checkpoint.save(tmp_path, round_state(3, clients=True))
    checkpoint.save(tmp_path, round_state(3, clients=False))
    assert checkpoint.load(tmp_path).clients == {}
    assert [p.name for p in tmp_path.iterdir()] == ["round-000003"]


@pytest.mark.parametrize("text", ['{"seed": 0, "fed": {"rounds": [1, 2', "fed:\n  rounds: [1,\n"])
def test_truncated_config_file_is_named(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=f"config file '{path}' is not valid YAML/JSON"):
        config.load(path)


def test_client_names_must_be_file_names(tmp_path):
    state = round_state(1)
    state.clients = {"../evil": {"w": torch.zeros(1)}}
    with pytest.raises(CheckpointError, match="cannot be a file name"):
        checkpoint.save(tmp_path, state)
    assert checkpoint.rounds(tmp_path) == [] and not any(tmp_path.iterdir())


def test_manifest_must_list_the_files(tmp_path):
    folder = checkpoint.save(tmp_path, round_state(1))
    (folder / "manifest.json").write_text(json.dumps({"format": 1, "files": {}}))
    with pytest.raises(CheckpointError, match="does not list the checkpoint's files"):
        checkpoint.load(tmp_path)
