"""Every λ estimator on a stand-in session whose losses, adapters and Fisher are known: answers computed by hand."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from potara.merge.mixing import EPS
from potara.personalize.estimators import cautious, crossfit, fisher, folds, heldout, module_shape

# A quadratic of the bound's shape, f(λ) = 1 + ½[2λ² + 6(1−λ)²]: v_F = 2, v_L = 6, λ* = 6/8.
BOUND = {0.0: 4.0, 0.5: 2.0, 1.0: 2.0}


@dataclass(frozen=True)
class Loss:
    loss: float
    n: int


def adapter(b: float, head: float) -> dict[str, torch.Tensor]:
    """One 1x1 LoRA module ``m`` (A = 1, B = b: ΔW = scale·b) and a one-weight head."""
    return {"m.lora_A.weight": torch.ones(1, 1), "m.lora_B.weight": torch.full((1, 1), b),
            "head.weight": torch.full((1,), head)}


# The Fisher metric D: 2 on the module's one weight, ½ on the head's.
METRIC = {"m": torch.full((1, 1), 2.0), "head.weight": torch.full((1,), 0.5)}


class Session:
    """What the estimators read of a ClientSession: split sizes, the adapters, the Fisher, and held-out losses of
    ``λ τ_F + (1−λ) τ_L`` per (local adapter, split); a loss asked of any other pair is a KeyError."""

    def __init__(
        self, *, val: int = 4, train: int = 4, half: int | None = None, fed: dict | None = None,
        losses: dict | None = None,
    ) -> None:
        half = train // 2 if half is None else half
        self.splits = {"val": list(range(val)), "train": list(range(train))}
        self.fed, self._local = fed or adapter(3.0, 3.0), adapter(1.0, 1.0)
        first, second = self.splits["train"][:half], self.splits["train"][half:]
        self._halves = [(adapter(1.0, 0.0), second), (adapter(2.0, 2.0), first)]
        self.settings = SimpleNamespace(scale=2.0)
        self._losses = {(id(self._local), id(self.splits["val"])): losses or BOUND}

    def split(self, name: str) -> list:
        return self.splits[name]

    def local(self) -> dict[str, torch.Tensor]:
        return self._local

    def halves(self) -> list[tuple[dict, list]]:
        return self._halves

    def fisher(self) -> dict[str, torch.Tensor]:
        return METRIC

    def score(self, local: dict, data: list, losses: dict[float, float]) -> None:
        self._losses[(id(local), id(data))] = losses

    def fed_local_eval(self, lam: float, data: list, local: dict | None = None, accuracy: bool = True) -> Loss:
        local = self._local if local is None else local
        return Loss(self._losses[(id(local), id(data))][lam], len(data))


def test_heldout_fits_the_three_validation_losses_in_order():
    """f(0), f(½), f(1) = 4, 2, 2: v_L = 3f(0) − 4f(½) + f(1) = 6, v_F + v_L = 4[f(0) − 2f(½) + f(1)] = 8."""
    est = heldout(Session())
    assert (est.lam, est.v_fed, est.v_local, est.note) == (pytest.approx(0.75), pytest.approx(2.0), pytest.approx(6.0), "")


def test_heldout_without_curvature_takes_the_better_end_and_without_validation_crossfits():
    flat = heldout(Session(losses={0.0: 3.0, 0.5: 2.0, 1.0: 1.0}))  # a line: f(1) < f(0)
    assert (flat.lam, flat.v_fed, flat.v_local) == (1.0, 0.0, 0.0) and "curvature" in flat.note
    session = Session(val=0)
    for local, data in session.halves():
        session.score(local, data, BOUND)
    assert heldout(session).lam == pytest.approx(0.75) and "used crossfit" in heldout(session).note


def test_crossfit_pools_the_losses_weighted_by_examples():
    """Each half scored on the other (1 and 3 examples), and 4 validation examples: the pooled f =
    (1·(6,3,1) + 3·(4,2,3) + 4·(3.5,1.75,1.5))/8 = (4,2,2), so λ = 6/8. The parts' unweighted mean,
    (4.5, 2.25, 11/6), would give λ = 19/22."""
    session = Session(train=4, half=3, losses={0.0: 3.5, 0.5: 1.75, 1.0: 1.5})
    (first, one), (second, three) = session.halves()
    session.score(first, one, {0.0: 6.0, 0.5: 3.0, 1.0: 1.0})
    session.score(second, three, {0.0: 4.0, 0.5: 2.0, 1.0: 3.0})
    est = crossfit(session)
    assert (est.lam, est.v_fed, est.v_local) == (pytest.approx(0.75), pytest.approx(2.0), pytest.approx(6.0))


def test_folds_quarters_the_halves_distance_and_takes_v_fed_by_moments():
    """Scale 2, D = (2 on the module, ½ on the head). Halves: ΔW = 2 and 4, heads 0 and 2:
    ‖τ⁽¹⁾ − τ⁽²⁾‖²_D = 2·2² + ½·2² = 10, v_L = 10/4 = 2.5. Federated ΔW = 6, head 3 against local ΔW = 2, head 1:
    ‖τ_F − τ_L‖²_D = 2·4² + ½·2² = 34, v_F = 34 − 2.5 = 31.5, λ = 2.5/34."""
    est = folds(Session())
    assert (est.lam, est.v_fed, est.v_local) == (pytest.approx(2.5 / 34), pytest.approx(31.5), pytest.approx(2.5))


def test_folds_with_the_adapters_closer_than_their_spread_is_federated_and_needs_two_examples():
    near = folds(Session(fed=adapter(1.5, 1.0)))  # ‖τ_F − τ_L‖²_D = 2·1² = 2 < v_L = 2.5: v_F = ε
    assert near.v_fed == EPS and near.lam == pytest.approx(1.0)
    alone = folds(Session(train=1))
    assert alone.lam == 1.0 and "fewer than two" in alone.note


def test_fisher_is_laplace_over_the_metric_and_moments():
    """n = 4, δ = 1: v_L = Σ F/(nF + δ) = 2/9 + ½/3 = 7/18; v_F = 34 − 7/18 (distance as in the folds test)."""
    est = fisher(Session(train=4), damping=1.0)
    assert est.v_local == pytest.approx(7 / 18) and est.v_fed == pytest.approx(34 - 7 / 18)
    assert est.lam == pytest.approx((7 / 18) / 34)
    assert fisher(Session(train=0)).lam == 1.0


def test_cautious_is_whichever_of_folds_and_heldout_is_more_local():
    session = Session()  # folds 2.5/34 < heldout 0.75
    assert cautious(session) == folds(session)
    session = Session(fed=adapter(1.5, 1.0), losses={0.0: 2.0, 0.5: 2.0, 1.0: 4.0})  # folds 1 > heldout 2/8
    assert cautious(session) == heldout(session) and heldout(session).lam == pytest.approx(0.25)


def test_module_shape_quarters_each_modules_spread():
    """Per module, as in the folds test: spread m 8/4, head 2/4; distance m 2·4² = 32, head ½·2² = 2."""
    spread, dist = module_shape(Session())
    assert spread == pytest.approx({"m": 2.0, "head": 0.5}) and dist == pytest.approx({"m": 32.0, "head": 2.0})
