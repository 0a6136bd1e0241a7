"""int8 uploads: per-row absmax scales, error feedback on the client, bytes on the wire, malformed payloads."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save as st_save

from potara.config import ValidationConfig
from potara.federation.update import ClientUpdate
from potara.federation.validation import Expectation, InvalidUpdate, check_update
from potara.models.adapters import (
    SCALES,
    decoded,
    dequantize,
    int8_parts,
    parse_payload,
    quantize,
    serialize,
    serialize_int8_update,
)


def lora_adapter(layers: int = 6, r: int = 8, d: int = 384, labels: int = 6) -> dict[str, torch.Tensor]:
    """A MiniLM-sized LoRA adapter on query and value, with its classifier head."""
    torch.manual_seed(0)
    state = {}
    for layer in range(layers):
        for module in ("query", "value"):
            prefix = f"base_model.model.bert.encoder.layer.{layer}.attention.self.{module}"
            state[f"{prefix}.lora_A.weight"], state[f"{prefix}.lora_B.weight"] = torch.randn(r, d), torch.randn(d, r)
    state["base_model.model.classifier.weight"] = torch.randn(labels, d)
    state["base_model.model.classifier.bias"] = torch.randn(labels)
    return state


@pytest.mark.parametrize("shape", [(8, 384), (384, 8), (6,), (3, 4, 5)])
def test_dequantized_is_within_half_a_scale_of_the_original(shape):
    x = torch.randn(shape) * torch.linspace(0.01, 10, shape[-1])
    q, scale = quantize(x)
    assert q.dtype == torch.int8
    error = (dequantize(q, scale) - x).abs()
    rows = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.reshape(1, -1)
    per_element = (scale[:, None] if rows.shape[0] <= rows.shape[1] else scale[None, :]).expand_as(rows)
    assert bool((error.reshape(rows.shape) <= per_element / 2 + 1e-7).all())


def test_error_feedback_makes_the_uploads_track_the_true_updates():
    """Σ uploads = Σ true updates − the last residual (≤ scale/2 per element); without feedback the error adds up."""
    torch.manual_seed(1)
    reference, residual = {"w": torch.zeros(4, 64)}, {}
    sent, true, plain = torch.zeros(4, 64), torch.zeros(4, 64), torch.zeros(4, 64)
    for _ in range(50):
        update = {"w": torch.randn(4, 64) * 0.01 + 0.003}
        payload, residual = serialize_int8_update(update, reference, residual)
        tensors, scales = int8_parts(parse_payload(payload))
        sent += decoded(tensors, scales, reference)["w"]
        true += update["w"]
        plain += dequantize(*quantize(update["w"]))
    tracked = float((sent - true).abs().max())
    assert tracked == pytest.approx(float(residual["w"].abs().max()), rel=1e-4)
    assert tracked < 0.5 * float((plain - true).abs().max())


def test_int8_upload_bytes_are_at_most_0_27_of_fp32_for_a_lora_adapter():
    state = lora_adapter()
    payload, _ = serialize_int8_update(state, {k: torch.zeros_like(v) for k, v in state.items()}, {})
    assert len(payload) <= 0.27 * len(serialize(state))


def test_an_int8_upload_is_checked_and_decoded_against_the_global_adapter():
    current = {"a": torch.ones(2, 6), "b": torch.zeros(6, 2)}
    trained = {"a": torch.ones(2, 6) * 1.5, "b": torch.full((6, 2), 0.2)}
    payload, _ = serialize_int8_update(trained, current, {})
    limits = ValidationConfig(dtypes=["fp32", "int8"])
    state = check_update(ClientUpdate("c", payload, 5, 0.1), Expectation.of(current), limits)
    assert torch.allclose(state["a"], trained["a"], atol=0.5 / 127) and torch.allclose(state["b"], trained["b"], atol=1e-3)
    with pytest.raises(InvalidUpdate, match="dtype torch.int8"):
        check_update(ClientUpdate("c", payload, 5, 0.1), Expectation.of(current), ValidationConfig())


@pytest.mark.parametrize(
    "tensors",
    [
        {"a": torch.ones(2, 6, dtype=torch.int8), "b": torch.ones(6, 2, dtype=torch.int8)},  # no scales
        {"a": torch.ones(2, 6, dtype=torch.int8), "b": torch.ones(6, 2, dtype=torch.int8), SCALES: torch.ones(3)},
        {"a": torch.ones(2, 6, dtype=torch.int8), "b": torch.ones(6, 2, dtype=torch.int8),
         SCALES: torch.tensor([1.0, float("nan"), 1.0, 1.0])},
    ],
)
def test_a_malformed_int8_upload_is_rejected_with_its_reason(tensors):
    current = {"a": torch.ones(2, 6), "b": torch.zeros(6, 2)}
    limits = ValidationConfig(dtypes=["fp32", "int8"])
    with pytest.raises(InvalidUpdate, match="int8 payload"):
        check_update(ClientUpdate("c", st_save(tensors), 5, 0.1), Expectation.of(current), limits)


def test_a_run_with_int8_uploads_sends_fewer_bytes_and_rejects_none(tmp_path, tiny_overrides):
    import json

    from potara.cli.main import main

    bytes_up = {}
    for dtype in ("fp32", "int8"):
        sets = [*tiny_overrides, "methods=fedit", "fed.rounds=2", f"fed.payload_dtype={dtype}"]
        assert main(["run", "--out", str(tmp_path / dtype), *[a for s in sets for a in ("--set", s)]]) == 0
        bytes_up[dtype] = json.loads((tmp_path / dtype / "summary.json").read_text())["methods"]["fedit"]["bytes_up"]
    assert bytes_up["int8"] < 0.55 * bytes_up["fp32"]  # r = 2, width 32: the headers weigh far more than at MiniLM size
    assert "rejected" not in (tmp_path / "int8" / "rounds.jsonl").read_text()
