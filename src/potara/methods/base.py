"""What a method is: a rule that turns one client's session into a personalized model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..data.encoding import Encoded
from ..federation.recipes import FEDIT, FedIT
from ..merge.taskvec import AdapterState, Weights
from ..personalize.session import ClientSession


@dataclass
class Choice:
    """A personalized model as an exact merge of adapters, and the λ to report (None if not a merge)."""

    states: list[AdapterState]
    weights: list[Weights]
    lam: float | dict[str, float] | None = None
    note: str = ""
    logits: Callable[[Encoded], Tensor] | None = None  # a per-instance model: its logits on a split (else the merge)


@dataclass(frozen=True)
class Method:
    name: str
    personalize: Callable[[ClientSession], Choice]
    federated: bool = True  # its clients take part in the federation (bytes and rounds are its federation's)
    estimates_lambda: bool = False  # it chooses λ: its cost of choosing is reported apart (``lambda_cost``)
    exports: bool = False  # its personalized adapters are the ones ``potara run --export`` writes
    federation: FedIT = FEDIT  # the federation it personalizes from (a recipe: what is trained, sent, kept)
    local_init: str | None = None  # its own ``local.init`` (a variant's); None: the run's
    merge_space: str | None = None  # its own merge space (pinned, or a variant's ``potara.merge_space``); None: the run's
    needs_spread: bool = False  # it reads the last round's update spread (it travels with the global adapter)
