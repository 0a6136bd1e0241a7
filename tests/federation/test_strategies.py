"""FedAvg and the exact product average on adapters small enough to average by hand."""

from __future__ import annotations

import pytest
import torch

from potara.federation.strategies import FedAvg, ProductFedAvg


def client(a: list[list[float]], b: list[list[float]], head: float) -> dict[str, torch.Tensor]:
    """A LoRA module ``q`` with factors ``A``, ``B`` and a one-weight head."""
    return {"q.lora_A.weight": torch.tensor(a), "q.lora_B.weight": torch.tensor(b), "head.weight": torch.tensor([head])}


def test_fedavg_weights_every_tensor_by_example_counts():
    """n = 2, 3, 5: head (2·0 + 3·10 + 5·4)/10 = 5 (the unweighted mean is 14/3); A likewise, entry by entry."""
    updates = [(client([[0.0, 1.0]], [[1.0]], 0.0), 2), (client([[10.0, 1.0]], [[2.0]], 10.0), 3),
               (client([[4.0, -1.0]], [[0.0]], 4.0), 5)]
    out = FedAvg().aggregate(updates, updates[0][0])
    assert out["head.weight"].tolist() == pytest.approx([5.0])
    assert out["q.lora_A.weight"].tolist()[0] == pytest.approx([5.0, (2 + 3 - 5) / 10])
    assert out["q.lora_B.weight"].item() == pytest.approx((2 + 6 + 0) / 10)


def test_fedavg_without_examples_keeps_the_current_adapter():
    current = client([[1.0]], [[1.0]], 1.0)
    assert FedAvg().aggregate([], current) is current


def test_product_averages_b_times_a_and_keeps_its_best_rank_one_part():
    """Rank 1, n = 1 and 3: B·A = diag(1, 0) and diag(0, 1), weighted mean diag(¼, ¾); its best rank-1 part is
    diag(0, ¾), split evenly between the factors (‖A‖ = ‖B‖ = √¾). Averaging the factors would give
    B·A = [¼, ¾]ᵀ[¼, ¾]. The head is FedAvg's: (1·2 + 3·6)/4 = 5."""
    updates = [(client([[1.0, 0.0]], [[1.0], [0.0]], 2.0), 1), (client([[0.0, 1.0]], [[0.0], [1.0]], 6.0), 3)]
    out = ProductFedAvg().aggregate(updates, updates[0][0])
    a, b = out["q.lora_A.weight"], out["q.lora_B.weight"]
    assert a.shape == (1, 2) and b.shape == (2, 1)
    torch.testing.assert_close(b @ a, torch.tensor([[0.0, 0.0], [0.0, 0.75]]))
    assert a.norm().item() == pytest.approx(0.75**0.5) and b.norm().item() == pytest.approx(0.75**0.5)
    assert out["head.weight"].tolist() == pytest.approx([5.0])


def test_product_is_exact_when_the_average_fits_the_rank():
    """Rank 2 with one zero row each: B·A = diag(1, 0), diag(0, 1) average to diag(¼, ¾) exactly."""
    zero = [0.0, 0.0]
    updates = [(client([[1.0, 0.0], zero], [[1.0, 0.0], [0.0, 0.0]], 0.0), 1),
               (client([[0.0, 1.0], zero], [[0.0, 0.0], [1.0, 0.0]], 0.0), 3)]
    out = ProductFedAvg().aggregate(updates, updates[0][0])
    torch.testing.assert_close(out["q.lora_B.weight"] @ out["q.lora_A.weight"], torch.diag(torch.tensor([0.25, 0.75])))
