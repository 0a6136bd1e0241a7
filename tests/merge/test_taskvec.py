"""The merge is exact in function space; distances from factors equal dense ones."""

from __future__ import annotations

import copy

import pytest
import torch

from potara.config import LoraSettings, ModelConfig
from potara.merge.taskvec import (
    LORA_A,
    LORA_B,
    delta_weight,
    extra_keys,
    lora_modules,
    merge,
    merge_factors,
    pad_rank,
    sq_distances,
    task_vector,
)
from potara.models.adapters import get_state, set_state
from potara.models.loading import MERGE_ADAPTER, TRAIN_ADAPTER, load_peft_classifier


def random_state(like: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) * 0.3 for k, v in like.items()}


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_peft_classifier(ModelConfig(name=str(tiny_model_dir)), LoraSettings(r=2, alpha=4), 3, seed=0)


def dense_logits(model, states, weights, scale, inputs):
    """Fold Σ w_i ΔW_i into a copy of the base weights by hand and run the plain transformers model."""
    base = copy.deepcopy(model.get_base_model())
    with torch.no_grad():
        for module in lora_modules(states[0]):
            name = module.removeprefix("base_model.model.")
            layer = base.get_submodule(name).base_layer
            layer.weight += sum(w * delta_weight(s, module, scale) for s, w in zip(states, weights))
            parent, child = name.rsplit(".", 1)
            base.get_submodule(parent).__setattr__(child, layer)
        head = base.get_submodule("classifier").modules_to_save[TRAIN_ADAPTER]
        for key in extra_keys(states[0]):
            getattr(head, key.rsplit(".", 1)[1]).copy_(sum(w * s[key] for s, w in zip(states, weights)))
        base.classifier = head
    base.eval()
    return base(**inputs).logits


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_merge_is_exact_in_function_space(model, lam):
    inputs = {"input_ids": torch.randint(0, 1000, (4, 7)), "attention_mask": torch.ones(4, 7, dtype=torch.long)}
    assert_merge_is_exact(model, inputs, lam)


def assert_merge_is_exact(model, inputs: dict, lam: float) -> None:
    """The merge adapter holding ``merge([fed, local], [λ, 1−λ])`` gives the logits of the folded weights."""
    template = get_state(model)
    fed, local = random_state(template, 1), random_state(template, 2)
    set_state(model, pad_rank(merge([fed, local], [lam, 1 - lam], [2.0, 2.0]), 4), MERGE_ADAPTER)
    model.set_adapter(MERGE_ADAPTER)
    model.eval()
    with torch.no_grad():
        got = model(**inputs).logits
        want = dense_logits(model, [fed, local], [lam, 1 - lam], 2.0, inputs)
    model.set_adapter(TRAIN_ADAPTER)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_merged_task_vector_is_the_weighted_sum(model):
    template = get_state(model)
    reference = random_state(template, 0)
    a, b = random_state(template, 3), random_state(template, 4)
    merged = merge([a, b], [0.25, 0.75], [2.0, 2.0])
    want = {k: 0.25 * va + 0.75 * task_vector(b, 2.0, reference)[k] for k, va in task_vector(a, 2.0, reference).items()}
    got = task_vector(merged, 1.0, reference)
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)


def test_per_module_weights(model):
    template = get_state(model)
    a, b = random_state(template, 5), random_state(template, 6)
    modules = lora_modules(a)
    weights = {m: i / len(modules) for i, m in enumerate(modules)}
    weights["base_model.model.classifier"] = 0.5
    merged = merge([a, b], [weights, {k: 1 - v for k, v in weights.items()}], [2.0, 2.0])
    for m in modules:
        want = weights[m] * delta_weight(a, m, 2.0) + (1 - weights[m]) * delta_weight(b, m, 2.0)
        torch.testing.assert_close(delta_weight(merged, m, 1.0), want, atol=1e-5, rtol=1e-5)


def test_lowrank_distance_matches_dense(model):
    template = get_state(model)
    a, b = random_state(template, 7), random_state(template, 8)
    g = torch.Generator().manual_seed(9)
    metric_dense, metric_kfac = {}, {}
    for m in lora_modules(a):
        d_out, d_in = a[m + LORA_B].shape[0], a[m + LORA_A].shape[1]
        go, xi = torch.rand(d_out, generator=g), torch.rand(d_in, generator=g)
        metric_kfac[m], metric_dense[m] = (go, xi), torch.outer(go, xi)
    for k in extra_keys(a):
        metric_dense[k] = metric_kfac[k] = torch.rand(a[k].shape, generator=g)
    dense = sq_distances(a, b, 2.0, metric_dense)
    kfac = sq_distances(a, b, 2.0, metric_kfac)
    plain = sq_distances(a, b, 2.0)
    for m in lora_modules(a):
        by_hand = ((delta_weight(a, m, 2.0) - delta_weight(b, m, 2.0)) ** 2 * metric_dense[m]).sum()
        assert dense[m] == pytest.approx(float(by_hand), rel=1e-4)
        assert kfac[m] == pytest.approx(dense[m], rel=1e-4)
        assert plain[m] == pytest.approx(float(((delta_weight(a, m, 2.0) - delta_weight(b, m, 2.0)) ** 2).sum()), rel=1e-4)


def test_identical_adapters_have_zero_distance(model):
    a = random_state(get_state(model), 10)
    assert all(v == pytest.approx(0.0, abs=1e-8) for v in sq_distances(a, a, 2.0).values())


def small_pair(seed: int = 0) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    shapes = {"m" + LORA_A: (2, 5), "m" + LORA_B: (4, 2), "head.weight": (3, 4), "head.bias": (3,)}
    return tuple({k: torch.randn(s, generator=g) for k, s in shapes.items()} for _ in range(2))


def test_factor_merge_at_the_ends_is_either_model():
    fed, loc = small_pair()
    for lam, state in ((1.0, fed), (0.0, loc)):
        merged = merge_factors([fed, loc], [lam, 1 - lam], [2.0, 2.0])
        assert torch.equal(merged["m" + LORA_A], state["m" + LORA_A])
        assert torch.equal(merged["m" + LORA_B], 2.0 * state["m" + LORA_B])
        assert all(torch.equal(merged[k], state[k]) for k in extra_keys(state))
        assert merged["m" + LORA_A].shape[0] == 2  # rank r, not 2r


def test_factor_merge_at_one_half_is_not_the_delta_merge():
    fed, loc = small_pair()
    factors = merge_factors([fed, loc], [0.5, 0.5], [2.0, 2.0])
    delta = merge([fed, loc], [0.5, 0.5], [2.0, 2.0])
    expected = 0.25 * 2.0 * (fed["m" + LORA_B] + loc["m" + LORA_B]) @ (fed["m" + LORA_A] + loc["m" + LORA_A])
    assert torch.allclose(delta_weight(factors, "m", 1.0), expected, atol=1e-6)
    assert not torch.allclose(delta_weight(factors, "m", 1.0), delta_weight(delta, "m", 1.0), atol=1e-3)
    assert torch.allclose(factors["head.weight"], delta["head.weight"])


def test_factor_merge_with_module_weights_and_the_average_check():
    fed, loc = small_pair()
    merged = merge_factors([fed, loc], [{"m": 1.0, "head": 0.0}, {"m": 0.0, "head": 1.0}], [1.0, 1.0])
    assert torch.equal(merged["m" + LORA_A], fed["m" + LORA_A]) and torch.equal(merged["head.bias"], loc["head.bias"])
    with pytest.raises(ValueError, match="sum to"):
        merge_factors([fed, loc], [1.0, 1.0], [1.0, 1.0])
