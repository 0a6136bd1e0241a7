"""Exact and Kronecker-factored diagonal model Fisher agree where the factorization is exact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from potara.merge.fisher import dense, laplace_traces, model_fisher


class Out:
    def __init__(self, logits):
        self.logits = logits


class LoraLike(nn.Module):
    """Stands in for a PEFT LoRA layer: the adapted map is ``base_layer``."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.base_layer = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.base_layer(x)


class TwoLayer(nn.Module):
    """A token model: a linear map per token, mean over tokens, a linear head."""

    def __init__(self, d_in=5, d_hidden=4, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.proj = LoraLike(d_in, d_hidden)
        self.head = nn.Linear(d_hidden, classes)

    def forward(self, x, **_):
        return Out(self.head(torch.tanh(self.proj(x)).mean(1)))


def fisher_of(model, x, mode, seed=0):
    batches = [{"x": x}]
    return model_fisher(model, batches, ["proj"], {"head": ["head.weight", "head.bias"]}, mode=mode,
                        samples=1, generator=torch.Generator().manual_seed(seed))


def test_exact_equals_factored_for_one_example_and_one_token():
    model = TwoLayer()
    x = torch.randn(1, 1, 5)
    exact, kfac = fisher_of(model, x, "exact"), fisher_of(model, x, "kfac")
    torch.testing.assert_close(dense(kfac["proj"]), exact["proj"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(kfac["head.weight"], exact["head.weight"])


def test_exact_and_factored_are_close_with_many_tokens():
    model = TwoLayer()
    x = torch.randn(64, 6, 5)
    exact, kfac = fisher_of(model, x, "exact"), dense(fisher_of(model, x, "kfac")["proj"])
    exact = exact["proj"]
    corr = torch.corrcoef(torch.stack([exact.flatten(), kfac.flatten()]))[0, 1]
    assert corr > 0.8
    assert float(kfac.sum() / exact.sum()) == pytest.approx(1.0, rel=0.6)


def test_model_fisher_matches_expectation_over_classes():
    """With many sampled labels the estimate converges to Σ_c p_c g_c²: check the head bias exactly."""
    model = TwoLayer()
    x = torch.randn(3, 2, 5)
    est = model_fisher(model, [{"x": x}], ["proj"], {"head": ["head.weight", "head.bias"]}, samples=4000,
                       generator=torch.Generator().manual_seed(1))["head.bias"]
    with torch.no_grad():
        p = model(x).logits.softmax(-1)
    # d log p_c / d bias = onehot(c) - p  ->  E_c[(onehot - p)²] = p (1 - p)² + Σ_{c'≠c} p_c' p²
    expected = (p * (1 - p) ** 2 + (1 - p) * p**2).mean(0)
    torch.testing.assert_close(est, expected, rtol=0.08, atol=1e-3)


def test_laplace_trace_and_errors():
    f = {"m": torch.tensor([[1.0, 0.0], [2.0, 4.0]])}
    tr = laplace_traces(f, n=10, damping=1e-3)["m"]
    assert tr == pytest.approx(1 / 10.001 + 2 / 20.001 + 4 / 40.001 + 0.0, rel=1e-4)
    with pytest.raises(ValueError, match="zero examples"):
        model_fisher(TwoLayer(), [], ["proj"], {})
