"""Local training: the task head's learning rate is ``lora.head_lr_scale`` times the LoRA factors'."""

from __future__ import annotations

import pytest
import torch

from potara import config, engine
from potara.merge.taskvec import LORA_B, extra_keys
from potara.models.adapters import get_state
from potara.models.loading import load_peft_classifier
from potara.training.loop import Budget, train


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_one_adam_step_moves_the_head_scale_times_as_far_as_the_lora_factors(tiny_overrides, scale):
    cfg = config.load(None, [*tiny_overrides, f"lora.head_lr_scale={scale}"])
    fed_data = engine.load_federated_data(cfg)
    model = load_peft_classifier(cfg.model, cfg.lora, len(fed_data.label_names), cfg.seed)
    data = engine.encode_clients(cfg, fed_data)[0].train
    before = get_state(model)
    budget = Budget(epochs=1, steps=1, lr=1e-3, head_lr_scale=engine.fed_budget(cfg).head_lr_scale)
    train(model, data, budget, torch.Generator().manual_seed(0))
    after = get_state(model)

    def largest_step(keys):
        return max(float((after[k] - before[k]).abs().max()) for k in keys)

    # Adam's first step moves every parameter with a gradient by about its lr
    assert largest_step([k for k in before if k.endswith(LORA_B)]) == pytest.approx(1e-3, rel=0.01)
    assert largest_step(extra_keys(before)) == pytest.approx(1e-3 * scale, rel=0.01)


def test_a_non_positive_head_lr_scale_is_a_config_error(tiny_overrides):
    with pytest.raises(config.ConfigError, match="lora.head_lr_scale"):
        config.load(None, [*tiny_overrides, "lora.head_lr_scale=0"])
