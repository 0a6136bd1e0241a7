"""What the apps send each other: adapter state in Flower records, the keys of a Message's content, and the bytes
a Message carries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG_KEY

from ..merge.spread import SPREAD_BYTES, UpdateSpread
from ..merge.taskvec import AdapterState
from ..models.adapters import DOWNLOAD_DTYPES, SCALES, WIRE_DTYPES, deserialize, pack, parse_payload

FED_KEY = "fed"  # the one ArrayRecord a train Message carries: the federated adapter
ROWS_KEY = "rows"  # ConfigRecord key of the per-method rows (JSON) in a personalize reply
KEYS_KEY = "fed-keys"  # under SecAgg+: the adapter's tensor names (JSON), in the order of the legacy Parameters
SPREAD_KEY = "spread"  # ConfigRecord of a personalize Message: the last round's update spread s² and its count m


# How a tensor of each wire dtype travels as a NumPy array (int8 uploads: int8 arrays, their scales float32)
ARRAY_DTYPES = {"fp32": np.float32, "fp16": np.float16, "bf16": np.uint16, "int8": np.int8}


def download_dtype(payload_dtype: str) -> str:
    """The wire dtype of the global adapter for ``fed.payload_dtype`` (int8 is an upload format: fp32 down)."""
    return DOWNLOAD_DTYPES.get(payload_dtype, payload_dtype)


def to_record(state: AdapterState, dtype: str = "fp32") -> ArrayRecord:
    """The federated adapter as an ArrayRecord (one array per tensor, same names and order), cast to the wire dtype
    of a full state for ``dtype`` (fp32 in an int8 run, as the core's ``serialize``)."""
    cast = WIRE_DTYPES[download_dtype(dtype)]
    return as_record({k: v.to(cast) for k, v in state.items()})


def as_record(tensors: AdapterState) -> ArrayRecord:
    """Tensors already in their wire dtypes as an ArrayRecord, in their order."""
    return ArrayRecord({k: Array(_numpy(v)) for k, v in tensors.items()})


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    values = tensor.detach().cpu().contiguous()
    if values.dtype == torch.bfloat16:  # NumPy has no bfloat16: its bit pattern travels as uint16
        return values.view(torch.int16).numpy().view(np.uint16)
    return values.numpy()


def upload_record(payload: bytes, order: Iterable[str]) -> ArrayRecord:
    """A client's upload payload (any wire dtype; int8: with its scales) as an ArrayRecord, its tensors in
    ``order`` (the received record's: Flower's DP clipping pairs arrays by position), the scales last."""
    tensors, order = parse_payload(payload), list(order)
    return as_record({k: tensors[k] for k in [*order, *(k for k in tensors if k not in order)]})


def to_payload(record: ArrayRecord, dtype: str = "fp32") -> bytes:
    """The core's wire format (safetensors bytes) for a received ArrayRecord in wire dtype ``dtype``; ``ValueError``
    naming the array when it is not an ArrayRecord of readable arrays of that dtype (int8: int8 arrays and the
    float32 scales); a peer's bytes are not trusted: nothing is cast."""
    if not isinstance(record, ArrayRecord):
        raise ValueError(f"expected an ArrayRecord of the adapter's tensors, got a {type(record).__name__}")
    return pack({key: _tensor(key, array, dtype) for key, array in record.items()})


def _tensor(key: str, array: Array, dtype: str) -> torch.Tensor:
    expected = np.dtype(np.float32 if dtype == "int8" and key == SCALES else ARRAY_DTYPES[dtype])
    try:
        values = array.numpy()
    except Exception as err:  # NumPy raises several error types for malformed bytes
        raise ValueError(f"array '{key}' is not a readable NumPy array ({type(err).__name__}: {err})") from err
    if not isinstance(values, np.ndarray) or values.dtype != expected:
        got = getattr(values, "dtype", type(values).__name__)
        raise ValueError(f"array '{key}' holds {got}, expected {expected} (fed.payload_dtype={dtype} on the wire)")
    if dtype == "bf16":  # the uint16 bit pattern of a bfloat16 tensor
        return torch.from_numpy(values.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(values.copy())


def spread_record(spread: UpdateSpread) -> ConfigRecord:
    """The update spread as a personalize Message carries it."""
    return ConfigRecord({"update-spread": spread.spread, "update-count": spread.count})


def spread_of(message: Message) -> UpdateSpread | None:
    """The update spread a personalize Message carries (None when it carries none); ``ValueError`` when malformed."""
    record = message.content.config_records.get(SPREAD_KEY)
    return None if record is None else UpdateSpread(record["update-spread"], record["update-count"])


def from_record(record: ArrayRecord, sender: str, dtype: str = "fp32") -> AdapterState:
    """A received ArrayRecord in wire dtype ``dtype`` as fp32 adapter state, validated (finite, well-formed) like
    any payload."""
    return deserialize(to_payload(record, dtype), sender)


def payload_bytes(message: Message) -> int:
    """Bytes of every array record a Message carries, each measured as the core's wire payload (the
    safetensors bytes of :func:`to_payload`, whose length the embedded engine counts), so both engines
    count the same bytes for the same adapter; plus, in SecAgg+ messages, their protocol record (keys,
    key shares, the masked upload), and the update spread's 16 bytes where it travels (as the embedded engine
    counts them)."""
    if not message.has_content():
        return 0
    content = message.content
    protocol = config_bytes(content.config_records[SECAGG_KEY]) if SECAGG_KEY in content.config_records else 0
    spread = SPREAD_BYTES if SPREAD_KEY in content.config_records else 0
    return protocol + spread + sum(_wire_bytes(record) for record in content.array_records.values())


def config_bytes(record: ConfigRecord) -> int:
    """Bytes of a ConfigRecord's keys and values (bytes and strings by length, numbers and bools as 8); by hand,
    as Flower 1.42's ``ConfigRecord.count_bytes`` fails on an empty list (SecAgg+'s list of dropped nodes)."""
    def size(value: Any) -> int:
        if isinstance(value, list):
            return sum(size(v) for v in value)
        return len(value.encode() if isinstance(value, str) else value) if isinstance(value, (str, bytes)) else 8

    return sum(len(key.encode()) + size(value) for key, value in record.items())


def _wire_bytes(record: ArrayRecord) -> int:
    """The record's wire payload length in the wire dtype its arrays say they are in; for a record that is not
    one (a malformed reply), Flower's count of what crossed."""
    try:
        return len(to_payload(record, _wire_dtype(record)))
    except ValueError:
        return record.count_bytes()


def _wire_dtype(record: ArrayRecord) -> str:
    """The wire dtype a record's arrays are in, judged by their NumPy dtypes (int8 arrays: an int8 upload)."""
    held = {array.dtype for array in record.values()}
    return next((name for name, kind in ARRAY_DTYPES.items() if np.dtype(kind).name in held and name != "fp32"), "fp32")


def array_bytes(message: Message) -> int:
    """Bytes of every array a Message carries (Flower's ``ArrayRecord.count_bytes``: data + key names)."""
    if not message.has_content():
        return 0
    return sum(
        record.count_bytes() for record in message.content.array_records.values()
    )


def record_keys(message: Message) -> dict[str, dict[str, list[str]]]:
    """Names of every record, and of every entry in it, that a Message carries (for audits)."""
    if not message.has_content():
        return {"arrays": {}, "metrics": {}, "configs": {}}
    content = message.content
    return {
        "arrays": {k: sorted(r.keys()) for k, r in content.array_records.items()},
        "metrics": {k: sorted(r.keys()) for k, r in content.metric_records.items()},
        "configs": {k: sorted(r.keys()) for k, r in content.config_records.items()},
    }


def origin(reply: Message, sent: Sequence[Message]) -> int:
    """The node a reply answers for: its sender, or, for an error the SuperLink writes on behalf of a lost
    node (sent from the SuperLink's own id), the destination of the message it replies to."""
    to = {
        m.metadata.message_id: m.metadata.dst_node_id
        for m in sent
        if m.metadata.message_id
    }
    return to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
