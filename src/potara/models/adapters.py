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

from ..config import ModelConfig
from ..merge.taskvec import AdapterState, check_finite
from .loading import MERGE_ADAPTER, TRAIN_ADAPTER

# int8 is an upload format (:func:`serialize_int8_update`): in an int8 run the global adapter travels down in fp32
WIRE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.int8}
DOWNLOAD_DTYPES = {"int8": "fp32"}
SCALES = "int8.scales"  # the key of an int8 upload's scales
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


def lora_scale(model: PeftModel) -> float:
    """The scale PEFT applies to ``B A`` in the model's active adapter (``lora_alpha / r``)."""
    config = model.peft_config[model.active_adapter]
    return float(config.lora_alpha) / float(config.r)


def serialize(state: AdapterState, dtype: str = "fp32") -> bytes:
    """The payload that travels: safetensors bytes (its length is what the byte counters measure); a full state
    in an int8 run (the global adapter) travels in fp32."""
    cast = WIRE_DTYPES[DOWNLOAD_DTYPES.get(dtype, dtype)]
    return st_save({k: v.to(cast).contiguous() for k, v in state.items()})


def pack(tensors: AdapterState) -> bytes:
    """The payload of tensors already in their wire dtypes (as :func:`parse_payload` returns them), cast to none."""
    return st_save({k: v.contiguous() for k, v in tensors.items()})


def scale_rows(x: torch.Tensor) -> torch.Tensor:
    """The 2-D view of ``x`` whose rows share a scale: its rows, or its columns when it has more rows than columns
    (LoRA's ``B``, d × r, gets r scales, not d); a 1-D tensor is one row."""
    view = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    return view.T if view.shape[0] > view.shape[1] else view


def scale_count(shape: tuple[int, ...]) -> int:
    """How many scales an int8 tensor of ``shape`` carries."""
    return scale_rows(torch.empty(shape, device="meta")).shape[0]


def quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` as int8 with one absmax scale per row (per column when taller than wide, per tensor when 1-D):
    ``q · scale`` is within scale/2 of ``x``."""
    rows = scale_rows(x)
    scale = rows.abs().amax(dim=1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.empty(x.shape, dtype=torch.int8)
    scale_rows(q).copy_(torch.round(rows / scale[:, None]).clamp(-127, 127))
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float32 values of an int8 tensor and its scales."""
    out = torch.empty(q.shape, dtype=torch.float32)
    scale_rows(out).copy_(scale_rows(q).to(torch.float32) * scale[:, None])
    return out


def serialize_int8_update(
    state: AdapterState, reference: AdapterState, residual: AdapterState
) -> tuple[bytes, AdapterState]:
    """An int8 upload of the update ``state − reference`` plus the client's quantization ``residual`` of its last
    upload (error feedback); and the new residual, which stays on the client. The scales of all tensors travel as
    one float32 tensor ``SCALES``, in the tensors' sorted key order (one header entry, not one per tensor)."""
    out, scales, left = {}, [], {}
    for key in sorted(state):
        x = state[key] - reference[key] + residual.get(key, torch.zeros_like(state[key]))
        q, scale = quantize(x)
        out[key] = q
        scales.append(scale)
        left[key] = x - dequantize(q, scale)
    return st_save({**out, SCALES: torch.cat(scales)}), left


def int8_parts(raw: AdapterState) -> tuple[AdapterState, AdapterState]:
    """(the tensors, each int8 tensor's scales) of a parsed payload; no scales when it is not an int8 upload.
    ``ValueError`` when int8 tensors and the ``SCALES`` tensor do not fit each other."""
    tensors = {k: v for k, v in raw.items() if k != SCALES}
    quantized = sorted(k for k, v in tensors.items() if v.dtype == torch.int8)
    if SCALES not in raw and not quantized:
        return tensors, {}
    flat = raw.get(SCALES)
    counts = [scale_count(tuple(tensors[k].shape)) for k in quantized]
    if flat is None or flat.dtype != torch.float32 or tuple(flat.shape) != (sum(counts),):
        raise ValueError(
            f"int8 payload: {SCALES!r} must be float32 of shape ({sum(counts)},), one scale per row of its int8 tensors"
        )
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"int8 payload: {SCALES!r} has non-finite values")
    return tensors, dict(zip(quantized, torch.split(flat, counts)))


def decoded(tensors: AdapterState, scales: AdapterState, reference: AdapterState) -> AdapterState:
    """Float32 tensors of an upload: an int8 update dequantized and added to ``reference`` (the global adapter
    the client received); other tensors as they are."""
    return {k: reference[k] + dequantize(v, scales[k]) if k in scales else v.to(torch.float32) for k, v in tensors.items()}


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


def write_labels(adapter_dir: str | Path, names: list[str], max_length: int | None = None) -> None:
    """The classifier's labels beside a PEFT adapter: ``num_labels``, ``id2label``, ``label2id``, and the input
    length in tokens it was trained and evaluated at (``max_length``), so that ``potara predict`` truncates alike."""
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)},
              **({"max_length": max_length} if max_length is not None else {})}
    (Path(adapter_dir) / LABELS_FILE).write_text(json.dumps(labels, indent=2))


def read_max_length(adapter_dir: str | Path) -> int | None:
    """The input length an adapter was trained at, from its ``labels.json``; None when not recorded."""
    path = Path(adapter_dir) / LABELS_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("max_length")
    except (ValueError, AttributeError) as err:
        raise ValueError(f"'{path}' is not a potara labels file: {err}") from err
    if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"'{path}': max_length must be a positive integer, got {value!r}")
    return value


def input_length(adapter_dir: str | Path, given: int | None = None) -> int:
    """The tokens to truncate an adapter's inputs at: ``given``, else the length it was trained at (recorded with
    it), else a run's default ``model.max_length`` (an adapter saved before the length was recorded)."""
    return given or read_max_length(adapter_dir) or ModelConfig().max_length


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


def label_adapters(export_dir: str | Path, names: list[str], max_length: int | None = None) -> None:
    """Write the labels (and the input length) beside every PEFT adapter under ``export_dir``."""
    for config in Path(export_dir).rglob("adapter_config.json"):
        write_labels(config.parent, names, max_length)
