"""Label-prior correction of a classifier's logits by the client's own training label counts.

Logit adjustment (Menon et al., 2021): a head trained under the label distribution ``π_train`` and used under
``π_client`` predicts ``argmax_y [logit_y + log π_client(y) − log π_train(y)]``. ``π_client`` is the client's
training label counts with one added to every class (a class it lacks keeps a finite, low prior). ``π_train`` for
the federated head is the federation's label distribution, which the client cannot know without communication;
we take it **uniform**, so the shift is ``log π_client + log C``. The same shift goes to every method's logits
(``potara.prior_correction``), so the comparison stays fair; a head already trained on the client's own labels
(local, fine-tuned) gets the prior twice, which is what dev decides on (docs/mechanisms.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ..data.encoding import Encoded
from ..training.causal_lm import PromptTargets

Logits = Callable[[Encoded], Tensor]


def log_prior_shift(labels: Tensor, num_classes: int) -> Tensor:
    """``log π_client − log π_global`` per class: add-one smoothed counts of ``labels`` against a uniform prior."""
    counts = torch.bincount(labels.reshape(-1).long().cpu(), minlength=num_classes)[:num_classes].double() + 1.0
    return (torch.log(counts / counts.sum()) + math.log(num_classes)).float()


def prior_corrected(logits: Logits, train: Encoded) -> Logits:
    """``logits`` shifted by the log-prior ratio of ``train``'s label counts (classification data only)."""
    if isinstance(train, PromptTargets):
        raise ValueError(
            "potara.prior_correction=counts shifts a classifier head's logits; causal-LM data has no head: "
            "set potara.prior_correction=none"
        )
    labels = train.tensors["labels"]

    def corrected(data: Encoded) -> Tensor:
        raw = logits(data)
        return raw + log_prior_shift(labels, raw.shape[-1]).to(raw.device, raw.dtype)

    return corrected
