"""What the apps send each other: adapter state in Flower records, the keys of a Message's content, and the bytes
a Message carries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS as SECAGG_KEY

from ..merge.spread import SPREAD_BYTES, UpdateSpread
from ..merge.taskvec import AdapterState
from ..models.adapters import deserialize, serialize

FED_KEY = "fed"  # the one ArrayRecord a train Message carries: the federated adapter
ROWS_KEY = "rows"  # ConfigRecord key of the per-method rows (JSON) in a personalize reply
KEYS_KEY = "fed-keys"  # under SecAgg+: the adapter's tensor names (JSON), in the order of the legacy Parameters
SPREAD_KEY = "spread"  # ConfigRecord of a personalize Message: the last round's update spread s² and its count m


def to_record(state: AdapterState) -> ArrayRecord:
    """The federated adapter as an ArrayRecord (one fp32 array per tensor, same names)."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def to_payload(record: ArrayRecord) -> bytes:
    """The core's wire format (safetensors bytes) for a received ArrayRecord; ``ValueError`` when it is not an
    ArrayRecord of readable float32 arrays (a peer's bytes are not trusted: nothing is cast)."""
    if not isinstance(record, ArrayRecord):
        raise ValueError(f"expected an ArrayRecord of the adapter's tensors, got a {type(record).__name__}")
    return serialize({key: _tensor(key, array) for key, array in record.items()})


def _tensor(key: str, array: Array) -> torch.Tensor:
    try:
        values = array.numpy()
    except Exception as err:  # NumPy raises several error types for malformed bytes
        raise ValueError(f"array '{key}' is not a readable NumPy array ({type(err).__name__}: {err})") from err
    if not isinstance(values, np.ndarray) or values.dtype != np.float32:
        raise ValueError(f"array '{key}' holds {getattr(values, 'dtype', type(values).__name__)}, expected float32")
    return torch.tensor(values)


def spread_record(spread: UpdateSpread) -> ConfigRecord:
    """The update spread as a personalize Message carries it."""
    return ConfigRecord({"update-spread": spread.spread, "update-count": spread.count})


def spread_of(message: Message) -> UpdateSpread | None:
    """The update spread a personalize Message carries (None when it carries none); ``ValueError`` when malformed."""
    record = message.content.config_records.get(SPREAD_KEY)
    return None if record is None else UpdateSpread(record["update-spread"], record["update-count"])


def from_record(record: ArrayRecord, sender: str) -> AdapterState:
    """A received ArrayRecord as adapter state, validated (finite, well-formed) like any payload."""
    return deserialize(to_payload(record), sender)


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
    """The record's wire payload length; for a record that is not one (a malformed reply), Flower's count of
    what crossed."""
    try:
        return len(to_payload(record))
    except ValueError:
        return record.count_bytes()


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
