"""Run state on disk after every round, and back; every file is checked against a sha256 manifest.

Layout: ``<root>/round-000003/`` holds ``adapter.safetensors`` (the global adapter), ``state.json``
(round, RNG states, per-round metrics, cumulative bytes, config, the aggregation's state such as an adaptive
clipping norm), ``clients/<name>.safetensors`` (each client's local state, where there is one),
``residuals/<name>.safetensors`` (each client's int8 quantization error, under error feedback) and ``manifest.json`` (size and sha256 of every other file).
A round folder is written whole in a temporary folder and renamed into place, so a crash mid-write
leaves the previous round intact; the newest ``keep`` rounds are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..merge.taskvec import AdapterState

FORMAT = 1
MANIFEST, STATE, ADAPTER, CLIENTS, RESIDUALS = "manifest.json", "state.json", "adapter.safetensors", "clients", "residuals"
ROUND_DIR = re.compile(r"^round-(\d{6})$")


class CheckpointError(ValueError):
    """A checkpoint (or adapter) file is missing, truncated, altered or from another run; the message names it."""


def capture_rng() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch (CPU), as JSON-ready lists."""
    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def restore_rng(rng: dict[str, Any]) -> None:
    """Set the global RNG states captured by :func:`capture_rng`."""
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, *rest = rng["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))


@dataclass
class RoundState:
    """Everything a run needs to continue after round ``round``."""

    round: int
    adapter: AdapterState
    records: list[dict]
    totals: dict[str, int]
    config: dict[str, Any]
    clients: dict[str, AdapterState] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=capture_rng)
    residuals: dict[str, AdapterState] = field(default_factory=dict)
    strategy: dict[str, float] = field(default_factory=dict)


def save(root: str | Path, state: RoundState, keep: int = 2) -> Path:
    """Write ``state`` as ``root/round-NNNNNN`` atomically; keep the newest ``keep`` rounds."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"round-{state.round:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=root))
    try:
        _write_files(tmp, _files_of(state))
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    _prune(root, keep)
    return final


def _files_of(state: RoundState) -> dict[str, bytes]:
    meta = {
        "format": FORMAT, "round": state.round, "records": state.records, "totals": state.totals,
        "config": state.config, "rng": state.rng, "clients": sorted(state.clients),
        "residuals": sorted(state.residuals), "strategy": state.strategy,
    }
    files = {STATE: json.dumps(meta).encode(), ADAPTER: _tensor_bytes(state.adapter)}
    for folder, per_client in ((CLIENTS, state.clients), (RESIDUALS, state.residuals)):
        for name, tensors in per_client.items():
            files[f"{folder}/{_safe_name(name)}.safetensors"] = _tensor_bytes(tensors)
    return files


def _tensor_bytes(state: AdapterState) -> bytes:
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def _safe_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise CheckpointError(f"client name {name!r} cannot be a file name in a checkpoint")
    return name


def _write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Every file, then the manifest of their sizes and sha256s, each flushed to disk."""
    manifest = {"format": FORMAT, "files": {}}
    for rel, data in files.items():
        _write(folder / rel, data)
        manifest["files"][rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write(folder / MANIFEST, json.dumps(manifest, indent=1).encode())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _replace_dir(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first and removed after."""
    if not final.exists():
        tmp.rename(final)
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep: int) -> None:
    """Drop all but the newest ``keep`` rounds, and temporary folders left by interrupted writes."""
    for old in rounds(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".round-*"):
        shutil.rmtree(stale, ignore_errors=True)


def rounds(root: str | Path) -> list[Path]:
    """The complete round folders under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and ROUND_DIR.match(p.name))


def load(root: str | Path) -> RoundState | None:
    """The newest round under ``root`` (None when there is none), every file verified against the manifest."""
    found = rounds(root)
    if not found:
        return None
    folder = found[-1]
    manifest = read_json(folder / MANIFEST)
    files = _verified(folder, manifest)
    meta = _state_of(folder / STATE, files[STATE])
    tensors = {rel: _tensors_of(folder / rel, data) for rel, data in files.items() if rel.endswith(".safetensors")}
    clients, residuals = (
        {name: _listed(tensors, f"{kind}/{name}.safetensors", folder) for name in meta.get(kind, [])}
        for kind in (CLIENTS, RESIDUALS)
    )
    return RoundState(
        meta["round"], tensors[ADAPTER], meta["records"], meta["totals"], meta["config"], clients, meta["rng"],
        residuals, meta.get("strategy", {}),
    )


def _listed(tensors: dict[str, AdapterState], rel: str, folder: Path) -> AdapterState:
    if rel not in tensors:
        raise CheckpointError(f"checkpoint manifest '{folder / MANIFEST}' does not list '{rel}'")
    return tensors[rel]


def _verified(folder: Path, manifest: dict) -> dict[str, bytes]:
    """The bytes of every file the manifest lists, after checking size and sha256."""
    listed = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(listed, dict) or STATE not in listed or ADAPTER not in listed:
        raise CheckpointError(f"checkpoint manifest '{folder / MANIFEST}' does not list the checkpoint's files")
    out = {}
    for rel, meta in listed.items():
        path = _entry(folder, rel, meta)
        if not path.is_file():
            raise CheckpointError(f"checkpoint file '{path}' is missing")
        data = path.read_bytes()
        if len(data) != meta["bytes"]:
            raise CheckpointError(
                f"checkpoint file '{path}' has {len(data):,} bytes, the manifest says {meta['bytes']:,} (truncated?)"
            )
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise CheckpointError(f"checkpoint file '{path}' does not match its sha256 in the manifest (altered?)")
        out[rel] = data
    return out


def _entry(folder: Path, rel: str, meta: Any) -> Path:
    """The path of a file the manifest lists, once its entry is a relative name inside ``folder`` with a size
    and a sha256."""
    well_formed = isinstance(meta, dict) and type(meta.get("bytes")) is int and isinstance(meta.get("sha256"), str)
    if not well_formed or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CheckpointError(f"checkpoint manifest '{folder / MANIFEST}' has a malformed entry {rel!r} (altered?)")
    return folder / rel


def _state_of(path: Path, data: bytes) -> dict[str, Any]:
    meta = _json_of(path, data)
    keys = ("round", "records", "totals", "config", "rng", "clients")
    if not isinstance(meta, dict) or any(k not in meta for k in keys):
        raise CheckpointError(f"checkpoint file '{path}' lacks some of {', '.join(keys)} (altered?)")
    return meta


def read_json(path: str | Path) -> Any:
    """A JSON file, or a :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' is missing")
    return _json_of(path, path.read_bytes())


def _json_of(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"file '{path}' is not valid JSON (truncated or altered?): {err}") from err


def _tensors_of(path: Path, data: bytes) -> AdapterState:
    try:
        return st_load(data)
    except Exception as err:  # safetensors raises several error types for malformed bytes
        raise CheckpointError(f"file '{path}' is not a valid safetensors file (truncated or altered?): {err}") from err


def check_config(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Resuming with another config would mix two runs: name the first key that differs."""
    diffs = _diff(saved, current)
    if diffs:
        key, old, new = diffs[0]
        raise CheckpointError(
            f"checkpoint in '{where}' was written with {key}={old!r}, this run has {key}={new!r}; "
            "resume with the same config or start a new run"
        )


def _diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [(prefix.rstrip("."), a, b)]


def resume(root: str | Path, config: dict[str, Any]) -> RoundState | None:
    """Load the newest round under ``root``, check it belongs to ``config``, restore the RNG states."""
    state = load(root)
    if state is None:
        return None
    check_config(state.config, json.loads(json.dumps(config)), rounds(root)[-1] / STATE)
    restore_rng(state.rng)
    return state
