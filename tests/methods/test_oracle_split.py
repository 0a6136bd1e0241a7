"""``oracle_split``: λ picked on one half of the test split, scored on the other, both ways."""

from __future__ import annotations

import torch

from potara import config
from potara.data.encoding import Encoded
from potara.methods import oracle
from potara.training.loop import score

SEED = 3


class TwoHalvesSession:
    """A client whose merge at λ = 0 classifies one half of its test split right and λ = 1 the other half."""

    fed, name = {"fed": torch.zeros(1)}, "c"

    def __init__(self, n: int) -> None:
        self.test = Encoded({"input_ids": torch.arange(n), "labels": torch.zeros(n, dtype=torch.long)})
        first, _ = oracle.halves(n, self.generator("oracle_split", "halves"))
        self.right_at_zero = set(first.tolist())  # half A: right at λ = 0, wrong at λ = 1; half B the reverse

    def generator(self, init: str, part: str = "all") -> torch.Generator:
        return torch.Generator().manual_seed(SEED)

    def split(self, name: str) -> Encoded:
        return self.test

    def local(self) -> dict:
        return {"local": torch.zeros(1)}

    def logits(self, states, weights, data: Encoded) -> torch.Tensor:
        lam = weights[0]
        right = torch.tensor([(i in self.right_at_zero) == (lam == 0.0) for i in data.tensors["input_ids"].tolist()])
        return torch.stack([right.float(), (~right).float()], 1)  # class 0 (the label) when right

    def fed_local_eval(self, lam: float, data: Encoded):
        return score(self.logits(None, [lam, 1 - lam], data), data.tensors["labels"])


def test_each_half_is_scored_by_the_lambda_picked_on_the_other():
    cfg = config.load(None, ["potara.grid=[0.0,1.0]"])
    session = TwoHalvesSession(10)
    choice = oracle.build_split(cfg).personalize(session)
    assert choice.lam == 0.5  # λ = 0 picked on half A, λ = 1 on half B
    assert score(choice.logits(session.test), session.test.tensors["labels"]).acc == 0.0
    best_on_all = max(session.fed_local_eval(lam, session.test).acc for lam in (0.0, 1.0))
    assert best_on_all == 0.5  # what oracle_test would report: picked and scored on the same examples


def test_the_halves_are_disjoint_seeded_and_cover_the_split():
    first, second = oracle.halves(9, torch.Generator().manual_seed(1))
    again, _ = oracle.halves(9, torch.Generator().manual_seed(1))
    assert sorted(torch.cat([first, second]).tolist()) == list(range(9)) and len(first) == 4
    assert torch.equal(first, again)
