"""Hostile files by the hundred: data files (empty, mislabelled, wrong columns, non-UTF-8, truncated, ragged) at
the data loader, and checkpoint files (truncated, overwritten, deleted, forged manifests, failed writes, client
names that are no file names) at the checkpoint store.

A data file is loaded into clients with text inputs and in-range labels, or refused with a one-line
``ValueError``; a checkpoint loads as it was saved or is refused with a one-line ``CheckpointError``, and a
failed save leaves the previous round whole (nothing half-written).
"""

from __future__ import annotations

import itertools
import json
import random
import shutil

import datasets
import pytest
import torch
from hostile import assert_clear, hostile
from hypothesis import event, given
from hypothesis import strategies as st

from potara.config import from_dict
from potara.engine import load_federated_data
from potara.federation import checkpoint
from potara.federation.checkpoint import CheckpointError, RoundState

# --- data files ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def own_datasets_cache(tmp_path_factory):
    """Every hostile file the loader reads is cached in a temporary folder, not the user's cache."""
    cache, datasets.config.HF_DATASETS_CACHE = datasets.config.HF_DATASETS_CACHE, tmp_path_factory.mktemp("hf")
    datasets.disable_progress_bars()
    yield
    datasets.config.HF_DATASETS_CACHE = cache


def good_rows(n: int, seed: int) -> list[list[object]]:
    rng = random.Random(seed)
    return [[" ".join(rng.choice("abcdefgh") * 3 for _ in range(3)), i % 3] for i in range(n)]


CELLS = st.one_of(
    st.integers(-3, 5), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.just(""), st.booleans(),
)
HEADERS = st.sampled_from([["text", "label"], ["label", "text"], ["foo", "bar"], ["text"], ["text", "label", "x"], []])


@st.composite
def mutated_rows(draw) -> tuple[list[str], list[list[object]]]:
    """A header and rows: a good table with some cells, rows or the header replaced by anything."""
    header = draw(HEADERS) if draw(st.integers(0, 3)) == 0 else ["text", "label"]
    rows = good_rows(draw(st.integers(8, 40)), draw(st.integers(0, 3)))  # fewer: cut or empty files below
    for _ in range(draw(st.integers(0, 2))):
        if rows:
            row = rows[draw(st.integers(0, len(rows) - 1))]
            row[draw(st.integers(0, len(row) - 1))] = draw(CELLS)
    rows += draw(st.lists(st.lists(CELLS, max_size=4), max_size=2))
    return header, rows


def csv_bytes(header: list[str], rows: list[list[object]], encoding: str) -> bytes:
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    return ("\n".join(lines) + "\n").encode(encoding, errors="replace")


def jsonl_bytes(header: list[str], rows: list[list[object]], encoding: str) -> bytes:
    lines = [json.dumps(dict(zip(header, row))) for row in rows]
    return ("\n".join(lines) + "\n").encode(encoding, errors="replace")


@st.composite
def data_files(draw) -> tuple[str, bytes]:
    """A csv or jsonl file: a mutated table in UTF-8, Latin-1 or UTF-16, perhaps cut short or with junk bytes."""
    suffix = draw(st.sampled_from([".csv", ".jsonl"]))
    header, rows = draw(mutated_rows())
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1", "utf-16"]))
    content = (csv_bytes if suffix == ".csv" else jsonl_bytes)(header, rows, encoding)
    if draw(st.integers(0, 3)) == 0:
        content = content[: draw(st.integers(len(content) // 2, len(content)))]
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(st.binary(max_size=16)) + content[at:]
    return suffix, content


FILE_NUMBERS = itertools.count()


@hostile(90)
@given(file=data_files())
def test_a_data_file_loads_into_sound_clients_or_is_refused_in_one_line(file, tmp_path):
    suffix, content = file
    path = tmp_path / f"hostile-{next(FILE_NUMBERS)}{suffix}"  # a new name: the loader caches by name and date
    path.write_bytes(content)
    cfg = from_dict({"data": {"source": str(path), "num_clients": 2, "classes_per_client": 1, "train_sizes": [2, 6],
                              "test_size": 2, "min_val": 1}})
    try:
        fed = load_federated_data(cfg)
    except ValueError as err:
        assert_clear(str(err))
        event(f"refused: {str(err).replace(str(path), 'FILE')[:48]}")
        return
    event("loaded")
    classes = range(len(fed.label_names))
    for client in fed.clients:
        assert client.n_train >= 1
        for split in (client.train, client.val, client.test):
            assert all(isinstance(t, str) for t in split["text"]) and all(y in classes for y in split["label"])


# --- checkpoint files ----------------------------------------------------------------------------------------


@pytest.fixture
def no_fsync(monkeypatch):
    """Files are flushed to the page cache only: these properties are about what is renamed when, not about
    durability, and a thousand fsyncs would take most of the time."""
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: None)


def round_state(round_: int, clients: tuple[str, ...] = ("client_00", "client_01")) -> RoundState:
    gen = torch.Generator().manual_seed(round_)
    tensors = lambda: {"q.lora_A.weight": torch.randn(2, 4, generator=gen), "q.lora_B.weight": torch.randn(4, 2, generator=gen)}
    return RoundState(round_, tensors(), [{"round": round_}], {"bytes_up": round_}, {"seed": 0},
                      {name: tensors() for name in clients})


def same(a: RoundState, b: RoundState) -> bool:
    tensors_equal = lambda x, y: x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    return (
        (a.round, a.records, a.totals, a.config, a.rng) == (b.round, b.records, b.totals, b.config, b.rng)
        and tensors_equal(a.adapter, b.adapter)
        and a.clients.keys() == b.clients.keys()
        and all(tensors_equal(a.clients[n], b.clients[n]) for n in a.clients)
    )


FILES = ["manifest.json", "state.json", "adapter.safetensors", "clients/client_00.safetensors"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def damages(draw):
    """A way to damage one file of a round: cut it, overwrite bytes, replace it, delete it, or forge the manifest."""
    kind = draw(st.sampled_from(["cut", "overwrite", "replace", "delete", "forge"]))
    seed = draw(st.integers(0, 2**16))
    junk = draw(st.binary(max_size=64))
    forged = draw(JSON_VALUES)

    def damage(folder, target):
        path = folder / target
        data = path.read_bytes()
        rng = random.Random(seed)
        if kind == "cut":
            path.write_bytes(data[: rng.randrange(len(data))])
        elif kind == "overwrite":
            at = rng.randrange(len(data))
            path.write_bytes(data[:at] + junk + data[at + len(junk):])
        elif kind == "replace":
            path.write_bytes(junk)
        elif kind == "delete":
            path.unlink()
        else:
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest["files"][rng.choice([target, "../../etc/passwd", "/etc/hostname"])] = forged
            (folder / "manifest.json").write_text(json.dumps(manifest))

    return damage


@hostile(150)
@given(target=st.sampled_from(FILES), damage=damages())
def test_a_damaged_checkpoint_loads_as_saved_or_is_refused_in_one_line(target, damage, tmp_path, no_fsync):
    root = tmp_path / "ckpt"
    shutil.rmtree(root, ignore_errors=True)
    saved = round_state(3)
    folder = checkpoint.save(root, saved)
    damage(folder, target)
    try:
        loaded = checkpoint.load(root)
    except CheckpointError as err:
        assert_clear(str(err))
        event("refused")
        return
    event("loaded as saved")
    assert same(loaded, saved)


def assert_only(root, state: RoundState) -> None:
    """``root`` holds ``state`` as its newest round, and no temporary folder."""
    assert same(checkpoint.load(root), state)
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]


@hostile(60)
@given(
    fail_at=st.integers(0, 4),  # five files: state, adapter, two clients, manifest
    failure=st.sampled_from([OSError(28, "No space left on device"), KeyboardInterrupt("stopped")]),
)
def test_a_save_that_fails_midway_leaves_the_previous_round_whole(fail_at, failure, tmp_path, monkeypatch, no_fsync):
    root = tmp_path / "ckpt"
    shutil.rmtree(root, ignore_errors=True)
    first = round_state(1)
    checkpoint.save(root, first)
    real_write, writes = checkpoint._write, []

    def failing_write(path, data):
        writes.append(path)
        if len(writes) > fail_at:
            raise failure
        real_write(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "_write", failing_write)
        with pytest.raises(type(failure)):
            checkpoint.save(root, round_state(2))
    assert_only(root, first)


@hostile(100)
@given(names=st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True) | st.text(max_size=12), min_size=1,
                     max_size=3, unique=True))
def test_client_names_are_saved_as_they_are_or_refused_before_anything_is_written(names, tmp_path, no_fsync):
    root = tmp_path / "ckpt"
    shutil.rmtree(root, ignore_errors=True)
    first = round_state(1)
    checkpoint.save(root, first)
    second = round_state(2, tuple(names))
    try:
        checkpoint.save(root, second)
    except CheckpointError as err:
        assert_clear(str(err))
        assert_only(root, first)
        event("refused")
        return
    event("saved")
    assert_only(root, second)
