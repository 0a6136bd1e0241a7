"""The Flower apps' arrays in each payload dtype: what travels, the bytes the grid meters, hostile arrays."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from potara.flower.wire import FED_KEY, payload_bytes, to_payload, to_record, upload_record
from potara.models.adapters import SCALES, parse_payload, serialize, serialize_int8_update


def lora_adapter(layers: int = 6, r: int = 8, d: int = 384, labels: int = 6) -> dict[str, torch.Tensor]:
    """A MiniLM-sized LoRA adapter on query and value, with its classifier head."""
    generator, state = torch.Generator().manual_seed(0), {}
    for layer in range(layers):
        for module in ("query", "value"):
            prefix = f"bert.encoder.layer.{layer}.attention.self.{module}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(r, d, generator=generator)
            state[f"{prefix}.lora_B.weight"] = torch.randn(d, r, generator=generator) * 0.01
    state["classifier.weight"], state["classifier.bias"] = torch.randn(labels, d), torch.randn(labels)
    return state


@pytest.fixture
def server_identity():
    """A ServerApp's identity, which Flower needs to build a Message; put back as it was afterwards."""
    saved = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def metered(record: ArrayRecord) -> int:
    """The bytes the grid logs for a train message carrying ``record``."""
    return payload_bytes(Message(content=RecordDict({FED_KEY: record}), dst_node_id=1, message_type="train"))


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_a_full_adapter_crosses_bit_for_bit_and_is_metered_as_the_core_payload(dtype, server_identity):
    state = lora_adapter()
    record = to_record(state, dtype)
    assert to_payload(record, dtype) == serialize(state, dtype)
    assert metered(record) == len(serialize(state, dtype))


def test_bf16_travels_as_its_bit_pattern_in_uint16():
    state = lora_adapter()
    record = to_record(state, "bf16")
    assert {a.dtype for a in record.values()} == {"uint16"}
    key = next(iter(state))
    bits = torch.from_numpy(record[key].numpy().view(np.int16).copy()).view(torch.bfloat16)
    assert torch.equal(bits, state[key].to(torch.bfloat16))


def test_an_int8_upload_is_metered_as_the_core_payload_at_about_a_quarter_of_fp32(server_identity):
    state, reference = lora_adapter(), {k: torch.zeros_like(v) for k, v in lora_adapter().items()}
    payload, _ = serialize_int8_update(state, reference, {})
    record = upload_record(payload, state)
    assert {k: a.dtype for k, a in record.items() if a.dtype != "int8"} == {SCALES: "float32"}
    assert list(record.keys()) == [*state, SCALES]
    assert to_payload(record, "int8") == payload
    ratio = metered(record) / metered(to_record(state))
    assert 0.25 < ratio < 0.27


@pytest.mark.parametrize(
    ("dtype", "sent", "named"),
    [
        ("int8", "fp32", "holds float32, expected int8 (fed.payload_dtype=int8"),
        ("fp16", "bf16", "holds uint16, expected float16 (fed.payload_dtype=fp16"),
        ("bf16", "fp16", "holds float16, expected uint16 (fed.payload_dtype=bf16"),
        ("fp32", "fp16", "holds float16, expected float32"),
    ],
)
def test_arrays_of_another_dtype_than_the_configured_payload_are_refused_by_name(dtype, sent, named):
    record = to_record(lora_adapter(), sent)
    with pytest.raises(ValueError, match=re.escape(f"array '{next(iter(record.keys()))}' {named}")):
        to_payload(record, dtype)


def test_int8_scales_must_be_float32():
    state = lora_adapter()
    payload, _ = serialize_int8_update(state, {k: torch.zeros_like(v) for k, v in state.items()}, {})
    record = upload_record(payload, state)
    record[SCALES] = Array(record[SCALES].numpy().astype(np.float16))
    with pytest.raises(ValueError, match=re.escape(f"array '{SCALES}' holds float16, expected float32")):
        to_payload(record, "int8")
    assert parse_payload(payload)[SCALES].dtype == torch.float32
