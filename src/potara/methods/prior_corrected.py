"""Any method with its logits label-prior corrected by the client's training counts (``potara.prior_correction``).

A wrapper, not a method: the chosen model is the method's own (its merge, or its per-instance logits), and only
its logits are shifted (:mod:`potara.personalize.prior`), so every method with a head can be offered the same
correction. λ (for the merging methods) is chosen on the uncorrected model.
"""

from __future__ import annotations

import dataclasses

from ..personalize.prior import prior_corrected
from ..personalize.session import ClientSession
from .base import Choice, Method


def with_prior_correction(method: Method, shares: str | None = None) -> Method:
    """``method`` whose personalized logits are shifted by the log prior ratio of the client's label counts;
    ``shares``: the name of the plain method it corrects (a variant's), whose choice on a client is made once and
    reused (charged to both), instead of made again."""

    def personalize(session: ClientSession) -> Choice:
        choice = session.choice(shares, lambda: method.personalize(session)) if shares else method.personalize(session)
        states, weights = choice.states, choice.weights
        raw = choice.logits or (lambda data: session.logits(states, weights, data))
        note = "; ".join(filter(None, [choice.note, "logits prior-corrected by the training label counts"]))
        return dataclasses.replace(choice, logits=prior_corrected(raw, session.split("train")), note=note)

    return dataclasses.replace(method, personalize=personalize)
