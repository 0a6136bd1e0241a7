"""Adapter state in and out of the PEFT model, on the wire (safetensors bytes) and on disk (PEFT dirs)."""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..merge.taskvec import AdapterState, check_finite
from .loading import MERGE_ADAPTER, TRAIN_ADAPTER

WIRE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_PARAMETERS: weakref.WeakKeyDictionary[PeftModel, dict[str, dict[str, torch.nn.Parameter]]] = weakref.WeakKeyDictionary()


def get_state(model: PeftModel, adapter: str = TRAIN_ADAPTER) -> AdapterState:
    """A detached CPU copy of one adapter's trainable tensors (LoRA factors and saved modules)."""
    return {k: p.detach().to("cpu", copy=True) for k, p in adapter_parameters(model, adapter).items()}


def adapter_parameters(model: PeftModel, adapter: str = TRAIN_ADAPTER) -> dict[str, torch.nn.Parameter]:
    """One adapter's trainable tensors as the model's live parameters, keyed and ordered as PEFT's adapter state
    dict; found once per model and adapter (a walk of the whole model), then served from a cache (a new dict)."""
    per_model = _PARAMETERS.setdefault(model, {})
    if adapter not in per_model:
        per_model[adapter] = _find_parameters(model, adapter)
    return dict(per_model[adapter])


def _find_parameters(model: PeftModel, adapter: str) -> dict[str, torch.nn.Parameter]:
    """The walk behind :func:`adapter_parameters`, checked against PEFT's own adapter state dict."""
    out = {}
    for name, param in model.named_parameters():
        if f".{adapter}." in name and ("lora_" in name or ".modules_to_save." in name):
            out[name.replace(f".{adapter}.", ".").replace(".modules_to_save.", ".")] = param
    expected = list(get_peft_model_state_dict(model, adapter_name=adapter))
    if set(out) != set(expected):
        raise KeyError(f"adapter '{adapter}': parameters {sorted(set(out) ^ set(expected))[:3]} do not match its state")
    return {k: out[k] for k in expected}


@torch.no_grad()
def set_state(model: PeftModel, state: AdapterState, adapter: str = TRAIN_ADAPTER) -> None:
    """Copy ``state`` into one adapter's parameters in place (keys it does not name are ignored, as PEFT does)."""
    params = adapter_parameters(model, adapter)
    missing = [k for k in params if k not in state]
    if missing:
        raise KeyError(f"adapter state is missing {len(missing)} tensors, e.g. {missing[0]}")
    for key, param in params.items():
        if state[key].shape != param.shape:
            raise RuntimeError(
                f"adapter '{adapter}': tensor {key!r} has shape {tuple(state[key].shape)}, "
                f"the model's {tuple(param.shape)}"
            )
        param.copy_(state[key])


def serialize(state: AdapterState, dtype: str = "fp32") -> bytes:
    """The payload that travels: safetensors bytes (its length is what the byte counters measure)."""
    cast = WIRE_DTYPES[dtype]
    return st_save({k: v.to(cast).contiguous() for k, v in state.items()})


def parse_payload(payload: bytes) -> AdapterState:
    """The tensors of a payload as sent (dtype kept); ``ValueError`` when the bytes are not safetensors."""
    try:
        return st_load(payload)
    except Exception as err:  # safetensors raises several error types for malformed bytes
        raise ValueError(f"not a valid safetensors blob ({' '.join(str(err).split())})") from err


def deserialize(payload: bytes, client: str = "?") -> AdapterState:
    try:
        state = parse_payload(payload)
    except ValueError as err:
        raise ValueError(f"payload from client {client} is {err}") from err
    state = {k: v.to(torch.float32) for k, v in state.items()}
    check_finite(state, f"payload from client {client}")
    return state


def as_received(state: AdapterState, dtype: str) -> AdapterState:
    """``state`` as a client holds it after a download in ``dtype``: rounded to the wire dtype, back in fp32."""
    return state if dtype == "fp32" else deserialize(serialize(state, dtype), "server")


def export_peft_dir(model: PeftModel, state: AdapterState, out_dir: str | Path) -> Path:
    """Write ``state`` (an exact merge, rank 2r, scale 1) as a standard PEFT adapter directory, atomically."""
    out_dir = Path(out_dir)
    set_state(model, state, MERGE_ADAPTER)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp), selected_adapters=[MERGE_ADAPTER])
        saved = tmp / MERGE_ADAPTER
        _mark_inference_mode(saved / "adapter_config.json")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        saved.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _mark_inference_mode(config_path: Path) -> None:
    config = json.loads(config_path.read_text())
    config["inference_mode"] = True
    config_path.write_text(json.dumps(config, indent=2))


LABELS_FILE = "labels.json"  # beside adapter_config.json: PEFT's config has no field for the classifier's labels


def write_labels(adapter_dir: str | Path, names: list[str]) -> None:
    """The classifier's labels beside a PEFT adapter: ``num_labels``, ``id2label``, ``label2id``."""
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}
    (Path(adapter_dir) / LABELS_FILE).write_text(json.dumps(labels, indent=2))


def read_labels(adapter_dir: str | Path) -> list[str] | None:
    """The label names saved beside an adapter (by id), or None for an adapter saved without them."""
    path = Path(adapter_dir) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        id2label = json.loads(path.read_text())["id2label"]
        return [id2label[str(i)] for i in range(len(id2label))]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"'{path}' is not a potara labels file (num_labels, id2label, label2id): {err}") from err


def label_adapters(export_dir: str | Path, names: list[str]) -> None:
    """Write the labels beside every PEFT adapter under ``export_dir``."""
    for config in Path(export_dir).rglob("adapter_config.json"):
        write_labels(config.parent, names)
