"""What the apps send each other: adapter state in Flower records, the keys of a Message's content, and the bytes
a Message carries."""

from __future__ import annotations

from collections.abc import Sequence

from flwr.app import ArrayRecord, Message

from ..merge.taskvec import AdapterState
from ..models.adapters import deserialize, serialize

FED_KEY = "fed"  # the one ArrayRecord a train Message carries: the federated adapter
ROWS_KEY = "rows"  # ConfigRecord key of the per-method rows (JSON) in a personalize reply


def to_record(state: AdapterState) -> ArrayRecord:
    """The federated adapter as an ArrayRecord (one fp32 array per tensor, same names)."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def to_payload(record: ArrayRecord) -> bytes:
    """The core's wire format (safetensors bytes) for a received ArrayRecord."""
    return serialize({k: v.float() for k, v in record.to_torch_state_dict().items()})


def from_record(record: ArrayRecord, sender: str) -> AdapterState:
    """A received ArrayRecord as adapter state, validated (finite, well-formed) like any payload."""
    return deserialize(to_payload(record), sender)


def payload_bytes(message: Message) -> int:
    """Bytes of every array record a Message carries, each measured as the core's wire payload (the
    safetensors bytes of :func:`to_payload`, whose length the embedded engine counts), so both engines
    count the same bytes for the same adapter."""
    if not message.has_content():
        return 0
    return sum(len(to_payload(record)) for record in message.content.array_records.values())


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
