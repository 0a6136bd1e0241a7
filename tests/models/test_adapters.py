"""Payload round trips, and exported merges load with plain ``peft`` and give the same logits."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from potara.config import LoraSettings, ModelConfig
from potara.merge.taskvec import merge, pad_rank
from potara.models.adapters import (
    deserialize,
    export_peft_dir,
    get_state,
    input_length,
    serialize,
    set_state,
    write_labels,
)
from potara.models.loading import MERGE_ADAPTER, TRAIN_ADAPTER, load_peft_classifier


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_peft_classifier(ModelConfig(name=str(tiny_model_dir)), LoraSettings(r=2, alpha=4), 3, seed=0)


def randomized(state, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.2 * torch.randn(v.shape, generator=g) for k, v in state.items()}


def test_payload_round_trip_and_size(model):
    state = randomized(get_state(model), 0)
    payload = serialize(state)
    back = deserialize(payload)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    n_params = sum(v.numel() for v in state.values())
    assert n_params * 4 <= len(payload) < n_params * 4 + 8192
    assert abs(len(payload) - len(serialize(state, "bf16")) - 2 * n_params) < 256  # half the tensor bytes


def test_bad_payloads_are_rejected_with_the_client_name(model):
    with pytest.raises(ValueError, match="client c7"):
        deserialize(b"not safetensors", "c7")
    state = get_state(model)
    state[next(iter(state))][0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        deserialize(serialize(state), "c8")


def test_exported_merge_loads_with_peft_and_gives_identical_logits(model, tiny_model_dir, tmp_path):
    template = get_state(model)
    fed, local = randomized(template, 1), randomized(template, 2)
    merged = pad_rank(merge([fed, local], [0.3, 0.7], [2.0, 2.0]), 4)
    inputs = {"input_ids": torch.randint(0, 1000, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    base = lambda: AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)  # noqa: E731
    assert_export_reloads(model, merged, inputs, base, tmp_path)


def assert_export_reloads(model, merged, inputs: dict, load_base, tmp_path) -> None:
    """``merged`` exported as a PEFT directory and loaded by plain ``PeftModel.from_pretrained`` on
    ``load_base()`` gives the logits the merge adapter gives."""
    out = export_peft_dir(model, merged, tmp_path / "client_00")
    model.set_adapter(MERGE_ADAPTER)
    model.eval()
    with torch.no_grad():
        want = model(**inputs).logits
    model.set_adapter(TRAIN_ADAPTER)
    loaded = PeftModel.from_pretrained(load_base(), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, want, atol=1e-5, rtol=1e-5)


def test_set_state_rejects_missing_tensors(model):
    state = get_state(model)
    state.pop(next(iter(state)))
    with pytest.raises(KeyError, match="missing"):
        set_state(model, state)


def test_inputs_are_truncated_as_asked_else_as_trained_else_at_the_run_default(tmp_path):
    legacy, recorded, broken = (tmp_path / name for name in ("legacy", "recorded", "broken"))
    for folder in (legacy, recorded, broken):
        folder.mkdir()
    write_labels(legacy, ["a", "b"])  # saved before the length was recorded
    write_labels(recorded, ["a", "b"], max_length=24)
    (broken / "labels.json").write_text('{"max_length": 0}')
    assert input_length(recorded, 64) == 64 and input_length(recorded) == 24
    assert input_length(legacy) == ModelConfig().max_length == input_length(tmp_path)  # no labels.json at all
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        input_length(broken)
