"""What a client sends back after its step: the travelling tensors as bytes, and what stays on the client."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..merge.taskvec import AdapterState


@dataclass
class ClientUpdate:
    client: str
    payload: bytes
    n: int
    train_loss: float
    kept: AdapterState = field(default_factory=dict)  # the tensors that stay on the client (never serialized)
    residual: AdapterState = field(default_factory=dict)  # int8 uploads: the quantization error, kept by the client
