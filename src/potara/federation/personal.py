"""What a client trains for itself in the rounds of a federation with personal state (Ditto's ``v_k``, APFL's
``v_k`` and ``α_k``), after its update of the global adapter; none of it travels."""

from __future__ import annotations

import torch
from peft import PeftModel

from ..data.encoding import Encoded
from ..merge.taskvec import AdapterState, extra_keys, merge, pad_rank
from ..models.adapters import get_state, set_state
from ..training.loop import Budget, Proximal, lr_groups, state_as_params, train, train_through_merge

PERSONAL = "personal/"  # APFL: the prefix of v_k's tensors in a client's kept state (beside the global ones)
ALPHA_LOGIT = "apfl/alpha_logit"  # APFL: the key of s_k, α_k = sigmoid(s_k)


def ditto_step(
    model: PeftModel, personal: AdapterState, anchor: AdapterState, data: Encoded, budget: Budget, seed: int,
    mu: float,
) -> AdapterState:
    """Ditto's personal update (Algorithm 1): ``personal`` trained for ``budget`` on the client's loss plus
    ``μ/2 ‖v − anchor‖²``, ``anchor`` the global adapter the client has just received; the batches of the
    client's global step."""
    set_state(model, personal)
    train(model, data, budget, torch.Generator().manual_seed(seed), Proximal(state_as_params(anchor, model), mu))
    return get_state(model)


def apfl_start(initial: AdapterState) -> AdapterState:
    """APFL's personal state before a client's first round: ``v = `` the initial adapter, ``α = ½`` (``s = 0``)."""
    return pack_apfl(initial, torch.zeros(1))


def pack_apfl(personal: AdapterState, logit: torch.Tensor) -> AdapterState:
    """``v_k`` (prefixed) and ``s_k`` as one state, kept and checkpointed like any client's tensors."""
    return {**{PERSONAL + k: t for k, t in personal.items()}, ALPHA_LOGIT: logit.reshape(1)}


def unpack_apfl(state: AdapterState) -> tuple[AdapterState, AdapterState, float]:
    """A client's model state ``{w, v_k, s_k}`` as ``(w, v_k, α_k)``."""
    glob = {k: t for k, t in state.items() if not k.startswith(PERSONAL) and k != ALPHA_LOGIT}
    personal = {k[len(PERSONAL):]: t for k, t in state.items() if k.startswith(PERSONAL)}
    return glob, personal, float(torch.sigmoid(state[ALPHA_LOGIT]).reshape(()))


def apfl_step(
    model: PeftModel, kept: AdapterState, local_w: AdapterState, data: Encoded, budget: Budget, seed: int,
    alpha_lr: float, scale: float, merge_rank: int,
) -> AdapterState:
    """APFL's personal update (Deng et al. 2020, Algorithm 1): ``v`` and ``α = sigmoid(s)`` trained jointly for
    ``budget`` (the batches of the client's global step; ``s`` by AdamW at ``alpha_lr``) on the loss of the
    mixture ``α v + (1 − α) w``, an exact merge in task-vector space, ``w`` the client's global adapter after its
    local step (frozen: APFL's ``w`` is trained on its own loss, not the mixture's)."""
    _, start, _ = unpack_apfl(kept)
    personal = {k: t.clone().requires_grad_(True) for k, t in start.items()}
    logit = kept[ALPHA_LOGIT].clone().reshape(()).requires_grad_(True)

    def mixture() -> AdapterState:
        alpha = torch.sigmoid(logit)
        return pad_rank(merge([personal, local_w], [alpha, 1 - alpha], [scale, scale]), merge_rank)

    heads = set(extra_keys(local_w))
    groups = [*lr_groups(personal, budget, is_head=heads.__contains__), {"params": [logit], "lr": alpha_lr}]
    train_through_merge(model, data, budget, torch.Generator().manual_seed(seed), groups, mixture)
    return pack_apfl({k: t.detach() for k, t in personal.items()}, logit.detach())
